"""Occlusion (Zeiler & Fergus 2014): how much the target's score drops when a window of the
image is covered, averaged over the windows covering each pixel. Signed: a negative value
means covering that patch raised the score (evidence against the class).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.insight.attribution_inputs import _as_batch, _check_batch_size, _maps, _predicted, _selected_each, _target_spec
from cnnlab.insight.layers import explaining, forward_logits


def _pair(value, name: str, limit: tuple[int, int]) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and 1 <= v <= m for v, m in zip(pair, limit, strict=True)):
        raise CnnlabError(f"{name} {value!r} must be a positive int or (rows, cols) no larger than the image {limit}")
    return pair


def _window_starts(size: int, window: int, stride: int) -> torch.Tensor:
    # As Captum: ceil((size - window) / stride) + 1 positions; the last window may hang over the edge.
    count = -(-(size - window) // stride) + 1
    return torch.arange(count) * stride


def occlusion(model: nn.Module, images, targets="predicted", *, labels=None, window=None, stride=None,
              baseline: float = 0.0, batch_size: int = 128) -> np.ndarray:
    """Occlusion (N, H, W) float32: how much the score drops when a ``window`` patch
    (all channels) is set to ``baseline``, averaged over the patches covering each pixel
    (Zeiler & Fergus 2014). Equals Captum's ``Occlusion`` with a window spanning the channels.
    Signed: negative where hiding a patch *raises* the score (see :func:`is_signed`).

    ``window``/``stride``: int or (rows, cols); default window a seventh of the shorter
    side, stride half the window. A stride larger than the window would leave pixels that no
    window covers (no value: NaN), so it is refused.
    """
    x = _as_batch(model, images)
    n, _, h, w = x.shape
    window = _pair(window if window is not None else max(1, min(h, w) // 7), "window", (h, w))
    stride = _pair(stride if stride is not None else tuple(max(1, v // 2) for v in window), "stride", (h, w))
    if stride[0] > window[0] or stride[1] > window[1]:
        raise CnnlabError(f"occlusion stride {stride} is larger than the window {window}: the pixels between "
                          "windows would get no value; use a stride no larger than the window")
    if not isinstance(baseline, (int, float)):
        raise CnnlabError(f"baseline must be a number for occlusion, got {type(baseline).__name__}")
    t = _predicted(model, x, _target_spec(targets, len(x), labels), batch_size)
    # Each window is a box: the product of a row band and a column band.
    rows_in = _bands(h, window[0], stride[0], x)  # (R, H): row band of each window row
    cols_in = _bands(w, window[1], stride[1], x)  # (Q, W)
    drops = _occlusion_drops(model, x, t, rows_in, cols_in, baseline, _check_batch_size(batch_size))  # (R, Q, N)
    total = torch.einsum("ay,abn,bx->nyx", rows_in, drops, cols_in)
    count = rows_in.sum(0)[:, None] * cols_in.sum(0)[None, :]  # windows covering each pixel
    return _maps(total / count)


def _bands(size: int, window: int, stride: int, x: torch.Tensor) -> torch.Tensor:
    starts = _window_starts(size, window, stride).to(x.device)[:, None]
    pos = torch.arange(size, device=x.device)[None, :]
    return ((pos >= starts) & (pos < starts + window)).to(x.dtype)


def _occlusion_drops(model, x, t, rows_in, cols_in, baseline, batch_size) -> torch.Tensor:
    """score(x) - score(x with window (a, b) set to baseline), as (R, Q, N)."""
    n, windows = len(x), len(rows_in) * len(cols_in)
    drops = []
    with explaining(model), torch.no_grad():
        full = torch.cat([_selected_each(forward_logits(model, c), tc)
                          for c, tc in zip(x.split(batch_size), t.split(batch_size), strict=True)])
        for start in range(0, windows * n, batch_size):
            rows = torch.arange(start, min(start + batch_size, windows * n), device=x.device)
            p, i = rows // n, rows % n  # row = window p of image i
            mask = (rows_in[p // len(cols_in), :, None] * cols_in[p % len(cols_in), None, :])[:, None]  # (rows, 1, H, W)
            occluded = x[i] * (1 - mask) + baseline * mask
            drops.append(full[i] - _selected_each(forward_logits(model, occluded), t[i]))
    return torch.cat(drops).view(len(rows_in), len(cols_in), n)
