"""The arithmetic shown in the lab, done by cnnlab's NumPy convolution (``cnnlab.scratch.conv``).

``dot_product`` writes out one output value of a trained ``nn.Conv2d``: the receptive field
in the layer's input, the kernel, each input channel's multiply-sum (``correlate2d`` of the
window with that channel's kernel), the bias and the total, next to the value PyTorch
computed in the forward pass. ``playground`` applies a kernel to the current image with the
output-size formula filled in.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.lab.compute import forward_with_outputs, units
from cnnlab.lab.imaging import LabError, diverging, png_b64, to_uint8
from cnnlab.scratch.conv import correlate2d, output_size
from cnnlab.scratch.kernels import KERNELS, resolve_name

DETAIL_CHANNELS = 8  # input channels written out value by value (largest contributions first)
MAX_KERNEL = 15  # the playground's largest kernel side


def _conv_padding(conv: nn.Conv2d, in_hw) -> tuple[tuple[int, int], tuple[int, int]]:
    """(top, bottom), (left, right) zero padding of ``conv``, including padding='same'/'valid'."""
    if conv.padding_mode != "zeros":
        raise LabError(400, f"the dot-product view supports zero padding only, this layer pads with {conv.padding_mode!r}")
    if conv.padding == "valid":
        return (0, 0), (0, 0)
    if conv.padding == "same":
        # torch puts the odd pixel of 'same' padding at the bottom/right.
        totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
        return tuple((t // 2, t - t // 2) for t in totals)
    return tuple((p, p) for p in conv.padding)


def dot_product(model: nn.Module, x: torch.Tensor, layer: str, channel: int, y: int, xpos: int) -> dict:
    """The output at (channel, y, x) of conv layer ``layer`` for input ``x``, written out."""
    conv = dict(units(model)).get(layer)
    if not isinstance(conv, nn.Conv2d):
        convs = [n for n, m in units(model) if isinstance(m, nn.Conv2d)]
        raise LabError(404, f"layer {layer!r} is not a convolution shown in the overview; pick one of {convs}")
    _, outputs, inputs = forward_with_outputs(model, x, [(layer, conv)], keep_inputs={layer})
    out = outputs[layer][0]  # (O, H', W')
    if not (0 <= channel < out.shape[0] and 0 <= y < out.shape[1] and 0 <= xpos < out.shape[2]):
        raise LabError(404, f"({channel}, {y}, {xpos}) is outside {layer}'s output {list(out.shape)}")
    inp = inputs[layer][0].double().numpy()  # (C, H, W)
    weight = conv.weight.detach().double().cpu().numpy()  # (O, C / groups, kh, kw)
    (pt, pb), (pl, pr) = _conv_padding(conv, inp.shape[1:])
    padded = np.pad(inp, ((0, 0), (pt, pb), (pl, pr)))  # (C, H + pt + pb, W + pl + pr)
    (sh, sw), (dh, dw), (kh, kw) = conv.stride, conv.dilation, conv.kernel_size
    top, left = y * sh, xpos * sw  # in padded coordinates
    window = padded[:, top:top + dh * (kh - 1) + 1, left:left + dw * (kw - 1) + 1]  # dilated receptive field
    per_group = weight.shape[1]
    first = (channel // (conv.out_channels // conv.groups)) * per_group  # the group's first input channel
    sums = np.array([correlate2d(window[first + c], weight[channel, c], mode="valid", dilation=(dh, dw))[0, 0]
                     for c in range(per_group)])  # each input channel's multiply-sum, by cnnlab.conv
    bias = float(conv.bias[channel].detach()) if conv.bias is not None else 0.0
    total = float(sums.sum() + bias)
    torch_value = float(out[channel, y, xpos])
    order = np.argsort(-np.abs(sums), kind="stable")[:DETAIL_CHANNELS]
    shown = int(first + order[0])
    return {
        "layer": layer, "channel": channel, "y": y, "x": xpos,
        "kernel_size": [kh, kw], "stride": [sh, sw], "dilation": [dh, dw], "padding": [pt, pl],
        "in_channels": per_group, "first_in_channel": first,
        "channel_sums": sums.tolist(), "bias": bias, "result": total, "torch": torch_value,
        "abs_diff": abs(total - torch_value),
        "detail": [{"in_channel": int(first + c), "sum": float(sums[c]),
                    "inputs": window[first + c][::dh, ::dw].tolist(), "weights": weight[channel, c].tolist()}
                   for c in order],
        # Where the receptive field lies in the (unpadded) input, for the highlight rectangle.
        "field": {"top": top - pt, "left": left - pl, "height": dh * (kh - 1) + 1, "width": dw * (kw - 1) + 1},
        "input_channel_shown": shown, "input_shape": list(inp.shape),
        "input_png": png_b64(to_uint8(inp[shown])),
    }


def parse_kernel(spec) -> tuple[np.ndarray, str]:
    """A kernel name (``sobel-x``) or rows of numbers -> (float64 array, label)."""
    if isinstance(spec, str):
        try:
            name = resolve_name(spec)
        except CnnlabError as exc:
            raise LabError(400, str(exc)) from exc
        return np.array(KERNELS[name].weights, dtype=np.float64), name
    try:
        k = np.array(spec, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise LabError(400, f"kernel must be a name or rows of numbers, got {str(spec)[:80]!r}") from exc
    if k.ndim != 2 or not 1 <= k.shape[0] <= MAX_KERNEL or not 1 <= k.shape[1] <= MAX_KERNEL:
        raise LabError(400, f"a typed kernel must be rows of equal length, 1 to {MAX_KERNEL} each way; got shape {k.shape}")
    if not np.isfinite(k).all():
        raise LabError(400, "the kernel holds a number that is not finite; type plain numbers")
    return k, "custom"


def _int_param(name: str, value, least: int, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise LabError(400, f"{name} must be an integer from {least} to {most}, got {value!r}")
    return value


def playground(image: np.ndarray, kernel_spec, *, padding=0, stride=1, dilation=1) -> dict:
    """Correlate the current image (uint8 (H, W, C)) with a kernel, with the output-size formula."""
    kernel, label = parse_kernel(kernel_spec)
    p = _int_param("padding", padding, 0, 64)
    s = _int_param("stride", stride, 1, 16)
    d = _int_param("dilation", dilation, 1, 16)
    img = image.astype(np.float64) / 255  # (H, W, C) in [0, 1]
    if kernel.ndim == 2:
        img = img.mean(axis=2)  # a grey kernel sees the grey image
    elif img.shape[2] != kernel.shape[2]:
        raise LabError(400, f"kernel {label!r} is a colour kernel {kernel.shape}; it needs an RGB image, "
                            f"this input has {img.shape[2]} channel(s)")
    h, w = img.shape[:2]
    kh, kw = kernel.shape[:2]
    try:
        # The size first: its message speaks of padding, the playground's own control.
        sizes = [output_size(n, k, p, s, d) for n, k in ((h, kh), (w, kw))]
        out = correlate2d(img, kernel, mode="valid", padding=p, stride=s, dilation=d)
    except CnnlabError as exc:
        raise LabError(400, str(exc)) from exc
    formula = [f"{axis}_out = floor(({n} + 2·{p} − {d}·({k} − 1) − 1) / {s}) + 1 = {size}"
               for axis, n, k, size in (("H", h, kh, sizes[0]), ("W", w, kw, sizes[1]))]
    return {"kernel": kernel.tolist() if kernel.ndim == 2 else label, "label": label,
            "input_shape": [h, w], "output_shape": list(out.shape), "formula": formula,
            "min": float(out.min()), "max": float(out.max()), "png": png_b64(diverging(out))}
