"""Attribution maps drawn over their images: RGB overlays and the figures of the report.

Colours come from a colour-blind-safe, perceptually uniform colormap ('cividis' by
default; 'viridis', 'magma', 'inferno' and 'plasma' are too). The overlay is plain NumPy:
the colormap is read once as a 256-entry table, so the lab can call it per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps

from cnnlab.errors import CnnlabError
from cnnlab.scratch.figure import Figure

__all__ = ["SAFE_COLORMAPS", "normalize_map", "overlay", "plot_attributions", "plot_layer_sweep"]

SAFE_COLORMAPS = ("cividis", "viridis", "magma", "inferno", "plasma")


def normalize_map(heatmap: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """A map scaled to [0, 1] by ``vmax``, default its largest magnitude (0 stays 0; signed
    maps use |value|)."""
    m = np.abs(np.asarray(heatmap, dtype=np.float32))
    peak = float(vmax) if vmax is not None else float(m.max()) if m.size else 0.0
    return np.clip(m / peak, 0, 1) if peak > 0 else np.zeros_like(m)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
        raise CnnlabError(f"image of shape {img.shape} is not (H, W), (H, W, 1) or (H, W, 3)")
    if img.dtype != np.uint8:  # floats in [0, 1]
        img = (np.clip(img.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img


def overlay(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.5, cmap: str = "cividis",
            vmax: float | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3): ``image`` (uint8 or [0, 1] floats; grey or RGB) blended with
    ``heatmap`` (H, W) coloured by ``cmap``; ``alpha`` is the map's opacity (0..1); ``vmax``
    the map value shown brightest (default the map's own maximum)."""
    if cmap not in SAFE_COLORMAPS:
        raise CnnlabError(f"colormap {cmap!r} is not colour-blind safe here; use one of {', '.join(SAFE_COLORMAPS)}")
    if not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise CnnlabError(f"alpha (the map's opacity) must lie in [0, 1], got {alpha!r}")
    rgb = _as_rgb(image)
    heat = np.asarray(heatmap)
    if heat.shape != rgb.shape[:2]:
        raise CnnlabError(f"map of shape {heat.shape} does not match the image's {rgb.shape[:2]}; "
                          "compute the map at the image's size")
    table = (colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.float32)  # (256, 3)
    colour = table[(normalize_map(heat, vmax) * 255).round().astype(np.intp)]  # (H, W, 3)
    return (rgb * (1 - alpha) + colour * alpha).round().astype(np.uint8)


def plot_attributions(images: Sequence[np.ndarray], columns: Sequence[Sequence[np.ndarray]], *,
                      column_titles: Sequence[str], row_titles: Sequence[str] | None = None,
                      alpha: float = 0.5, cmap: str = "cividis", shared_scale: bool = True) -> Figure:
    """A grid: per row the image, then one overlay per map column (e.g. the actual and the
    predicted class side by side). ``columns[j][i]`` is column j's map of image i.
    ``shared_scale``: the maps of a row share one colour scale, so a weak map looks weak
    beside a strong one (False: each map spans the whole colormap)."""
    n = len(images)
    if n == 0 or any(len(col) != n for col in columns) or len(column_titles) != len(columns):
        raise CnnlabError(f"need one map per image in every column ({n} images, columns of "
                          f"{[len(c) for c in columns]}) and one title per column")
    fig = Figure(figsize=(1.9 * (len(columns) + 1), 1.9 * n + 0.3), layout="constrained")
    axes = fig.subplots(n, len(columns) + 1, squeeze=False)
    for i, image in enumerate(images):
        vmax = max(float(np.abs(col[i]).max()) for col in columns) if shared_scale else None
        panels = [_as_rgb(image)] + [overlay(image, col[i], alpha=alpha, cmap=cmap, vmax=vmax) for col in columns]
        for j, panel in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("image" if j == 0 else column_titles[j - 1], fontsize=8)
        if row_titles is not None:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=7)
    return fig


def plot_layer_sweep(image: np.ndarray, maps: Mapping[str, np.ndarray], *, title: str = "",
                     alpha: float = 0.5, cmap: str = "cividis", ncols: int = 6) -> Figure:
    """Every layer's map (``{layer: (H, W)}``, in network order) over the same image."""
    if not maps:
        raise CnnlabError("no layer maps to draw; pass layer_sweep(...)'s result for one image")
    cols = min(ncols, len(maps))
    rows = -(-len(maps) // cols)
    fig = Figure(figsize=(1.8 * cols, 1.9 * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (name, heat) in zip(axes, maps.items(), strict=False):
        ax.imshow(overlay(image, heat, alpha=alpha, cmap=cmap), interpolation="nearest")
        ax.set_title(name, fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(maps):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return fig
