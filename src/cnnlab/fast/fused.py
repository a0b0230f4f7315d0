"""A network arranged for inference on the CPU: Conv2d → ReLU as one oneDNN convolution with a
ReLU post-op, and bf16 weights cast once instead of on every call.

PyTorch's eager mode runs the ReLU as a second pass over the convolution's output; oneDNN can
apply it while the convolution writes that output. PyTorch exposes this as
``torch.ops.mkldnn._convolution_pointwise``, the op its Inductor compiler emits for the same
fusion; it is not public API, so ``available()`` checks it once against the plain layers on
a small case (in bf16 only where the CPU has the instructions oneDNN's bf16 path needs) and
everything falls back to them where it is missing or disagrees. It pays on VGG-16
(BENCHMARKS.md has the figures), with outputs identical bit for bit.

Each bf16 autocast context casts every convolution and linear weight from fp32 to bf16 (once
per context: its cache keeps the casts until the context ends). A network kept and run again
and again, each time in a new context, pays that every time: VGG-16's classifier (124 M
weights) spent more than half its time casting that way (BENCHMARKS.md has the figures).
``cast_weights`` does the cast once, on the layers autocast casts (Conv2d, Linear), so the
results are autocast's own. (One classify call pays one cast either way; the lab, a loop over
batches, or ``bench_pretrained.py`` keep the network.)

Only for inference: the fused op has no gradient, so ``ConvReLU`` computes the plain layers
whenever autograd is recording, and ``classify`` fuses only the networks it loaded itself
(explain and the lab hook the named layers of theirs).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import cpu
from cnnlab.errors import CnnlabError


def available(bf16: bool = False) -> bool:
    """Whether this torch has the fused op and it agrees with conv2d then relu on this CPU, in
    float32 or (``bf16``) in bfloat16. The bf16 form also needs the instruction sets oneDNN's
    bf16 convolution runs on (``cnnlab.cpu.onednn_bf16``): elsewhere oneDNN refuses it."""
    return _proved(bool(bf16), cpu.onednn_bf16() if bf16 else True)


def status() -> str:
    """Whether ``classify`` fuses conv + ReLU here, and why not where it does not."""
    if getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None) is None:
        return "off (this torch has no oneDNN conv + ReLU op)"
    if not available():
        return "off (the fused op disagreed with conv2d then relu on a check)"
    if not available(bf16=True):
        return "on in fp32; off in bf16 (oneDNN's bf16 convolution needs avx512bw/vl/dq or avx_ne_convert)"
    return "on (fp32 and bf16)"


@functools.cache
def _proved(bf16: bool, isa_ok: bool) -> bool:
    op = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available() or not isa_ok:
        return False
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(-2, 3, (2, 4, 6, 6), generator=gen).float()
    w, b = torch.randint(-2, 3, (8, 4, 3, 3), generator=gen).float(), torch.randint(-2, 3, (8,), generator=gen).float()
    dtype = torch.bfloat16 if bf16 else torch.float32
    try:
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            want = F.relu(F.conv2d(x.to(dtype), w.to(dtype), b.to(dtype), padding=1))
            return torch.equal(_fused(x.to(dtype), w.to(dtype), b.to(dtype), [1, 1], [1, 1], [1, 1], 1), want)
    except (RuntimeError, TypeError):
        return False


def _fused(x, w, b, padding, stride, dilation, groups):
    return torch.ops.mkldnn._convolution_pointwise(x, w, b, padding, stride, dilation, groups, "relu", [], "")


class ConvReLU(nn.Module):
    """``relu(conv(x))`` for ``conv`` (held, not copied), in one oneDNN call where it can be."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not isinstance(conv, nn.Conv2d):
            raise CnnlabError(f"ConvReLU needs an nn.Conv2d, got {type(conv).__name__}")
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        w, b = conv.weight, conv.bias
        recording = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
        if (recording or x.device.type != "cpu" or x.ndim != 4 or isinstance(conv.padding, str)
                or conv.padding_mode != "zeros" or torch.compiler.is_compiling() or not available()):
            return F.relu(conv(x))
        if torch.is_autocast_enabled("cpu"):  # the op is outside autocast's lists: cast as conv2d is cast
            dtype = torch.get_autocast_dtype("cpu")
            x, w, b = x.to(dtype), w.to(dtype), b.to(dtype) if b is not None else None
        if x.dtype not in (torch.float32, torch.bfloat16) or x.dtype != w.dtype:
            return F.relu(conv(x))
        if x.dtype == torch.bfloat16 and not available(bf16=True):  # oneDNN refuses bf16 on this CPU
            return F.relu(conv(x))
        return _fused(x, w, b, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)


def fuse_conv_relu(model: nn.Module) -> nn.Module:
    """``model`` with every Conv2d directly followed by a ReLU in an ``nn.Sequential`` replaced,
    in place, by one ``ConvReLU`` (the same parameters); returned for chaining. Unchanged where
    the fused op is not available."""
    _check_module(model)
    if not available():
        return model
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        layers, out, i = list(seq), [], 0
        while i < len(layers):
            if isinstance(layers[i], nn.Conv2d) and i + 1 < len(layers) and type(layers[i + 1]) is nn.ReLU:
                out.append(ConvReLU(layers[i]))
                i += 2
            else:
                out.append(layers[i])
                i += 1
        if len(out) != len(layers):
            for name in list(seq._modules):
                del seq._modules[name]
            for k, m in enumerate(out):
                seq.add_module(str(k), m)
    return model


def cast_weights(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model`` with the weights and biases of its Conv2d and Linear layers cast to ``dtype``
    in place, as autocast would cast them on every call (normalisation layers keep theirs)."""
    _check_module(model)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise CnnlabError(f"cast_weights needs a floating torch dtype such as torch.bfloat16, got {dtype!r}")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.to(dtype)
    return model


def for_inference(model: nn.Module, precision: str, device: torch.device | str) -> nn.Module:
    """A network ``classify`` loaded, arranged in place for repeated inference under
    ``precision`` ("fp32" or "bf16", resolved) on ``device``: conv + ReLU fused on the CPU, and
    under bf16 autocast the weights it would cast on every call cast once."""
    _check_module(model)
    if precision not in ("fp32", "bf16"):
        raise CnnlabError(f"for_inference needs precision 'fp32' or 'bf16' (resolved, not 'auto'), got {precision!r}")
    device = torch.device(device)
    if device.type != "cpu":
        return model
    model = fuse_conv_relu(model)
    return cast_weights(model, torch.bfloat16) if precision == "bf16" else model


def _check_module(model) -> None:
    if not isinstance(model, nn.Module):
        raise CnnlabError(f"expected a torch nn.Module, got {type(model).__name__}")
