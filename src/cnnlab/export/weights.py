"""Weights alone as safetensors, with what is needed to rebuild and use the network.

A ``.safetensors`` file holds the state dict (no code, nothing to unpickle) and string
metadata: ``architecture`` (a name from ``cnnlab.models.MODELS`` or a spec string),
``input_shape`` (H, W, C), ``num_classes``, ``classes``, the normalisation (``mean``,
``std``) and ``preprocess`` ("run": scale to [0, 1] and normalise as in training;
"imagenet": the pretrained nets' resize, crop and normalisation). Values other than plain
strings are JSON. ``open_model`` reads it back as an object that ``cnnlab predict`` and
``cnnlab activations`` use like a run directory.

A file is data, never code: its ``architecture`` may only name one of cnnlab's registered
networks or a spec string (both built by cnnlab's own code). A file naming anything else, a
``package.module:function`` above all, is refused before anything is imported; the builder
of your own network comes from the command line (``--model my_pkg:make_net``) or the
``model=`` argument, never from inside a file. Malformed metadata is refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.extras import require
from cnnlab.files import write_bytes
from cnnlab.runs.directory import SavedModelInfo

FORMAT_TAG = "cnnlab-weights-1"
_JSON_KEYS = ("input_shape", "num_classes", "classes", "mean", "std")


def write_safetensors(model: nn.Module, path: Path, meta: dict) -> None:
    """Write ``model``'s state dict with ``meta`` (see the module docstring) to ``path``."""
    st = require("safetensors.torch", extra="export", package="safetensors", purpose="safetensors export")
    # safetensors stores plain row-major buffers: a channels_last weight must be copied out.
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    strings = {"format": FORMAT_TAG, **{k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}}
    data = st.save(tensors, metadata=strings)
    write_bytes(path, data)


def read_safetensors(path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, metadata with its JSON values decoded) of a .safetensors file."""
    st = require("safetensors", extra="export", purpose="reading .safetensors weights")
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"weights file {str(path)!r} not found; pass an existing .safetensors file")
    try:
        with st.safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    except Exception as exc:  # safetensors raises its own SafetensorError for a damaged header
        raise CnnlabError(f"cannot read {str(path)!r} as safetensors ({str(exc).splitlines()[0][:150]}); "
                          "the file is truncated or not a .safetensors file") from exc
    meta = dict(raw)
    for key in _JSON_KEYS:
        if key in meta:
            try:
                meta[key] = json.loads(meta[key])
            except (ValueError, RecursionError):
                raise CnnlabError(f"{str(path)!r}: metadata {key!r} is not valid JSON ({str(meta[key])[:40]!r}); "
                                  "the file was not written by `cnnlab export --format safetensors`") from None
    return state, meta


def _checked_meta(path: Path, meta: dict, model: str | None) -> dict:
    """``meta`` with its values checked: a file names cnnlab's own architectures only (see the module doc)."""
    from cnnlab.models import MODELS
    from cnnlab.models.check import as_input_shape, as_num_classes

    arch = meta["architecture"]
    if model is None and (not isinstance(arch, str) or (":" in arch and arch.strip() not in MODELS)):
        raise CnnlabError(f"{path} names the architecture {str(arch)[:80]!r}, not one of cnnlab's networks or a spec "
                          "string; a weights file never names code to import: if it is your own network, give "
                          "its builder on the command line, --model package.module:function")
    where = f"{path}: metadata"
    try:
        shape, n = as_input_shape(meta["input_shape"]), as_num_classes(meta["num_classes"])
    except CnnlabError as exc:
        raise CnnlabError(f"{where} {exc}") from None
    classes = meta.get("classes")
    if classes is not None and (not isinstance(classes, list) or len(classes) != n
                                or not all(isinstance(c, str) for c in classes)):
        raise CnnlabError(f"{where} 'classes' is not a list of {n} names (num_classes); the file is damaged")
    for key in ("mean", "std"):
        v = meta.get(key)
        if v is not None and (not isinstance(v, list) or len(v) not in (1, shape[2]) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in v)):
            raise CnnlabError(f"{where} {key!r} is not a list of 1 or {shape[2]} finite numbers; the file is damaged")
    if meta.get("std") and any(x == 0 for x in meta["std"]):
        raise CnnlabError(f"{where} 'std' holds a zero; the file is damaged")
    return {**meta, "input_shape": list(shape), "num_classes": n}


class ExportedWeights(SavedModelInfo):
    """A .safetensors file written by ``cnnlab export``, used like a run directory
    (``classes``, ``input_shape``, ``config``, ``build_model()``, ``preprocess()``)."""

    def __init__(self, path, *, model: str | None = None) -> None:
        """``model``: the network to put the weights into (a zoo name, a spec string or your own
        ``package.module:function``) instead of the file's ``architecture``."""
        self.path = Path(path)
        self.state, meta = read_safetensors(self.path)
        missing = [k for k in ("architecture", "input_shape", "num_classes") if k not in meta]
        if missing:
            raise CnnlabError(f"{self.path} has no {', '.join(missing)} in its metadata; it was not written by "
                              "`cnnlab export --format safetensors`, so cnnlab cannot rebuild its network")
        meta = _checked_meta(self.path, meta, model)
        self.config = {"data": meta.get("data"), **meta, "model": model or meta["architecture"]}

    def build_model(self, weights: str = "best") -> nn.Module:
        """The network in eval mode with these weights (``weights`` is accepted for Run's signature)."""
        from cnnlab.models import build

        with torch.device("meta"):  # no random init: the file's tensors are assigned as they are
            model = build(self.config["model"], input_shape=self.input_shape, num_classes=self.config["num_classes"])
        try:
            model.load_state_dict(self.state, assign=True)
        except RuntimeError as exc:
            reason = " ".join(str(exc).split())  # torch's message spans lines: one line here
            raise CnnlabError(f"{self.path} does not fit {self.config['model']}: {reason[:300]}") from exc
        return model.eval()

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, C) -> the float (N, C, H, W) tensor the network expects."""
        from cnnlab.data.transforms import to_tensor

        if tuple(images.shape[1:]) != self.input_shape:
            raise CnnlabError(f"images of shape {tuple(images.shape[1:])} do not match the network's input "
                              f"{self.input_shape} (H, W, C); resize/convert them first")
        return to_tensor(images, mean=self.config.get("mean"), std=self.config.get("std"))


def open_model(path, *, model: str | None = None):
    """A run directory (``cnnlab.runs.directory.Run``) or a .safetensors file (``ExportedWeights``; ``model``
    is its network's builder when the file names none of cnnlab's, see ``ExportedWeights``)."""
    path = Path(path)
    if path.suffix == ".safetensors" or path.is_file():
        return ExportedWeights(path, model=model)
    if model is not None:
        raise CnnlabError(f"--model goes with a .safetensors file; the run directory {path} records its own network")
    from cnnlab.runs.directory import load_run

    return load_run(path)
