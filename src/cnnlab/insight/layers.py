"""Conv-layer discovery and the guards every explanation runs under.

Explaining must leave a model exactly as it was: parameters, ``requires_grad``, each
module's train/eval flag and its hooks, also when a call fails halfway. And the browser
lab calls these functions from several threads on one shared model, so nothing here keeps
global state: hooks record only the forward pass of the thread that registered them, and
grad mode is thread-local in PyTorch.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.insight.internals import conv_layers, layer_type

__all__ = ["check_cam_layer", "conv_layers", "explaining", "captured_outputs", "forward_logits"]


def _conv_list(model: nn.Module) -> str:
    names = conv_layers(model)
    shown = ", ".join(names[:40]) + (f", ... ({len(names) - 40} more)" if len(names) > 40 else "")
    return shown or "(none)"


def require_convs(model: nn.Module, method: str) -> list[str]:
    """The model's Conv2d layer names; CnnlabError when it has none."""
    names = conv_layers(model)
    if not names:
        raise CnnlabError(f"{type(model).__name__} has no Conv2d layer, so {method} has no feature map to "
                          "weigh; use saliency, smoothgrad, ig or occlusion instead")
    return names


def check_cam_layer(model: nn.Module, layer) -> str:
    """The ``named_modules()`` name of ``layer``: a name or a submodule object (as Captum
    takes it). Any submodule whose output is (N, C, H, W) feature maps will do: a Conv2d,
    the activation after it, a block (a Fire module, a residual block, a ``features``
    stage); the output's shape is checked when the layer runs. Otherwise a CnnlabError
    listing the conv layers."""
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer and name:
                return name
        raise CnnlabError(f"the {layer_type(layer)} passed as layer is not a submodule of {type(model).__name__}; "
                          f"pass one of its modules, or a name: 'auto' or one of: {_conv_list(model)}")
    if not isinstance(layer, str):
        raise CnnlabError(f"layer {layer!r} is not a layer name or module; use 'auto' or one of: {_conv_list(model)}")
    modules = dict(model.named_modules())
    if layer not in modules or not layer:
        raise CnnlabError(f"no layer {layer!r} in {type(model).__name__}; use 'auto' or one of the conv "
                          f"layers: {_conv_list(model)}")
    return layer


@contextmanager
def explaining(model: nn.Module) -> Iterator[None]:
    """Eval mode and autograd on for the block; every module's train flag restored after.

    Only modules that are training are switched (a shared model already in eval mode is
    never written to, which keeps concurrent calls from different threads apart). Grad is
    enabled even when the caller runs under ``torch.no_grad`` or ``inference_mode``.
    """
    training = [m for m in model.modules() if m.training]
    try:
        for m in training:
            m.training = False
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for m in training:
            m.training = True


@contextmanager
def captured_outputs(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks on the named modules; yields a dict that fills, in execution order,
    with each module's first output of this thread's forward pass (clear it between passes).

    The hooks ignore other threads' forward passes through the same model and are removed
    in ``finally``, so the model's hooks are as before even when the block raises.
    """
    modules = dict(model.named_modules())
    owner = threading.get_ident()
    store: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(module, inputs, output):
            if threading.get_ident() == owner and name not in store:
                store[name] = output[0] if isinstance(output, (tuple, list)) else output

        return hook

    handles = []
    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(hook_for(name)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def forward_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)`` as (N, K) scores; a model that cannot take ``x`` gives a one-line CnnlabError."""
    try:
        out = model(x)
    except RuntimeError as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CnnlabError(f"{type(model).__name__} cannot take images of shape {tuple(x.shape[1:])} (C, H, W) "
                          f"({reason}); give images of the size and channels it was trained on") from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise CnnlabError(f"{type(model).__name__} returns {got}, not (N, classes) scores; explain a classifier")
    return out
