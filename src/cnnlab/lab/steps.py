"""Each operation of the network explained with its own numbers, for one value the user clicked.

- ``conv_step``: one output of a convolution (``arithmetic.dot_product``, by cnnlab's NumPy
  convolution) with every product of the current kernel position, and, for a layer that
  reads the model's input, the raw pixel values beside the normalised ones it computes on;
- ``unit_step``: a ReLU value as max(0, x), a max-pool output with its window and winner, a
  Linear output with its largest contributions, a Flatten value with where it came from;
(The softmax of the output layer comes with every overview: ``compute.softmax_steps``.)

Every number comes from one forward pass of the real model with hooks on the layer (its
input and output as PyTorch computed them); the page only lays them out.
"""

from __future__ import annotations

import numpy as np
import torch
from starlette.requests import Request
from starlette.routing import Route
from torch import nn

from cnnlab.insight.internals import layer_type
from cnnlab.lab.compute import forward_with_outputs, units
from cnnlab.lab.context import int_param, lab_of, locked
from cnnlab.lab.imaging import LabError
from cnnlab.lab.responses import JSONResponse  # finite JSON: inf/NaN reported, never sent

TOP_CONTRIBUTORS = 10  # inputs listed for one Linear output, largest |input x weight| first


def _layer(model: nn.Module, layer: str) -> nn.Module:
    module = dict(units(model)).get(layer)
    if module is None:
        raise LabError(404, f"no layer {layer[:60]!r} in the overview; pick one of {[n for n, _ in units(model)]}")
    return module


def _normalisation(target) -> tuple[list[float] | None, list[float] | None]:
    from cnnlab.lab.insight_views import target_normalisation

    norm = target_normalisation(target)
    c = int(target.input_shape[2])

    def per_channel(v):
        return None if v is None else [float(a) for a in np.broadcast_to(np.asarray(v, dtype=np.float64), (c,))]

    return per_channel(norm.get("mean")), per_channel(norm.get("std"))


def conv_step(target, item, layer: str, channel: int, y: int, x: int) -> dict:
    """dot_product of output (channel, y, x), plus each shown channel's products and, when the
    layer reads the model's input, the raw 0-255 values of the window beside the normalised ones."""
    from cnnlab.lab.arithmetic import dot_product

    model = target.model
    d = dot_product(model, item.x, layer, channel, y, x)
    for c in d["detail"]:
        c["products"] = (np.asarray(c["inputs"]) * np.asarray(c["weights"])).tolist()
    conv = _layer(model, layer)
    _, _, inputs = forward_with_outputs(model, item.x, [(layer, conv)], keep_inputs={layer})
    reads_input = inputs[layer].shape == item.x.shape and torch.equal(inputs[layer].float(), item.x.float())
    d["reads_model_input"] = bool(reads_input)
    if reads_input:
        mean, std = _normalisation(target)
        f, (dh, dw) = d["field"], d["dilation"]
        h, w = item.image.shape[:2]
        for c in d["detail"]:
            ch = c["in_channel"]
            rows = range(f["top"], f["top"] + f["height"], dh)
            cols = range(f["left"], f["left"] + f["width"], dw)
            # None where the window hangs over the border: those inputs are the zero padding.
            c["raw"] = [[int(item.image[r, q, ch]) if 0 <= r < h and 0 <= q < w else None for q in cols] for r in rows]
        d["normalisation"] = {"mean": mean, "std": std}
    return d


def unit_step(target, item, layer: str, channel: int | None, y: int | None, x: int | None,
              index: int | None) -> dict:
    """One value of a ReLU, max-pool, Linear or Flatten layer with the arithmetic that made it."""
    model = target.model
    module = _layer(model, layer)
    _, outputs, inputs = forward_with_outputs(model, item.x, [(layer, module)], keep_inputs={layer})
    if layer not in outputs or layer not in inputs:
        raise LabError(404, f"layer {layer!r} did not run for this input")
    out, inp = outputs[layer][0].double(), inputs[layer][0].double()
    if index is not None:
        if not 0 <= index < out.numel():
            raise LabError(404, f"index {index} is outside {layer}'s {out.numel()} values")
        where = np.unravel_index(index, tuple(out.shape))
    else:
        if out.ndim != 3 or None in (channel, y, x):
            raise LabError(400, f"layer {layer!r} has output shape {list(out.shape)}; give index=N for a vector")
        where = (channel, y, x)
        if not all(0 <= v < s for v, s in zip(where, out.shape, strict=True)):
            raise LabError(404, f"{where} is outside {layer}'s output {list(out.shape)}")
    value = float(out[tuple(int(v) for v in where)])
    base = {"layer": layer, "type": layer_type(module), "where": [int(v) for v in where], "value": value,
            "shape": list(out.shape)}
    if isinstance(module, (nn.ReLU, nn.ReLU6, nn.LeakyReLU)) and inp.shape == out.shape:
        pre = float(inp[tuple(int(v) for v in where)])
        formula = {nn.ReLU: "max(0, x)", nn.ReLU6: "min(6, max(0, x))"}.get(type(module), "x if x > 0 else slope·x")
        return {**base, "kind": "relu", "input": pre, "formula": formula}
    if isinstance(module, nn.MaxPool2d) and out.ndim == 3:
        return {**base, "kind": "pool", **_pool_window(module, inp, *where)}
    if isinstance(module, nn.Linear):
        flat_in = inp.reshape(-1)
        row = int(where[-1])
        weights = module.weight.detach().double().cpu()[row]
        products = flat_in * weights
        bias = float(module.bias.detach()[row]) if module.bias is not None else 0.0
        order = torch.argsort(products.abs(), descending=True, stable=True)[:TOP_CONTRIBUTORS]
        total = float(products.sum()) + bias
        return {**base, "kind": "dense", "bias": bias, "sum": total, "inputs": int(flat_in.numel()),
                "top": [{"index": int(i), "input": float(flat_in[i]), "weight": float(weights[i]),
                         "product": float(products[i])} for i in order],
                "rest": float(products.sum() - products[order].sum())}
    if isinstance(module, nn.Flatten):
        source = np.unravel_index(int(where[-1]), tuple(inp.shape))
        return {**base, "kind": "flatten", "from": [int(v) for v in source], "input_shape": list(inp.shape)}
    return {**base, "kind": "other"}


def _pool_window(pool: nn.MaxPool2d, inp: torch.Tensor, channel: int, y: int, x: int) -> dict:
    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (pair(pool.kernel_size), pair(pool.stride or pool.kernel_size),
                                              pair(pool.padding), pair(pool.dilation))
    h, w = inp.shape[1:]
    top, left = y * sh - ph, x * sw - pw
    window = [[float(inp[channel, r, q]) if 0 <= r < h and 0 <= q < w else None
               for q in range(left, left + dw * (kw - 1) + 1, dw)] for r in range(top, top + dh * (kh - 1) + 1, dh)]
    flat = [(v, i, j) for i, row in enumerate(window) for j, v in enumerate(row) if v is not None]
    best = max(flat, key=lambda t: t[0])  # the first of equal maxima, as PyTorch's pooling picks
    return {"window": window, "winner": [best[1], best[2]], "top": top, "left": left,
            "kernel_size": [kh, kw], "stride": [sh, sw]}


# --------------------------------------------------------------------------- routes


def _optional_int(request: Request, name: str) -> int | None:

    return int_param(request, name) if request.query_params.get(name) is not None else None


async def conv(request: Request):

    target, item = lab_of(request).input_of(request)
    args = [int_param(request, k) for k in ("channel", "y", "x")]
    return JSONResponse(await locked(target, conv_step, target, item, request.query_params.get("layer", ""), *args))


async def unit(request: Request):

    target, item = lab_of(request).input_of(request)
    args = [_optional_int(request, k) for k in ("channel", "y", "x", "index")]
    return JSONResponse(await locked(target, unit_step, target, item, request.query_params.get("layer", ""), *args))


def routes(api: str) -> list:
    return [Route(f"{api}/conv", conv), Route(f"{api}/unit", unit)]
