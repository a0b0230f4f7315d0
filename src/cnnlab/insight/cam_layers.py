"""Which layer Grad-CAM explains: the rectified output of a convolution's unit.

Grad-CAM weights a layer's feature maps by their gradients and keeps the positive part. On a
convolution's raw output (before its ReLU) many maps are all zero; on the unit's rectified
output (the activation after the conv, a Fire module's output, a residual block's output)
they are not (issue 30's measurement is in BENCHMARKS.md). ``cam_layers`` finds that unit by
tracing one forward pass.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.insight.attribution_inputs import _as_batch
from cnnlab.insight.internals import layer_type
from cnnlab.insight.layers import explaining, forward_logits, require_convs

_ACTIVATIONS = ("ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish",
                "Hardswish", "Hardtanh", "Softplus", "Sigmoid", "Hardsigmoid", "Tanh")
_PASS_THROUGH = ("BatchNorm2d", "Dropout", "Dropout2d", "Identity", "MaxPool2d", "AvgPool2d")


def _kind(module: nn.Module) -> str | None:
    """'activation', 'pass' (BatchNorm, dropout, identity, pooling) or None, by class name (a run's
    torch.export program keeps its layers' original class names, see ``layer_type``)."""
    names = {layer_type(module)} | {t.__name__ for t in type(module).__mro__}
    if names & set(_ACTIVATIONS):
        return "activation"
    return "pass" if names & set(_PASS_THROUGH) else None


def _trace(model: nn.Module, x: torch.Tensor) -> tuple[list[tuple[str, object, object]], torch.Tensor]:
    """``(calls, scores)`` of one forward pass of ``x``: every submodule call in the order the
    calls finish (a block after its children) as ``(name, first input, output)``. Run it
    under ``explaining``; with grad enabled the outputs can be differentiated."""
    owner = threading.get_ident()
    calls: list[tuple[str, object, object]] = []

    def hook_for(name: str):
        def hook(module, inputs, output):
            if threading.get_ident() == owner:
                calls.append((name, inputs[0] if inputs else None, output))

        return hook

    handles = []
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(hook_for(name)))
        logits = forward_logits(model, x)
    finally:
        for handle in handles:
            handle.remove()
    return calls, logits


def _is_map(t) -> bool:
    return isinstance(t, torch.Tensor) and t.ndim == 4


def _units(model: nn.Module, calls: list, convs: list[str]) -> tuple[dict[str, str], dict[str, int]]:
    """({conv: the module whose output is that conv's rectified unit}, {conv: the smaller
    pixel count of its map and its unit's}), for the convs that ran with (N, C, H, W) output,
    in the order they ran.
    The unit is:

    - the outermost block (a Fire module, a residual block, a stage) that ends with this conv
      (no other conv of it runs later) and keeps its spatial size, then inside it the last
      child with the very same output tensor, down to a module called once (a residual
      block's ReLU is called twice, so the block itself is the unit);
    - then the activations (through BatchNorm, dropout, pooling) that take that output next,
      one after the other (``conv -> ReLU``: the ReLU; ``conv -> pool -> BN -> ReLU``: the ReLU).
    """
    count: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, (name, _, _) in enumerate(calls):
        count[name] = count.get(name, 0) + 1
        first.setdefault(name, i)
    out = {name: calls[i][2] for name, i in first.items()}
    once = {name for name, c in count.items() if c == 1}
    ran = sorted((c for c in convs if c in once and _is_map(out[c])), key=first.__getitem__)
    modules = dict(model.named_modules())

    def last_conv_in(block: str) -> str | None:
        inside = [c for c in ran if c.startswith(block + ".")]
        return inside[-1] if inside else None

    def follow(name: str) -> str:
        """The last activation of the chain that takes ``name``'s output next (through
        BatchNorm, dropout or pooling), or ``name`` when no activation follows."""
        current, end = out[name], name
        for i, (other, given, result) in enumerate(calls[first[name] + 1:], first[name] + 1):
            if given is current and first[other] == i:  # a module's first call: what the hooks capture
                kind = _kind(modules[other])
                if kind is None:
                    break
                current = result
                if kind == "activation":
                    end = other
        return end

    units = {}
    for conv in ran:
        size = out[conv].shape[2:]
        unit, parts = conv, conv.split(".")
        for depth in range(len(parts) - 1, 0, -1):
            block = ".".join(parts[:depth])
            if block not in once or not _is_map(out[block]) or out[block].shape[2:] != size \
                    or last_conv_in(block) != conv:
                break
            unit = block
        while unit != conv:  # inside the block, down to the last child giving the same tensor
            same = [n for n, _ in modules[unit].named_children() if f"{unit}.{n}" in once
                    and out[f"{unit}.{n}"] is out[unit]]
            if not same:
                break
            unit = max((f"{unit}.{n}" for n in same), key=first.__getitem__)
        units[conv] = follow(unit)
    # a map's pixel count: the conv's and its unit's (pooling may shrink the unit's)
    return units, {c: min(out[c].shape[2] * out[c].shape[3], out[u].shape[2] * out[u].shape[3])
                   for c, u in units.items()}


def cam_layers(model: nn.Module, images, which: str = "auto") -> list[str]:
    """The layers Grad-CAM uses for ``layer="auto"`` (one name) or ``"sweep"`` (one per
    conv layer, in the order they run): the rectified output of each conv's unit, see
    :func:`gradcam`. ``images``: one batch the model takes (only the first image is run)."""
    convs = require_convs(model, "Grad-CAM")
    _check_which(which)
    x = _as_batch(model, images)
    with explaining(model), torch.no_grad():
        calls, _ = _trace(model, x[:1])
    return _choose(model, calls, convs, which)


def _check_which(which) -> None:
    if which not in ("auto", "sweep"):
        raise CnnlabError(f"which must be 'auto' or 'sweep', got {which!r}")


def _choose(model: nn.Module, calls: list, convs: list[str], which: str) -> list[str]:
    units, pixels = _units(model, calls, convs)
    if which == "sweep":
        sweep = list(dict.fromkeys(units[conv] for conv in units if pixels[conv] > 1))
        if sweep:
            return sweep
    for conv in reversed(list(units)):
        if pixels[conv] > 1:
            return [units[conv]]
    raise CnnlabError(f"no conv layer of {type(model).__name__} has an output map larger than 1x1 for these "
                      "images; Grad-CAM needs a spatial map, use saliency or ig instead")
