"""Winograd's F(4×4, 3×3) convolution, for fast inference of 3×3 networks on the CPU.

A 3×3 convolution computes each output from nine multiply-adds per input channel. Winograd's
minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015)
computes a 4×4 block of outputs from a 6×6 block of inputs with 36 multiplications instead
of 144: the input tile and the filter are each transformed into a 6×6 "Winograd domain",
multiplied element by element (summed over channels, which makes it 36 matrix products),
and transformed back. The filter transform is done once; the products are 4× fewer
multiply-adds than the direct convolution and run as one batched matrix product.

PyTorch's CPU convolution (oneDNN, direct algorithm) runs VGG-16's 3×3 layers at about the
machine's peak, so only fewer operations make them faster; this is how cuDNN and NNPACK get
there too. The transforms move memory, so the work goes in chunks that stay in the cache,
and the cost pays off only for wide layers: ``winograd_inference`` converts the 3×3
convolutions with enough input and output channels and leaves the rest. Results
match the direct convolution to about 2e-6 relative error in float32 (the direct
convolution itself differs from float64 by about 2e-7).
"""

from __future__ import annotations

import copy
import threading

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError

# F(4×4, 3×3): output = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A for a 6×6 input tile d and a 3×3 filter g.
_BT = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
       [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
_G = [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]

# Both 2-D transforms as one matrix on the flattened tile (Kronecker products): one large
# matrix product over all tiles instead of many 6×6 ones.
_KB = torch.kron(torch.tensor(_BT, dtype=torch.float64), torch.tensor(_BT, dtype=torch.float64))  # (36, 36)
_KA = torch.kron(torch.tensor(_AT, dtype=torch.float64), torch.tensor(_AT, dtype=torch.float64))  # (16, 36)

CHUNK_BYTES = 16 * 2**20  # Winograd-domain data per chunk: about what stays in a server CPU's cache


def transform_filters(weight: torch.Tensor) -> torch.Tensor:
    """(K, C, 3, 3) filters -> (36, C, K) in the Winograd domain (computed in float64)."""
    if weight.ndim != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise CnnlabError(f"Winograd F(4x4, 3x3) needs 3x3 filters (K, C, 3, 3), got {tuple(weight.shape)}")
    g = torch.tensor(_G, dtype=torch.float64)
    u = torch.einsum("ai,kcij,bj->abck", g, weight.detach().double().cpu(), g)
    return u.reshape(36, weight.shape[1], weight.shape[0]).to(weight.dtype).contiguous()


def _eligible(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros")


class WinogradConv2d(nn.Module):
    """A 3×3, stride 1, padding 1 ``nn.Conv2d`` (optionally followed by ReLU), for inference.

    Holds the filters already transformed; the result equals the original layer's to
    float32 rounding. Gradients do not reach the original weights: use it for inference.
    """

    def __init__(self, conv: nn.Conv2d, *, relu: bool = False) -> None:
        super().__init__()
        if not _eligible(conv):
            raise CnnlabError(f"Winograd F(4x4, 3x3) needs a 3x3 convolution with stride 1 and padding 1, got {conv}")
        self.in_channels, self.out_channels, self.relu = conv.in_channels, conv.out_channels, relu
        self.register_buffer("u", transform_filters(conv.weight.to("cpu")))
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias.to("cpu", conv.weight.dtype).clone())
        self.register_buffer("kb", _KB.to(conv.weight.dtype))
        self.register_buffer("ka", _KA.to(conv.weight.dtype))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size=(3, 3), winograd=F(4x4, 3x3), relu={self.relu}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise CnnlabError(f"expected input (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.requires_grad and torch.is_grad_enabled():
            raise CnnlabError("WinogradConv2d is for inference: run it under torch.inference_mode() or no_grad()")
        # Under bf16 autocast the input arrives in bf16; the Winograd transforms stay in the
        # filters' fp32 (mm with out= is not autocast, and bf16 would lose the transforms' precision).
        x = x.to(self.u.dtype)
        n_img, c, h, w = x.shape
        k = self.out_channels
        th, tw = -(-h // 4), -(-w // 4)  # 4×4 output tiles
        # Channels last (N, H, W, C): a tile's channels are contiguous, so gathering tiles
        # copies whole channel vectors. Zero padding: 1 pixel, plus up to a whole tile.
        xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 4 * tw + 1 - w, 1, 4 * th + 1 - h))
        # The output's memory follows the input's, as nn.Conv2d's does: NCHW-contiguous for a
        # contiguous input (so a following ``.view()`` works), channels_last for channels_last.
        fmt = torch.channels_last if _is_channels_last(x) else torch.contiguous_format
        out = x.new_empty(n_img, k, 4 * th, 4 * tw).contiguous(memory_format=fmt)
        out_hwc = out.permute(0, 2, 3, 1)  # (N, H, W, K) view of the same memory
        rows_per_chunk = max(1, CHUNK_BYTES // (36 * tw * max(c, k) * x.element_size()))
        chunks = list(_chunks(n_img, th, rows_per_chunk))
        most = max((i1 - i0) * (t1 - t0) * tw for i0, i1, t0, t1 in chunks)  # tiles in the largest chunk
        # One workspace for every chunk, kept between calls: fresh large allocations would
        # each cost page faults (the allocator hands big blocks back to the system).
        space = _workspace(36 * most * (2 * c + k) + 16 * most * k, x.dtype, x.device)
        for i0, i1, t0, t1 in chunks:
            n, rows = i1 - i0, t1 - t0
            p = n * rows * tw  # tiles in this chunk
            d, v, m, y = space[: 36 * p * (2 * c + k) + 16 * p * k].split([36 * p * c, 36 * p * c, 36 * p * k, 16 * p * k])
            tiles = xp[i0:i1, 4 * t0 : 4 * t1 + 2].unfold(1, 6, 4).unfold(2, 6, 4)  # (n, rows, tw, C, 6, 6)
            d.view(6, 6, n, rows, tw, c).copy_(tiles.permute(4, 5, 0, 1, 2, 3))
            torch.mm(self.kb, d.view(36, p * c), out=v.view(36, p * c))  # input tiles, Winograd domain
            torch.bmm(v.view(36, p, c), self.u, out=m.view(36, p, k))  # the 36 products, summed over channels
            torch.mm(self.ka, m.view(36, p * k), out=y.view(16, p * k))  # back: 4×4 outputs per tile
            y = y.view(4, 4, n, rows, tw, k)
            dst = out_hwc[i0:i1, 4 * t0 : 4 * t1].view(n, rows, 4, tw, 4, k)
            dst.copy_(y.permute(2, 3, 0, 4, 1, 5))
            dst.add_(self.bias)
            if self.relu:
                dst.clamp_(min=0)
        if 4 * th != h or 4 * tw != w:
            out = out[:, :, :h, :w].contiguous(memory_format=fmt)
        return out  # (N, K, H, W)


def _is_channels_last(x: torch.Tensor) -> bool:
    # A tensor with C == 1 or H == W == 1 is both; nn.Conv2d then picks contiguous.
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


# Workspaces are per thread: one shared buffer let two threads calling a model at once
# (the lab serves requests from several) overwrite each other's tiles, silently.
_LOCAL = threading.local()


def _workspace(numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A flat buffer of at least ``numel`` elements, reused by every Winograd layer of this thread."""
    spaces = getattr(_LOCAL, "spaces", None)
    if spaces is None:
        spaces = _LOCAL.spaces = {}
    key = (dtype, device)
    buf = spaces.get(key)
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: writable in and out of inference mode
            buf = spaces[key] = torch.empty(numel, dtype=dtype, device=device)
    return buf


def _chunks(images: int, tile_rows: int, rows_per_chunk: int):
    """(first image, end image, first tile row, end tile row) pieces covering the output."""
    if rows_per_chunk >= tile_rows:  # whole images per chunk
        step = rows_per_chunk // tile_rows
        for i in range(0, images, step):
            yield i, min(i + step, images), 0, tile_rows
    else:  # bands of tile rows within each image
        for i in range(images):
            for t in range(0, tile_rows, rows_per_chunk):
                yield i, i + 1, t, min(t + rows_per_chunk, tile_rows)


def winograd_inference(model: nn.Module, *, min_in_channels: int = 128, min_out_channels: int = 256,
                       inplace: bool = False) -> nn.Module:
    """``model`` for CPU inference with its wide 3×3 convolutions computed by Winograd F(4×4, 3×3).

    Convolutions with 3×3 filters, stride 1, padding 1 and no groups are replaced when they
    have at least ``min_in_channels`` inputs (the batched product's inner dimension) and
    ``min_out_channels`` outputs; narrower ones spend more on the transforms than they save.
    Against oneDNN's direct convolution + ReLU, VGG-16's narrow layers gained nothing this way
    and its 256- and 512-channel layers gained most (the per-layer figures, with the CPU they were
    measured on, are in BENCHMARKS.md): hence the defaults. A ReLU right after a converted
    layer in an ``nn.Sequential`` is folded into it. Returns the model in eval mode: a
    converted copy, or ``model`` itself when ``inplace`` (sparing a copy of VGG-16's 528 MB).
    """
    if not isinstance(model, nn.Module):
        raise CnnlabError(f"winograd_inference needs a torch.nn.Module, got {type(model).__name__}")
    if min_in_channels < 1 or min_out_channels < 1:
        raise CnnlabError(f"channel thresholds must be at least 1, got {min_in_channels} and {min_out_channels}")
    fast = model if inplace else copy.deepcopy(model)
    _convert(fast.eval(), min_in_channels, min_out_channels)
    return fast


def _convert(module: nn.Module, min_in: int, min_out: int) -> None:
    children = list(module.named_children())
    for i, (name, child) in enumerate(children):
        if _eligible(child) and child.in_channels >= min_in and child.out_channels >= min_out:
            relu = (isinstance(module, nn.Sequential) and i + 1 < len(children)
                    and isinstance(children[i + 1][1], nn.ReLU))
            setattr(module, name, WinogradConv2d(child, relu=relu))
            if relu:
                setattr(module, children[i + 1][0], nn.Identity())
        else:
            _convert(child, min_in, min_out)
