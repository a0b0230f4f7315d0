"""Attribution maps drawn over their images: RGB overlays and the figures of the report.

Maps >= 0 (Grad-CAM, saliency, SmoothGrad) are coloured by a colour-blind-safe, perceptually
uniform colormap ('cividis' by default; 'viridis', 'magma', 'inferno' and 'plasma' are too).
Signed maps (integrated gradients, occlusion, signed saliency: see
``cnnlab.insight.attribution.is_signed``) are drawn ``signed=True``: a colour-blind-safe
diverging colormap centred on 0 ('RdBu_r' by default: red for the class, blue against it;
'PuOr_r' and 'BrBG' too), scaled symmetrically by the largest magnitude. Drawn unsigned, a
map shows its positive part (negative values as 0), never its absolute value, which would
paint evidence against the class as evidence for it. The figures put a colour bar beside
every map. The overlay is plain NumPy: the colormap is read once as a 256-entry table, so
the lab can call it per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from cnnlab.errors import CnnlabError
from cnnlab.scratch.figure import Figure

__all__ = ["SAFE_COLORMAPS", "SAFE_DIVERGING", "map_scale", "normalize_map", "overlay", "plot_attributions",
           "plot_layer_sweep"]

SAFE_COLORMAPS = ("cividis", "viridis", "magma", "inferno", "plasma")
SAFE_DIVERGING = ("RdBu_r", "PuOr_r", "BrBG")  # ColorBrewer's colour-blind-safe diverging schemes


def map_scale(heatmap: np.ndarray, signed: bool = False) -> float:
    """The value drawn at the end of the colormap: the largest magnitude of a signed map, the
    largest value of an unsigned one (its positive part); 0 for an all-zero map."""
    m = np.asarray(heatmap, dtype=np.float32)
    if not m.size:
        return 0.0
    return float(np.abs(m).max()) if signed else max(float(m.max()), 0.0)


def normalize_map(heatmap: np.ndarray, vmax: float | None = None, *, signed: bool = False) -> np.ndarray:
    """A map scaled by ``vmax`` (default :func:`map_scale`): unsigned, its positive part in
    [0, 1] (negative values become 0); ``signed=True``, in [-1, 1] with 0 kept at 0."""
    m = np.asarray(heatmap, dtype=np.float32)
    peak = float(vmax) if vmax is not None else map_scale(m, signed)
    if not peak > 0:
        return np.zeros_like(m)
    return np.clip(m / peak, -1 if signed else 0, 1)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise CnnlabError(f"image of shape {img.shape} is not (H, W), (H, W, 1) or (H, W, 3)")
    if img.dtype != np.uint8:  # floats in [0, 1]
        img = (np.clip(img.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


def _check_cmap(cmap: str | None, signed: bool) -> str:
    safe = SAFE_DIVERGING if signed else SAFE_COLORMAPS
    if cmap is None:
        return safe[0]
    if cmap not in safe:
        kind = "diverging colormap for a signed map" if signed else "colormap"
        raise CnnlabError(f"{kind} {cmap!r} is not colour-blind safe here; use one of {', '.join(safe)}")
    return cmap


def overlay(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.5, cmap: str | None = None,
            vmax: float | None = None, signed: bool = False) -> np.ndarray:
    """RGB uint8 (H, W, 3): ``image`` (uint8 or [0, 1] floats; grey or RGB) blended with
    ``heatmap`` (H, W) coloured by ``cmap``; ``alpha`` is the map's opacity (0..1); ``vmax``
    the map value shown at the colormap's end (default :func:`map_scale`).

    ``signed=False``: the map's positive part on 'cividis' (default). ``signed=True``: a
    diverging colormap ('RdBu_r' default) centred on 0, from -vmax (blue) to +vmax (red),
    laid on with an opacity of ``alpha`` times |value| / vmax, so where the map is 0 the image
    shows as it is.
    """
    cmap = _check_cmap(cmap, signed)
    if not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise CnnlabError(f"alpha (the map's opacity) must lie in [0, 1], got {alpha!r}")
    rgb = _as_rgb(image)
    heat = np.asarray(heatmap)
    if heat.shape != rgb.shape[:2]:
        raise CnnlabError(f"map of shape {heat.shape} does not match the image's {rgb.shape[:2]}; "
                          "compute the map at the image's size")
    table = (colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)  # (256, 3)
    level = normalize_map(heat, vmax, signed=signed)
    if signed:  # -1..1 -> 0..1 with 0 at the middle; the opacity grows with |value|, so 0 leaves the image as it is
        colour = table[((level + 1) / 2 * 255).round().astype(np.intp)]
        opacity = alpha * np.abs(level)[:, :, None]
    else:
        colour = table[(level * 255).round().astype(np.intp)]  # (H, W, 3)
        opacity = alpha
    return (rgb * (1 - opacity) + colour * opacity).round().astype(np.uint8)


def _colorbar(fig: Figure, ax, cmap: str, vmax: float, signed: bool) -> None:
    """A colour bar beside ``ax`` for a map drawn up to ``vmax`` (symmetric when signed)."""
    peak = vmax if vmax > 0 else 1.0
    mappable = ScalarMappable(Normalize(-peak if signed else 0.0, peak), cmap=cmap)
    bar = fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.02)
    bar.ax.tick_params(labelsize=5)
    bar.ax.yaxis.get_offset_text().set_fontsize(5)


def _flags(signed, n: int) -> list[bool]:
    flags = [bool(signed)] * n if isinstance(signed, bool) else [bool(v) for v in signed]
    if len(flags) != n:
        raise CnnlabError(f"signed must be one bool or one per column ({n}), got {len(flags)}")
    return flags


def plot_attributions(images: Sequence[np.ndarray], columns: Sequence[Sequence[np.ndarray]], *,
                      column_titles: Sequence[str], row_titles: Sequence[str] | None = None,
                      alpha: float = 0.5, cmap: str | None = None, shared_scale: bool = True,
                      signed: bool | Sequence[bool] = False) -> Figure:
    """A grid: per row the image, then one overlay per map column (e.g. the actual and the
    predicted class side by side), each with its colour bar. ``columns[j][i]`` is column j's
    map of image i. ``shared_scale``: the maps of a row share one colour scale, so a weak map
    looks weak beside a strong one (False: each map spans the whole colormap). ``signed``:
    one flag, or one per column: draw that column's maps signed (diverging colormap centred
    on 0), else their positive part (see :func:`overlay`); ``cmap`` applies to both kinds only
    when it is safe for them (None: each kind's default)."""
    n = len(images)
    if n == 0 or any(len(col) != n for col in columns) or len(column_titles) != len(columns):
        raise CnnlabError(f"need one map per image in every column ({n} images, columns of "
                          f"{[len(c) for c in columns]}) and one title per column")
    flags = _flags(signed, len(columns))
    cmaps = [_check_cmap(cmap if cmap in (SAFE_DIVERGING if f else SAFE_COLORMAPS) else None, f) for f in flags]
    if cmap is not None and cmap not in SAFE_COLORMAPS + SAFE_DIVERGING:
        _check_cmap(cmap, any(flags))
    fig = Figure(figsize=(2.2 * (len(columns) + 1), 1.9 * n + 0.3), layout="constrained")
    axes = fig.subplots(n, len(columns) + 1, squeeze=False)
    for i, image in enumerate(images):
        row_max = max(map_scale(col[i], f) for col, f in zip(columns, flags, strict=True))
        axes[i, 0].imshow(_as_rgb(image), interpolation="nearest")
        for j, (col, f, cm) in enumerate(zip(columns, flags, cmaps, strict=True), start=1):
            vmax = row_max if shared_scale else map_scale(col[i], f)
            ax = axes[i, j]
            ax.imshow(overlay(image, col[i], alpha=alpha, cmap=cm, vmax=vmax, signed=f), interpolation="nearest")
            _colorbar(fig, ax, cm, vmax, f)
        for j in range(len(columns) + 1):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title("image" if j == 0 else column_titles[j - 1], fontsize=8)
        if row_titles is not None:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=7)
    return fig


def plot_layer_sweep(image: np.ndarray, maps: Mapping[str, np.ndarray], *, title: str = "",
                     alpha: float = 0.5, cmap: str | None = None, ncols: int = 6, signed: bool = False) -> Figure:
    """Every layer's map (``{layer: (H, W)}``, in network order) over the same image, each
    on its own scale with its colour bar (``signed``: see :func:`overlay`)."""
    if not maps:
        raise CnnlabError("no layer maps to draw; pass layer_sweep(...)'s result for one image")
    cmap = _check_cmap(cmap, signed)
    cols = min(ncols, len(maps))
    rows = -(-len(maps) // cols)
    fig = Figure(figsize=(2.1 * cols, 1.9 * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (name, heat) in zip(axes, maps.items(), strict=False):
        vmax = map_scale(heat, signed)
        ax.imshow(overlay(image, heat, alpha=alpha, cmap=cmap, vmax=vmax, signed=signed), interpolation="nearest")
        _colorbar(fig, ax, cmap, vmax, signed)
        ax.set_title(name, fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(maps):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
