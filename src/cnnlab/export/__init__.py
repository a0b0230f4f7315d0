"""Take a trained network out of cnnlab: ONNX, torch.export (.pt2), TorchScript, safetensors.

    >>> from cnnlab.export import export_run, export_pretrained
    >>> export_run("runs/mnist-mnist-cnn", format="onnx")            # runs/.../model.onnx
    >>> export_pretrained("squeezenet1_1", format="safetensors", out="squeezenet.safetensors")

Every file carries the network's architecture name, input shape (H, W, C), class names and
normalisation (ONNX: ``metadata_props`` as ``cnnlab.*`` JSON; .pt2 and TorchScript: an extra
file ``cnnlab.json``; safetensors: its metadata), and is written atomically.
The graph formats take images as float (N, C, H, W), normalised as in training, with any N.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from cnnlab.errors import CnnlabError

FORMATS = ("onnx", "pt2", "torchscript", "safetensors")
SUFFIXES = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".torchscript.pt", "safetensors": ".safetensors"}

__all__ = ["FORMATS", "export_model", "export_pretrained", "export_run"]


def export_model(model: nn.Module, out, *, format: str, input_shape, meta: dict) -> Path:
    """Write ``model`` to ``out`` as ``format``; ``input_shape`` is (H, W, C); returns the path.

    ``meta`` (JSON-able values) goes into the file; it should hold at least ``architecture``
    and ``classes`` (see ``cnnlab.export.weights``). A layer that cannot be exported raises
    a one-line CnnlabError naming it.
    """
    if format not in FORMATS:
        raise CnnlabError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    from cnnlab.models.check import as_input_shape

    input_shape = as_input_shape(input_shape)
    out = Path(out)
    if out.is_dir():
        raise CnnlabError(f"output {out} is a directory; give a file name such as {out / ('model' + SUFFIXES[format])}")
    if not out.parent.is_dir():
        raise CnnlabError(f"folder {out.parent} does not exist; create it first or choose another output path")
    meta = {**meta, "input_shape": list(input_shape)}
    if format == "safetensors":
        from cnnlab.export.weights import write_safetensors

        write_safetensors(model, out, meta)
    else:
        from cnnlab.export.graph import write_graph

        write_graph(model, format=format, input_shape=input_shape, path=out, meta=meta)
    return out


def run_meta(run) -> dict:
    """The metadata of a run directory's network (see ``cnnlab.export.weights``)."""
    c = run.config
    return {"architecture": c["model"], "num_classes": c["num_classes"], "classes": run.classes,
            "mean": c.get("mean"), "std": c.get("std"), "data": c.get("data"), "preprocess": "run"}


def export_run(run_dir, *, format: str, out=None, weights: str = "best") -> Path:
    """Export a run directory's trained network (``best.pt``, else ``last.pt``).

    ``out`` defaults to ``RUN_DIR/model.onnx`` (``.pt2``, ``.torchscript.pt``, ``.safetensors``).
    """
    from cnnlab.runs.directory import load_run

    run = load_run(run_dir)
    if format not in FORMATS:
        raise CnnlabError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    out = Path(out) if out is not None else run.path / f"model{SUFFIXES[format]}"
    return export_model(run.build_model(weights=weights), out, format=format, input_shape=run.input_shape,
                        meta=run_meta(run))


def export_pretrained(name: str, *, format: str, out=None, weights=None, progress: bool = True) -> Path:
    """Export a pretrained ImageNet network (``squeezenet1_1``, ``vgg16``; see ``load_pretrained``).

    ``out`` defaults to ``NAME.onnx`` (etc.) in the current folder. Inputs are 224x224 RGB
    images preprocessed as ``cnnlab.models.pretrained.preprocess`` does (style "torchvision").
    """
    from cnnlab.models.pretrained import IMAGENET_MEAN, IMAGENET_STD, imagenet_classes, load_pretrained

    if format not in FORMATS:
        raise CnnlabError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    model = load_pretrained(name, weights=weights, progress=progress)
    out = Path(out) if out is not None else Path(f"{name}{SUFFIXES[format]}")
    meta = {"architecture": name, "num_classes": 1000, "classes": imagenet_classes(), "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD), "data": "imagenet", "preprocess": "imagenet"}
    return export_model(model, out, format=format, input_shape=(224, 224, 3), meta=meta)
