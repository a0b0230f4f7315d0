"""The model zoo: ``MODELS`` (name -> builder) and ``build`` (a name or a spec string).

Every builder is ``fn(input_shape=(H, W, C), num_classes=...) -> nn.Module``; its keyword
defaults are the model's native input and class count. Models take NCHW float input and
return logits (N, num_classes): softmax belongs to the loss and to prediction.
"""

from __future__ import annotations

import inspect
import os
import re
import warnings

import torch
from torch import nn

from cnnlab.cpu import available_memory
from cnnlab.errors import CnnlabError
from cnnlab.models.check import as_input_shape, as_num_classes, probe_output_shape
from cnnlab.models.init import INITS, check_init, initialize
from cnnlab.models.mobilenet import mobilenet_v3_small
from cnnlab.models.resnet import resnet18
from cnnlab.models.seed import SEED_MODELS
from cnnlab.models.spec import DEFAULT_INPUT_SHAPE, build_spec, parse_spec
from cnnlab.models.speedrun import FAST_MODELS
from cnnlab.models.squeezenet import squeezenet1_1
from cnnlab.models.vgg import vgg16

MODELS = {
    **SEED_MODELS,
    "vgg16": vgg16,
    "squeezenet1_1": squeezenet1_1,
    "resnet18": resnet18,
    "mobilenet_v3_small": mobilenet_v3_small,
    **FAST_MODELS,
}

__all__ = ["INITS", "MODELS", "build", "build_spec", "count_params", "default_input_shape", "describe", "parse_spec"]


def _looks_like_spec(text: str) -> bool:
    # A comma, or a first token that starts like a spec layer (conv32, dense10, ...).
    return "," in text or re.match(r"(conv|dense|maxpool|avgpool|dropout)\d|flatten|gap", text.lower()) is not None


def _unknown(name) -> CnnlabError:
    return CnnlabError(f"unknown model {name!r}; known models: {', '.join(MODELS)}; "
                       "or give a spec string like 'conv32k3-relu,maxpool2,flatten,dense10'")


def default_input_shape(name_or_spec: str) -> tuple[int, int, int]:
    """The (H, W, C) a model is built for when no input_shape is given ((28, 28, 1) for specs, and for
    your own ``module:function`` unless its ``input_shape`` parameter has a default)."""
    if name_or_spec in MODELS:
        return tuple(inspect.signature(MODELS[name_or_spec]).parameters["input_shape"].default)
    if isinstance(name_or_spec, str) and _looks_like_spec(name_or_spec):
        return DEFAULT_INPUT_SHAPE
    if isinstance(name_or_spec, str) and ":" in name_or_spec:
        param = inspect.signature(_builder(name_or_spec)).parameters.get("input_shape")
        default = None if param is None else param.default
        return tuple(default) if isinstance(default, (tuple, list)) and len(default) == 3 else DEFAULT_INPUT_SHAPE
    raise _unknown(name_or_spec)


def describe(name: str) -> str:
    """One-line description of a named model (the first line of its builder's docstring)."""
    if name not in MODELS:
        raise _unknown(name)
    return ((MODELS[name].__doc__ or "").strip().splitlines() or [""])[0]


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (each shared tensor counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def build_from_path(path: str, *, input_shape=None, num_classes: int | None = None) -> nn.Module:
    """Your own network: ``"package.module:function"`` imported and called, the way a run
    directory records how to rebuild a model that is not in the zoo.

    The function is given ``input_shape`` and ``num_classes`` as keywords when its signature
    takes them (and they are known), and must return an ``nn.Module``.
    """
    fn = _builder(path)
    params = inspect.signature(fn).parameters
    kwargs = {k: v for k, v in (("input_shape", input_shape), ("num_classes", num_classes))
              if v is not None and k in params}
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise CnnlabError(f"model builder {path!r} returned a {type(model).__name__}, not an nn.Module")
    return model


def _builder(path: str):
    """The function ``"package.module:function"`` names. The module is looked for on sys.path, then in the
    current folder, as ``python -m`` and ``python script.py`` find a ``mynets.py`` beside you."""
    import importlib
    import sys

    module, _, attr = path.partition(":")
    try:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            here = os.getcwd()
            if exc.name != module.split(".")[0] or here in sys.path or "" in sys.path:
                raise
            sys.path.insert(0, here)
            try:
                mod = importlib.import_module(module)
            finally:
                sys.path.remove(here)
        fn = getattr(mod, attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise CnnlabError(f"cannot import model builder {path!r} ({exc}); give an importable "
                          "'package.module:function' (in this folder, or on sys.path / PYTHONPATH) returning an "
                          "nn.Module") from None
    if not callable(fn):
        raise CnnlabError(f"model builder {path!r} is a {type(fn).__name__}, not a function returning an nn.Module")
    return fn


def build(name_or_spec: str, *, input_shape=None, num_classes: int | None = None, init: str | None = None) -> nn.Module:
    """Build a model by name (see ``MODELS``), from a spec string (see ``cnnlab.models.spec``),
    or with your own ``"package.module:function"`` (see ``build_from_path``).

    ``input_shape`` is (H, W, C) in Keras order and ``num_classes`` the number of logits; left
    out, each model's defaults apply. The model is checked with one zero image: an input it
    cannot take raises a CnnlabError naming the layer. Built on the current default device
    (so ``with torch.device("meta"): build("vgg16")`` gives a weightless model at once, e.g.
    to count parameters or summarise it).

    ``init`` re-initialises the convolution and dense layers: ``"keras"`` (Glorot-uniform
    kernels, zero biases) or ``"torch"`` (PyTorch's layer defaults). Left out, each model
    keeps its own: Keras' for the seed models and spec strings (the tutorials are Keras
    models), the published schemes for vgg16, squeezenet1_1 and the fast nets.
    """
    if init is not None:
        check_init(init)
    model = _build(name_or_spec, input_shape, num_classes)
    return model if init is None else initialize(model, init=init)


def _check_memory(spec: str, input_shape, num_classes) -> None:
    """Refuse a spec whose weights alone would not fit in memory, before allocating them.

    ``dense100000000`` after a wide flatten asks for terabytes; the allocation would take
    the machine down (or die with a bare RuntimeError). The estimate comes from building
    the model on the meta device, which allocates nothing.
    """
    if torch.get_default_device().type == "meta":
        return
    with torch.device("meta"):
        probe = build_spec(spec, input_shape=input_shape, num_classes=num_classes)
    need = sum(p.numel() * p.element_size() for p in probe.parameters())
    have = available_memory()
    if need > have:
        raise CnnlabError(f"spec {spec!r} has {count_params(probe):,} parameters: about {need / 2**30:,.1f} GiB "
                          f"for the weights alone (4x that to train), more than the {have / 2**30:,.1f} GiB "
                          "this machine has available; use fewer or smaller layers")


def _build(name_or_spec, input_shape, num_classes) -> nn.Module:
    if not isinstance(name_or_spec, str):
        raise CnnlabError(f"model {name_or_spec!r} is not a name or a spec string; "
                          f"use one of {', '.join(MODELS)}")
    name = name_or_spec.strip()
    if name not in MODELS and ":" in name and not _looks_like_spec(name):
        return build_from_path(name, input_shape=input_shape, num_classes=num_classes)
    if name not in MODELS:
        if not _looks_like_spec(name):
            raise _unknown(name_or_spec)
        _check_memory(name, input_shape, num_classes)
        return build_spec(name, input_shape=input_shape, num_classes=num_classes)
    kwargs = {}
    if input_shape is not None:
        kwargs["input_shape"] = as_input_shape(input_shape)
    if num_classes is not None:
        kwargs["num_classes"] = as_num_classes(num_classes)
    shape = kwargs.get("input_shape", default_input_shape(name))
    what = f"{name} cannot take input_shape {shape}"
    try:
        # A too-small input can make a zero-sized layer, which torch warns about; the probe
        # below then names the layer that really breaks.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            model = MODELS[name](**kwargs)
    except RuntimeError as exc:  # e.g. a negative layer size computed from a tiny input
        raise CnnlabError(f"{what}: {str(exc).splitlines()[0]}; use a larger input_shape") from exc
    # One zero image through the real model (on the meta device when built there): cheap for
    # all but VGG-16 (~15 G mult-adds at 224). The meta device would be free of arithmetic
    # everywhere, but its first use imports torch's compiler (~2 s), a tax on every build.
    probe_output_shape(model, shape, what=what, fix=f"use a larger input_shape (default {default_input_shape(name)})")
    return model
