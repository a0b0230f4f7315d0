"""Look inside a trained network: learned filters and the activations of any layer.

Layers are named as ``model.named_modules()`` names them: ``"features.3"`` in a nested
model, ``"3"`` in a flat ``nn.Sequential``. Activations are caught with forward hooks that
are always removed again (try/finally), so inspecting never changes the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError

__all__ = [
    "activations",
    "activations_of",
    "conv_layers",
    "filter_images",
    "filters",
    "get_layer",
    "layer_names",
    "layer_type",
    "normalize_filters",
]


# --------------------------------------------------------------------------- layers


def layer_names(model: nn.Module) -> list[str]:
    """Names of every submodule (containers included, the model itself excluded), in
    registration order; an integer ``layer`` argument indexes this list."""
    return [name for name, _ in model.named_modules() if name]


def conv_layers(model: nn.Module) -> list[str]:
    """Names of the ``nn.Conv2d`` layers, in registration order."""
    return [name for name, m in model.named_modules() if name and isinstance(m, nn.Conv2d)]


def layer_type(module: nn.Module) -> str:
    """The layer's class name; for a submodule of a run's torch.export program that stays a plain
    graph module (``cnnlab.runs.program_layers``), the name of the class it was before export."""
    original = module.type_name() if type(module).__name__ == "InterpreterModule" else None
    if not original:
        return type(module).__name__
    unread = " (its graph is not one call cnnlab reads as that layer)" if getattr(module, "_cnnlab_unread", False) else ""
    return original.rsplit(".", 1)[-1] + unread


def _describe(model: nn.Module, names: Sequence[str], limit: int = 40) -> str:
    modules = dict(model.named_modules())
    shown = [f"{n} ({layer_type(modules[n])})" for n in names[:limit]]
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(shown) + more


def get_layer(model: nn.Module, layer: str | int) -> tuple[str, nn.Module]:
    """The ``(name, module)`` for a layer given by name (``"features.3"``) or index into
    :func:`layer_names` (negative counts from the end). A string of digits that is not a
    name is taken as an index. Unknown layers raise CnnlabError listing the layers that exist."""
    names = layer_names(model)
    modules = dict(model.named_modules())
    if isinstance(layer, str) and layer in modules and layer:
        return layer, modules[layer]
    index = layer
    if isinstance(layer, str):
        try:
            index = int(layer)
        except ValueError:
            index = None
    if isinstance(index, int) and not isinstance(index, bool) and -len(names) <= index < len(names):
        return names[index], modules[names[index]]
    raise CnnlabError(
        f"no layer {layer!r} in {type(model).__name__}; pass a name or index (0..{len(names) - 1}) "
        f"of one of: {_describe(model, names)}"
    )


# --------------------------------------------------------------------------- filters


def filters(model: nn.Module, layer: str | int | None = None) -> np.ndarray:
    """The weights of a conv layer as float32 ``(out_channels, in_channels, kh, kw)``.

    ``layer`` defaults to the first ``nn.Conv2d`` of the model.
    """
    if layer is None:
        convs = conv_layers(model)
        if not convs:
            raise CnnlabError(f"{type(model).__name__} has no Conv2d layer, so it has no filters to show")
        layer = convs[0]
    name, module = get_layer(model, layer)
    if not isinstance(module, nn.Conv2d):
        raise CnnlabError(
            f"layer {name!r} is a {layer_type(module)}, not a Conv2d; pick one of: "
            f"{', '.join(conv_layers(model)) or '(none)'}"
        )
    return module.weight.detach().float().cpu().numpy().copy()


def normalize_filters(weights: np.ndarray, *, per_filter: bool = False) -> np.ndarray:
    """Weights min-max scaled to [0, 1] for display, same shape.

    Global scaling (the default, as the Caffe tutorials' ``vis_square``) keeps filters
    comparable; ``per_filter=True`` scales each output filter on its own, which shows the
    pattern of weak filters. A constant array maps to 0.5.
    """
    w = np.asarray(weights, dtype=np.float32)
    axes = tuple(range(1, w.ndim)) if per_filter else None
    lo = w.min(axis=axes, keepdims=True)
    span = w.max(axis=axes, keepdims=True) - lo
    out = np.divide(w - lo, span, out=np.full_like(w, 0.5), where=span > 0)
    return out


def filter_images(weights: np.ndarray, *, per_filter: bool = False) -> np.ndarray:
    """Filters ``(out, in, kh, kw)`` as displayable patches in [0, 1].

    Three input channels (the first layer of a colour network): ``(out, kh, kw, 3)`` RGB.
    Otherwise every 2-D kernel becomes a grey patch: ``(out * in, kh, kw)``, grouped by
    output filter.
    """
    w = np.asarray(weights)
    if w.ndim != 4:
        raise CnnlabError(f"filters must be (out, in, kh, kw), got shape {w.shape}")
    w = normalize_filters(w, per_filter=per_filter)
    if w.shape[1] == 3:
        return w.transpose(0, 2, 3, 1)  # (out, in, kh, kw) -> (out, kh, kw, RGB)
    return w.reshape(-1, *w.shape[2:])


# --------------------------------------------------------------------------- activations


class _Done(Exception):
    """Raised from a hook to stop the forward pass once every requested layer has fired."""


def activations_of(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str | int]
) -> dict[str, np.ndarray]:
    """Outputs of several layers for input ``x`` ``(N, C, H, W)``, in one forward pass.

    Returns ``{name: float32 array}``, e.g. ``(N, C', H', W')`` for a conv layer. A single
    image ``(C, H, W)`` is treated as a batch of one. The model runs in eval mode under
    ``torch.inference_mode`` and stops as soon as the last requested layer has produced its
    output. If a module is called more than once, its first output is kept.
    """
    if not isinstance(x, torch.Tensor):
        raise CnnlabError(f"activations need a torch tensor (N, C, H, W), got {type(x).__name__}")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    resolved = [get_layer(model, layer) for layer in layers]
    captured: dict[str, torch.Tensor] = {}
    wanted = {name for name, _ in resolved}

    def make_hook(name: str):
        def hook(module, inputs, output):
            if name in captured:
                return
            if isinstance(output, (tuple, list)):
                output = output[0]
            if not isinstance(output, torch.Tensor):
                raise CnnlabError(f"layer {name!r} returns {type(output).__name__}, not a tensor")
            captured[name] = output.detach().float().cpu()
            if wanted <= captured.keys():
                raise _Done

        return hook

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    handles = []
    was_training = model.training
    try:
        for name, module in resolved:
            handles.append(module.register_forward_hook(make_hook(name)))
        model.eval()
        with torch.inference_mode():
            try:
                model(x.to(device))
            except _Done:
                pass
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    missing = wanted - captured.keys()
    if missing:
        raise CnnlabError(
            f"layer(s) {sorted(missing)} never ran in the forward pass; pick a layer the model uses"
        )
    return {name: captured[name].numpy() for name, _ in resolved}


def activations(model: nn.Module, x: torch.Tensor, layer: str | int) -> np.ndarray:
    """Output of one layer (by name or index, see :func:`get_layer`) for input ``x``
    ``(N, C, H, W)``, as a float32 array. See :func:`activations_of`."""
    return next(iter(activations_of(model, x, [layer]).values()))
