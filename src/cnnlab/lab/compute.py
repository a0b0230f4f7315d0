"""The lab's computations: one forward pass with every layer's output, the arithmetic of one
convolution output written out with the NumPy convolution, and the convolution playground.

Layers are shown as *units*: the children of ``nn.Sequential`` containers, recursively, with
any other module (a SqueezeNet Fire block, a residual block) kept whole. For the tutorials'
flat models that is every layer; for SqueezeNet it is its 13 feature blocks and classifier.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.insight.internals import layer_type
from cnnlab.lab.imaging import LabError, atlas, png_b64

MAX_CHANNELS_SHOWN = 64  # thumbnails per layer in the overview
THUMB = 56  # larger maps are area-averaged down to this side for the overview


def units(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """(name, module) of the layers the overview shows, in forward order for Sequential models."""
    out = []
    for name, child in model.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            out.extend(units(child, full + "."))
        else:
            out.append((full, child))
    return out


def forward_with_outputs(model: nn.Module, x: torch.Tensor, layers: list[tuple[str, nn.Module]],
                         *, keep_inputs: set[str] = frozenset()) -> tuple[torch.Tensor, dict, dict]:
    """Run ``model`` once on ``x``; return (logits, {name: output}, {name: input} for keep_inputs).

    Hooks are always removed again, and the model runs in eval mode under inference_mode.
    """
    outputs, inputs, handles = {}, {}, []

    def hook(name):
        def fn(module, args, output):
            if name not in outputs and isinstance(output, torch.Tensor):
                outputs[name] = output
                if name in keep_inputs:
                    inputs[name] = args[0]
        return fn

    try:
        for name, module in layers:
            handles.append(module.register_forward_hook(hook(name)))
        with torch.inference_mode():
            logits = model(x.to(next(model.parameters(), x).device))
    finally:
        for h in handles:
            h.remove()
    # Everything the page shows is computed from CPU copies (a no-op when the model is on the CPU).
    return logits.cpu(), {k: v.cpu() for k, v in outputs.items()}, {k: v.cpu() for k, v in inputs.items()}


def prediction(probs: np.ndarray, classes: list[str], *, k: int = 10) -> list[dict]:
    """Top-k of one probability vector as [{index, name, prob}], largest first."""
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"index": int(i), "name": classes[i], "prob": float(probs[i])} for i in order]


def _layer_view(name: str, module: nn.Module, out: torch.Tensor) -> dict:
    """One overview column: the layer's maps as one atlas PNG, or its vector as a strip."""
    shape = list(out.shape[1:])
    view = {"name": name, "type": layer_type(module), "shape": shape,
            "conv": isinstance(module, nn.Conv2d)}
    o = out[0].float()
    if o.ndim == 3 and o.shape[1] * o.shape[2] > 1:
        maps = o[:MAX_CHANNELS_SHOWN]
        if max(maps.shape[1:]) > THUMB:
            scale = THUMB / max(maps.shape[1:])
            size = (max(1, round(maps.shape[1] * scale)), max(1, round(maps.shape[2] * scale)))
            maps = F.interpolate(maps[None], size=size, mode="area")[0]
        grid, cols, lo, hi = atlas(maps.numpy())
        view.update(kind="maps", atlas=png_b64(grid), cols=cols, tile=list(maps.shape[1:]),
                    shown=int(maps.shape[0]), min=lo, max=hi)
    else:
        values = o.reshape(-1).numpy()
        view.update(kind="vector", values=[round(float(v), 5) for v in values[:1000]])
    return view


def overview(model: nn.Module, x: torch.Tensor, classes: list[str]) -> dict:
    """Prediction and every layer's output for one input: what the overview panel draws."""
    layers = units(model)
    logits, outputs, _ = forward_with_outputs(model, x, layers)
    probs = torch.softmax(logits.float(), dim=1)[0].numpy()
    views = [_layer_view(name, module, outputs[name]) for name, module in layers if name in outputs]
    return {"prediction": prediction(probs, classes), "layers": views, "softmax": softmax_steps(logits, probs)}


def softmax_steps(logits: torch.Tensor, probs: np.ndarray) -> dict:
    """The output layer's softmax written out: logits, exp(logit - max logit), their sum, and the
    probabilities the Prediction panel shows (torch.softmax's). Subtracting the largest logit
    changes no probability and keeps exp from overflowing: the page says so."""
    z = logits[0].double()
    shifted = torch.exp(z - z.max())
    return {"logits": z.tolist(), "max": float(z.max()), "exp": shifted.tolist(), "sum": float(shifted.sum()),
            "probs": [float(p) for p in probs]}


def feature_map(model: nn.Module, x: torch.Tensor, layer: str, channel: int) -> np.ndarray:
    """One channel of one layer's output, full resolution, float32 (H', W')."""
    layers = [u for u in units(model) if u[0] == layer]
    if not layers:
        raise LabError(404, f"no layer {layer!r} in the overview; pick one of {[n for n, _ in units(model)]}")
    _, outputs, _ = forward_with_outputs(model, x, layers)
    out = outputs[layer][0]
    if out.ndim != 3 or not 0 <= channel < out.shape[0]:
        raise LabError(404, f"layer {layer!r} has output shape {list(out.shape)}; no map {channel}")
    return out[channel].float().numpy()
