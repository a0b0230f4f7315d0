"""Is an attribution map faithful to the model? Measures that a map must pass, not look good on.

- :func:`perturbation_curves` and :func:`auc`: deletion and insertion (Petsiuk et al. 2018,
  RISE). Pixels are taken in the order the map ranks them (most evidence for the class first;
  a signed map's negative evidence last) and set to a baseline (deletion) or revealed from it
  (insertion), a fraction at a time; the curve is the target class's probability after each
  step. A faithful map makes the deletion curve fall fast (low area) and the insertion curve
  rise fast (high area); ``order="random"`` gives the chance level to beat.
- :func:`randomized_top` and :func:`rank_correlation`: the model-randomisation sanity check
  (Adebayo et al. 2018). A map that barely changes (high rank correlation) when the top
  layer's weights are re-drawn does not explain what the model learned.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.insight.attribution import _as_batch, _target_spec, scores

__all__ = ["auc", "perturbation_curves", "randomized_top", "rank_correlation"]


def _order_ranks(maps: np.ndarray, order: str, seed: int) -> np.ndarray:
    """(N, P) int: each pixel's position in the order it is deleted/inserted (0 first).
    Ties (a Grad-CAM map's zero background) are broken at random, seeded, so they carry no
    top-left bias."""
    flat = maps.reshape(len(maps), -1).astype(np.float64)
    tie = np.random.default_rng(seed).random(flat.shape)
    if order == "random":
        sequence = np.argsort(tie, axis=1)
    elif order == "map":
        sequence = np.lexsort((tie, -flat), axis=-1)  # by value, largest first; then by the random key
    else:
        raise CnnlabError(f"order must be 'map' or 'random', got {order!r}")
    ranks = np.empty_like(sequence)
    np.put_along_axis(ranks, sequence, np.arange(flat.shape[1])[None, :].repeat(len(flat), 0), axis=1)
    return ranks


def perturbation_curves(model: nn.Module, images, maps, targets="predicted", *, mode: str = "deletion",
                        steps: int = 20, baseline=0.0, order: str = "map", seed: int = 0, labels=None,
                        batch_size: int = 256) -> np.ndarray:
    """(N, steps + 1) float32: the target class's softmax probability as the pixels are
    deleted (``mode="deletion"``: set to ``baseline``, all channels) or inserted
    (``"insertion"``: revealed on a ``baseline`` image), ``1/steps`` of them at a time, in
    the order of ``maps`` (N, H, W), largest value first (``order="random"``: a seeded
    random order, the chance level). Column 0 is before any pixel changed.

    ``baseline``: a number or an array broadcastable to the images, in the preprocessed
    space (0 is black for images scaled to [0, 1], the mean colour after normalisation).
    ``targets`` as in ``cnnlab.insight.attribution`` (the class each map explains).
    """
    if mode not in ("deletion", "insertion"):
        raise CnnlabError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise CnnlabError(f"steps must be a positive int, got {steps!r}")
    x = _as_batch(model, images)
    maps = np.asarray(maps)
    if maps.shape != (x.shape[0], *x.shape[2:]):
        raise CnnlabError(f"maps of shape {maps.shape} do not match the images {tuple(x.shape)}; give one (H, W) "
                          "map per image at the image's size")
    spec = _target_spec(targets, len(x), labels)
    t = scores(model, x, batch_size=batch_size).argmax(1) if isinstance(spec, str) else spec.to(x.device)
    try:
        base = torch.as_tensor(np.asarray(baseline), dtype=x.dtype, device=x.device).expand_as(x)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CnnlabError(f"baseline of shape {np.shape(baseline)} does not broadcast to the images "
                          f"{tuple(x.shape)}; give a number or an array of the images' shape") from exc
    ranks = torch.from_numpy(_order_ranks(maps, order, seed)).to(x.device).view(len(x), 1, *x.shape[2:])
    pixels = x.shape[2] * x.shape[3]
    rows = torch.arange(len(x), device=x.device)
    curves = []
    for k in range(steps + 1):
        changed = ranks < round(k * pixels / steps)  # (N, 1, H, W)
        xk = torch.where(changed, base, x) if mode == "deletion" else torch.where(changed, x, base)
        probs = scores(model, xk, batch_size=batch_size).float().softmax(1)
        curves.append(probs[rows, t.to(probs.device)])
    return torch.stack(curves, 1).cpu().numpy()


def auc(curves) -> np.ndarray:
    """(N,) the area under each curve (N, steps + 1) over the fraction of pixels changed,
    0 to 1 (the trapezoid rule)."""
    c = np.asarray(curves, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] < 2:
        raise CnnlabError(f"curves must be (N, steps + 1) with steps >= 1, got shape {c.shape}")
    return (c[:, :-1] + c[:, 1:]).sum(1) / (2 * (c.shape[1] - 1))


def _average_ranks(row: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(row, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2)[inverse.ravel()]  # ties share their mean rank (1-based)


def rank_correlation(a, b) -> np.ndarray:
    """(N,) Spearman's rank correlation between maps ``a`` and ``b`` (N, H, W), image by
    image (ties get their mean rank); NaN where either map is constant (an all-zero map has
    no ranking)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 2:
        raise CnnlabError(f"maps of shapes {a.shape} and {b.shape} must match and be (N, H, W)")
    out = np.full(len(a), np.nan)
    for i, (u, v) in enumerate(zip(a.reshape(len(a), -1), b.reshape(len(b), -1), strict=True)):
        if np.ptp(u) == 0 or np.ptp(v) == 0:
            continue
        ru, rv = _average_ranks(u), _average_ranks(v)
        ru, rv = ru - ru.mean(), rv - rv.mean()
        out[i] = float((ru * rv).sum() / np.sqrt((ru * ru).sum() * (rv * rv).sum()))
    return out


def randomized_top(model: nn.Module, *, layers: int = 1, seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose top ``layers`` layers with weights (the last ones in
    registration order: the classifier's Linear, SqueezeNet's 1x1 classifier conv; BatchNorm
    is not counted) are re-initialised by their own ``reset_parameters``, seeded, as in
    Adebayo et al.'s cascading randomisation from the top; ``model`` is left as it was."""
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise CnnlabError(f"layers must be a positive int, got {layers!r}")
    twin = copy.deepcopy(model)
    tops = [m for m in twin.modules() if hasattr(m, "reset_parameters") and getattr(m, "weight", None) is not None
            and not isinstance(m, nn.modules.batchnorm._NormBase)]
    if not tops:
        raise CnnlabError(f"{type(model).__name__} has no layer with weights to randomise")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for module in tops[-layers:]:
            module.reset_parameters()
    return twin
