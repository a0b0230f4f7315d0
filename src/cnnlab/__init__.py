"""cnnlab: learn, train and look inside convolutional neural networks.

The curated public API. Names are imported lazily (PEP 562), so ``import cnnlab`` and the
NumPy-only parts (``cnnlab.conv``, ``cnnlab.data``) do not pay for importing torch.

    >>> import cnnlab
    >>> ds = cnnlab.load_dataset("mnist", train_size=20_000)
    >>> model = cnnlab.build_model("intro-cnn")
    >>> print(cnnlab.summarize(model, (28, 28, 1)))
    >>> history = cnnlab.fit(model, ds.train.images, ds.train.labels, config=cnnlab.TrainConfig(epochs=6))
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module, attribute)
_API = {
    "CnnlabError": ("cnnlab.errors", "CnnlabError"),
    # from scratch (NumPy)
    "correlate2d": ("cnnlab.conv", "correlate2d"),
    "convolve2d": ("cnnlab.conv", "convolve2d"),
    "max_pool2d": ("cnnlab.conv", "max_pool2d"),
    "avg_pool2d": ("cnnlab.conv", "avg_pool2d"),
    "output_size": ("cnnlab.conv", "output_size"),
    "get_kernel": ("cnnlab.kernels", "get_kernel"),
    "random_kernels": ("cnnlab.kernels", "random_kernels"),
    "load_image": ("cnnlab.images", "load_image"),
    # data and models
    "load_dataset": ("cnnlab.data", "load"),
    "build_model": ("cnnlab.models", "build"),
    "MODELS": ("cnnlab.models", "MODELS"),
    "summarize": ("cnnlab.summary", "summarize"),
    # training and runs
    "fit": ("cnnlab.train", "fit"),
    "TrainConfig": ("cnnlab.train", "TrainConfig"),
    "Augment": ("cnnlab.data.transforms", "Augment"),
    "RunConfig": ("cnnlab.experiment", "RunConfig"),
    "train_run": ("cnnlab.experiment", "train_run"),
    "resume_run": ("cnnlab.experiment", "resume_run"),
    "RECIPES": ("cnnlab.recipes", "RECIPES"),
    "load_run": ("cnnlab.runs", "load_run"),
    # insight
    "evaluate_run": ("cnnlab.evaluate", "evaluate_run"),
    "activations": ("cnnlab.inspect", "activations"),
    "filters": ("cnnlab.inspect", "filters"),
    "write_report": ("cnnlab.report", "write_report"),
    "classify": ("cnnlab.pretrained", "classify"),
    "load_pretrained": ("cnnlab.pretrained", "load_pretrained"),
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        module, attr = _API[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
