"""The training view of a model: the same parameters, arranged so that a CPU step moves less
memory. Its outputs equal the model's (to float rounding), its gradients too; the user's model
is never changed, and the view is what fit() and the validation pass run.

Four rewrites, each measured on mnist-cnn (batch 256, bf16; the figures are in BENCHMARKS.md):

- ReLU → MaxPool2d runs as MaxPool2d → ReLU. max and ReLU commute (both are monotone), so
  ReLU touches a quarter of the elements and its backward leaves the full-size map.
- A single-channel Conv2d followed by a 2×2 max-pool (MNIST's first layer) runs as one
  stride-2 convolution per pool position, the four stacked on the batch axis, and an
  element-wise max of the four (``PooledConv``). The max then reads four contiguous maps
  instead of PyTorch's channels_last pooling kernel, which walks 2×2 windows of 32-channel
  vectors: conv + pool + their backward ran 1.18× faster. Only where that was measured to
  pay: a one-channel 3×3 convolution with at least 32 outputs (64: 1.05-1.16×). Elsewhere the
  stride-2 convolutions cost more than the pooling saves: 3 → 32 channels 0.96×, 1 → 16
  0.90×, 1 → 8 0.81×, and 5×5 kernels 0.92-1.03× (mnist-fast's first layer).
- Where cnnlab's native kernels are built (``cnnlab.fast.native``: the system's C compiler,
  on first use), a one-channel convolution, its 2×2 max-pool and the ReLU after it are one
  pass (``PooledConv(relu=True)``), and so is a 2×2 max-pool and ReLU of a channels_last map
  (``FusedPool``): a third of mnist-cnn's step went (BENCHMARKS.md); without the kernels, the
  layers below compute with PyTorch as before.
- Flatten → Linear after a channels_last map flattens in (H, W, C) order and reads the
  weight's columns in that order (``ChannelsLastLinear``): a view instead of a copy, and the
  gradient comes back in the map's own layout (the ReLU backward before it ran several times
  slower on the mixed layouts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.fast import native

CHANNELS_LAST = torch.channels_last


def training_view(model: nn.Module, *, native_kernels: bool = True) -> nn.Module:
    """``model``'s layers (shared, not copied) with the rewrites above; any module that is not
    an ``nn.Sequential`` is returned as it is. ``native_kernels=False`` (a CUDA run) leaves the
    native kernels out: they are then neither built nor asked for.

    Call it through ``cnnlab.fast.training_model``, which first checks that the model carries
    nothing the rewrite would bypass (hooks, parametrizations, pruning, subclassed layers)."""
    if type(model) is not nn.Sequential:
        return model
    lib = native_kernels and native.library() is not None
    layers = [training_view(m, native_kernels=native_kernels) for m in model]
    layers = _swap_relu_pool(layers)
    out, i = [], 0
    while i < len(layers):
        here, after = layers[i], layers[i + 1] if i + 1 < len(layers) else None
        then = layers[i + 2] if i + 2 < len(layers) else None
        if (isinstance(here, nn.Conv2d) and isinstance(after, nn.MaxPool2d)
                and PooledConv.applies(here, after, native_kernels=lib)):
            relu = isinstance(then, nn.ReLU)
            out.append(PooledConv(here, relu=relu, native_kernels=lib))
            i += 3 if relu else 2
        elif isinstance(here, nn.MaxPool2d) and _is_pool2(here) and lib:
            relu = isinstance(after, nn.ReLU)
            out.append(FusedPool(here, relu=relu))
            i += 2 if relu else 1
        elif _is_flatten(here) and isinstance(after, nn.Linear):
            out.append(ChannelsLastLinear(after))
            i += 2
        else:
            out.append(here)
            i += 1
    return nn.Sequential(*out)


def _swap_relu_pool(layers: list[nn.Module]) -> list[nn.Module]:
    layers, i = list(layers), 0
    while i < len(layers) - 1:
        if isinstance(layers[i], nn.ReLU) and isinstance(layers[i + 1], nn.MaxPool2d):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
            i += 1
        i += 1
    return layers


def _is_pool2(pool: nn.MaxPool2d) -> bool:
    """A plain 2×2, stride-2 max-pool: the one the native kernels and PooledConv compute."""
    return (_pair(pool.kernel_size) == (2, 2) and _pair(pool.stride or pool.kernel_size) == (2, 2)
            and _pair(pool.padding) == (0, 0) and _pair(pool.dilation) == (1, 1)
            and not pool.ceil_mode and not pool.return_indices)


def _is_flatten(m: nn.Module) -> bool:
    return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim in (-1, 3)


def _pair(v) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class _FirstMaxOf4(torch.autograd.Function):
    """The max over four pool positions stacked on the batch axis, (4N, ...) → (N, ...), with
    the gradient sent to the first maximal one in (0,0), (0,1), (1,0), (1,1) order: the rule of
    PyTorch's max_pool2d (and so Keras'), which matters on MNIST, where the blank background
    ties everywhere.

    Masks are bf16/fp32 0-or-1 maps of the input's dtype: PyTorch's CPU comparisons and
    multiplications ran 7-26x slower with bool tensors than with the input's dtype (BENCHMARKS.md).
    """

    @staticmethod
    def forward(ctx, stacked: torch.Tensor) -> torch.Tensor:
        p0, p1, p2, p3 = stacked.chunk(4)
        second = torch.gt(p1, p0, out=torch.empty_like(p0))  # 1 where (0,1) beats (0,0)
        fourth = torch.gt(p3, p2, out=torch.empty_like(p0))  # 1 where (1,1) beats (1,0)
        top, bottom = torch.maximum(p0, p1), torch.maximum(p2, p3)
        lower = torch.gt(bottom, top, out=torch.empty_like(p0))  # 1 where the bottom row wins
        ctx.save_for_backward(second, fourth, lower)
        return torch.maximum(top, bottom, out=top)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        second, fourth, lower = ctx.saved_tensors
        out = torch.empty((4 * grad.shape[0], *grad.shape[1:]), dtype=grad.dtype, device=grad.device,
                          memory_format=_format_of(second))
        g0, g1, g2, g3 = out.chunk(4)
        # x - x * m is x where m is 0 and exactly 0 where m is 1, so no value is rounded.
        torch.mul(grad, lower, out=g2)  # the bottom row's share, split below
        torch.sub(grad, g2, out=g0)  # the top row's share
        torch.mul(g0, second, out=g1)
        torch.sub(g0, g1, out=g0)
        torch.mul(g2, fourth, out=g3)
        torch.sub(g2, g3, out=g2)
        return out


def _format_of(t: torch.Tensor) -> torch.memory_format:
    return CHANNELS_LAST if t.is_contiguous(memory_format=CHANNELS_LAST) and not t.is_contiguous() \
        else torch.contiguous_format


class PooledConv(nn.Module):
    """``max_pool2d(conv(x), 2)`` for a single-channel, stride-1 ``conv`` (held, not copied),
    then a ReLU if ``relu``.

    Where cnnlab's native kernel takes it (``native.pool_conv``: a float32 input that needs no
    gradient, a kernel up to 7×7, fp32 or bf16 autocast), the convolution, pool and ReLU are
    one pass. Otherwise, on the CPU, four stride-2 convolutions, one per position in the 2×2
    window: the position (a, b) of every window is the stride-2 convolution of the padded input
    shifted by (a, b); the four shifted inputs go through one convolution as a batch of 4N, and
    the max over the four results is the pooled map. Off the CPU it is plain conv then pool.
    Exact for any kernel; ``applies`` says where training_view uses it (where it was measured
    faster).
    """

    def __init__(self, conv: nn.Conv2d, relu: bool = False, native_kernels: bool = True) -> None:
        super().__init__()
        if not PooledConv.computes(conv):
            raise CnnlabError(f"PooledConv needs a one-channel, stride-1, undilated Conv2d with numeric zero "
                              f"padding, got {conv!r}")
        self.conv, self.relu, self.native_kernels = conv, relu, native_kernels

    def extra_repr(self) -> str:
        return f"relu={self.relu}"

    @staticmethod
    def computes(conv: nn.Module) -> bool:
        """Whether ``conv`` is a layer this computes exactly: one input channel, stride 1, no
        dilation, no groups, numeric zero padding."""
        return (isinstance(conv, nn.Conv2d) and conv.in_channels == 1 and conv.groups == 1
                and _pair(conv.stride) == (1, 1) and _pair(conv.dilation) == (1, 1)
                and conv.padding_mode == "zeros" and not isinstance(conv.padding, str))

    @staticmethod
    def applies(conv: nn.Conv2d, pool: nn.MaxPool2d, *, native_kernels: bool = True) -> bool:
        """Whether training_view uses it for ``conv`` then ``pool``: where it was measured faster
        (the native kernel, else the four-position form for 3×3 kernels and 32+ channels)."""
        if not (PooledConv.computes(conv) and _is_pool2(pool)):
            return False
        kernel = _pair(conv.kernel_size)
        if native_kernels and native.library() is not None and max(kernel) <= native.MAX_KERNEL:
            return True
        return conv.out_channels >= 32 and kernel == (3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 1, H, W) → (N, C, H'/2, W'/2)
        conv = self.conv
        fused = native.pool_conv(x, conv.weight, conv.bias, _pair(conv.padding), self.relu) \
            if self.native_kernels else None
        if fused is not None:
            return fused
        y = self._four_positions(x)
        return F.relu(y) if self.relu else y

    def _four_positions(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.conv
        (kh, kw), (ph, pw) = conv.kernel_size, _pair(conv.padding)
        h, w = x.shape[-2] + 2 * ph - kh + 1, x.shape[-1] + 2 * pw - kw + 1  # the conv's output size
        if x.device.type != "cpu" or x.ndim != 4 or h < 2 or w < 2:
            return F.max_pool2d(conv(x), 2)
        padded = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
        rows, cols = h // 2 * 2 + kh - 2, w // 2 * 2 + kw - 2  # what a stride-2 conv needs for h//2 outputs
        shifted = torch.cat([padded[:, :, a:a + rows, b:b + cols] for a in (0, 1) for b in (0, 1)])  # (4N, 1, ., .)
        # With one channel, NCHW and NHWC are the same memory; channels_last strides make
        # oneDNN write the output channels_last, which the element-wise max wants.
        shifted = shifted.as_strided(shifted.shape, (rows * cols, 1, cols, 1))
        stacked = F.conv2d(shifted, conv.weight, conv.bias, stride=2)  # (4N, C, h//2, w//2)
        if torch.is_grad_enabled() and stacked.requires_grad:
            return _FirstMaxOf4.apply(stacked)
        p0, p1, p2, p3 = stacked.chunk(4)
        return torch.maximum(torch.maximum(p0, p1), torch.maximum(p2, p3))


class FusedPool(nn.Module):
    """A 2×2, stride-2 ``nn.MaxPool2d`` (held), then a ReLU if ``relu``: one pass of the native
    kernel on a channels_last CPU map it takes (``native.max_pool2``), the plain layers
    otherwise."""

    def __init__(self, pool: nn.MaxPool2d, relu: bool = False) -> None:
        super().__init__()
        if not (isinstance(pool, nn.MaxPool2d) and _is_pool2(pool)):
            raise CnnlabError(f"FusedPool needs a 2x2, stride-2 MaxPool2d without padding, got {pool!r}")
        self.pool, self.relu = pool, relu

    def extra_repr(self) -> str:
        return f"relu={self.relu}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = native.max_pool2(x, self.relu)
        if fused is not None:
            return fused
        y = self.pool(x)
        return F.relu(y) if self.relu else y


class ChannelsLastLinear(nn.Module):
    """``linear(flatten(x, 1))``; for a channels_last map it flattens in (H, W, C) order, a view,
    and permutes the weight's columns to match, so no activation is copied."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise CnnlabError(f"ChannelsLastLinear needs an nn.Linear, got {type(linear).__name__}")
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lin = self.linear
        if x.ndim == 4 and _format_of(x) is CHANNELS_LAST and x[0].numel() == lin.in_features:
            n, c, h, w = x.shape
            weight = lin.weight.unflatten(1, (c, h, w)).permute(0, 2, 3, 1).flatten(1)  # (out, h*w*c)
            return F.linear(x.permute(0, 2, 3, 1).flatten(1), weight, lin.bias)  # (N, out)
        return lin(torch.flatten(x, 1))
