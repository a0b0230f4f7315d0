"""cnnlab: learn, train and look inside convolutional neural networks.

The curated public API. Names are imported lazily (PEP 562), so ``import cnnlab`` and the
NumPy-only parts (``cnnlab.scratch.conv``, ``cnnlab.data``) do not pay for importing torch.

    >>> import cnnlab
    >>> ds = cnnlab.load_dataset("mnist", train_size=20_000)
    >>> model = cnnlab.build_model("intro-cnn")
    >>> print(cnnlab.summarize(model, (28, 28, 1)))
    >>> history = cnnlab.fit(model, ds.train.images, ds.train.labels, config=cnnlab.TrainConfig(epochs=6))
"""

from __future__ import annotations

import importlib
import logging

from cnnlab import _moved


def _version() -> str:
    # The one version number is pyproject.toml's; an installed cnnlab (editable included)
    # carries it in its metadata. A bare source tree on sys.path has none to read.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cnnlab")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _version()

# Library code reports through the "cnnlab" logger; silent unless the application configures
# logging (the standard library's advice for libraries).
logging.getLogger("cnnlab").addHandler(logging.NullHandler())

# public name -> (module, attribute)
_API = {
    "CnnlabError": ("cnnlab.errors", "CnnlabError"),
    # from scratch (NumPy)
    "correlate2d": ("cnnlab.scratch.conv", "correlate2d"),
    "convolve2d": ("cnnlab.scratch.conv", "convolve2d"),
    "max_pool2d": ("cnnlab.scratch.conv", "max_pool2d"),
    "avg_pool2d": ("cnnlab.scratch.conv", "avg_pool2d"),
    "output_size": ("cnnlab.scratch.conv", "output_size"),
    "get_kernel": ("cnnlab.scratch.kernels", "get_kernel"),
    "random_kernels": ("cnnlab.scratch.kernels", "random_kernels"),
    "load_image": ("cnnlab.scratch.images", "load_image"),
    # data and models
    "load_dataset": ("cnnlab.data", "load"),
    "build_model": ("cnnlab.models", "build"),
    "MODELS": ("cnnlab.models", "MODELS"),
    "summarize": ("cnnlab.models.summary", "summarize"),
    # training and runs
    "fit": ("cnnlab.export.tensorboard", "fit"),  # train.loop.fit, with tensorboard=DIR attaching its callback
    "TrainConfig": ("cnnlab.train.config", "TrainConfig"),
    "Hyperparams": ("cnnlab.train.config", "Hyperparams"),
    "Runtime": ("cnnlab.train.config", "Runtime"),
    "with_overrides": ("cnnlab.train.config", "with_overrides"),
    "Augment": ("cnnlab.data.transforms", "Augment"),
    "RunConfig": ("cnnlab.train.config", "RunConfig"),
    "train_run": ("cnnlab.runs.experiment", "train_run"),
    "resume_run": ("cnnlab.runs.experiment", "resume_run"),
    "RECIPES": ("cnnlab.train.config", "RECIPES"),
    "load_run": ("cnnlab.runs.directory", "load_run"),
    # insight
    "evaluate_run": ("cnnlab.insight.predictions", "evaluate_run"),
    "activations": ("cnnlab.insight.internals", "activations"),
    "filters": ("cnnlab.insight.internals", "filters"),
    "visualize_channels": ("cnnlab.insight.featurevis", "visualize_channels"),
    "visualize_class": ("cnnlab.insight.featurevis", "visualize_class"),
    "top_examples": ("cnnlab.insight.featurevis", "top_examples"),
    "embed": ("cnnlab.insight.embedding", "embed"),
    "run_embedding": ("cnnlab.insight.embedding", "run_embedding"),
    "sprite_sheet": ("cnnlab.insight.embedding", "sprite_sheet"),
    "write_report": ("cnnlab.reporting", "report_run"),  # a run directory -> report.html
    "report_run": ("cnnlab.reporting", "report_run"),
    "collect_results": ("cnnlab.insight.results", "collect_results"),
    # attribution: why the network decided
    "gradcam": ("cnnlab.insight.attribution", "gradcam"),
    "gradcam_pp": ("cnnlab.insight.attribution", "gradcam_pp"),
    "layer_sweep": ("cnnlab.insight.attribution", "layer_sweep"),
    "saliency": ("cnnlab.insight.attribution", "saliency"),
    "smoothgrad": ("cnnlab.insight.attribution", "smoothgrad"),
    "integrated_gradients": ("cnnlab.insight.attribution", "integrated_gradients"),
    "occlusion": ("cnnlab.insight.attribution", "occlusion"),
    "explain_photo": ("cnnlab.insight.photo", "explain_photo"),
    "overlay": ("cnnlab.report.overlay", "overlay"),
    "classify": ("cnnlab.models.pretrained", "classify"),
    "load_pretrained": ("cnnlab.models.pretrained", "load_pretrained"),
    # export (ONNX, .pt2, TorchScript, safetensors) and TensorBoard logs
    "export_run": ("cnnlab.export", "export_run"),
    "export_pretrained": ("cnnlab.export", "export_pretrained"),
    "TensorBoardLog": ("cnnlab.export.tensorboard", "TensorBoardLog"),
}

__all__ = sorted(_API)

_moved.install()  # old flat import paths (cnnlab.conv, cnnlab.plots, ...) still work, with a warning


def __getattr__(name: str):
    if name in _API:
        module, attr = _API[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
