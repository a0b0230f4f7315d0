"""Figures of what a network has learned: feature visualisations beside the dataset examples
that excite each channel most, and the embedding map. Each function returns a matplotlib
Figure and computes nothing (``cnnlab.insight.featurevis`` and ``.embedding`` do).

Class colours are the Okabe-Ito palette (Okabe and Ito 2008, "Color Universal Design"),
distinguishable with any common colour-vision deficiency, less its black (wrong predictions
are black crosses), plus three colours of Paul Tol's colour-blind-safe "muted" scheme, so ten
classes (MNIST, CIFAR-10) get ten colours; past ten the marker shape changes too (circle,
square, triangle, diamond, ...), so no two classes look alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.lines import Line2D

from cnnlab.errors import CnnlabError
from cnnlab.report.plots import _show_image
from cnnlab.scratch.figure import Figure

__all__ = ["OKABE_ITO", "TOL_MUTED", "class_style", "plot_embedding", "plot_feature_visualizations"]

OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
TOL_MUTED = ("#332288", "#999933", "#882255")  # indigo, olive, wine
_CLASS_COLOURS = OKABE_ITO[:7] + TOL_MUTED
_MARKERS = ("o", "s", "^", "D", "v", "P", "<", ">", "p", "h")
MAX_LEGEND_CLASSES = 40


def class_style(k: int) -> tuple[str, str]:
    """(colour, marker) of class ``k``: ten colours, then the next marker shape."""
    return _CLASS_COLOURS[k % len(_CLASS_COLOURS)], _MARKERS[(k // len(_CLASS_COLOURS)) % len(_MARKERS)]


def plot_feature_visualizations(images: np.ndarray, *, labels: Sequence[str] | None = None,
                                examples: np.ndarray | None = None, title: str | None = None) -> Figure:
    """One row per channel: its feature visualisation, then (when ``examples`` is given) the
    dataset examples that activate it most, best first.

    ``images``: (K, H, W, C) floats in [0, 1] (``visualize_channels``); ``labels``: K row
    titles ("channel 3"); ``examples``: (K, k, h, w[, c]) uint8 or [0, 1] images.
    """
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise CnnlabError(f"images must be (K, H, W, C) visualisations, got shape {images.shape}")
    k = 0 if examples is None else np.asarray(examples).shape[1]
    if examples is not None and len(examples) != len(images):
        raise CnnlabError(f"{len(examples)} rows of examples for {len(images)} visualisations; pass one row each")
    rows, cols = len(images), 1 + k
    fig = Figure(figsize=(1.5 * cols + 0.9, 1.5 * rows + (0.4 if title else 0.1)))
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        _show_image(axes[r, 0], images[r])
        axes[r, 0].set_ylabel(labels[r] if labels is not None else f"#{r}", fontsize=9)
        for j in range(k):
            _show_image(axes[r, 1 + j], examples[r][j])
    if k:
        axes[0, 0].set_title("visualisation", fontsize=9)
        axes[0, 1].set_title(f"top {k} examples →", fontsize=9, loc="left")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.02, top=1 - 0.5 / fig.get_figheight(), wspace=0.06, hspace=0.1)
    return fig


def plot_embedding(embedding, *, classes: Sequence[str] | None = None, title: str | None = None,
                   point_size: float | None = None) -> Figure:
    """Scatter of ``embedding.coords`` (an ``Embedding``), one colour (and marker) per actual
    class, each wrong prediction crossed out in black. The legend names the classes and
    counts the wrong ones."""
    coords, labels, wrong = (np.asarray(a) for a in (embedding.coords, embedding.labels, embedding.wrong))
    if coords.ndim != 2 or coords.shape[1] != 2 or len(labels) != len(coords):
        raise CnnlabError(f"embedding coords must be (N, 2) with one label each, got {coords.shape} and {labels.shape}")
    n_classes = int(labels.max()) + 1 if len(labels) else 0
    names = list(classes) if classes is not None else [str(c) for c in range(n_classes)]
    size = point_size or float(np.clip(3000 / max(len(coords), 1), 2, 30))
    fig = Figure(figsize=(8, 6.5), layout="constrained")
    ax = fig.subplots()
    present = np.unique(labels)
    legend = len(present) <= MAX_LEGEND_CLASSES  # past that the legend would outgrow the figure
    for c in present:
        colour, marker = class_style(int(c))
        mask = labels == c
        name = names[c] if c < len(names) else str(c)
        ax.scatter(coords[mask, 0], coords[mask, 1], s=size, c=colour, marker=marker, alpha=0.7, linewidths=0,
                   label=name)
    if wrong.any():
        ax.scatter(coords[wrong, 0], coords[wrong, 1], s=size * 1.6 + 6, c="black", marker="x", linewidths=0.8,
                   label=f"wrong ({int(wrong.sum())})")
    method = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}.get(embedding.method, embedding.method)
    ax.set_xlabel(f"{method} 1")
    ax.set_ylabel(f"{method} 2")
    classes_note = "" if legend else f", {len(present)} classes (colour and marker per class)"
    ax.set_title(title or f"Penultimate-layer features, {method} ({len(coords)} examples{classes_note})", fontsize=11)
    # Legend entries drawn at one readable size, whatever the point size of a dense map.
    handles = [Line2D([], [], linestyle="", marker=class_style(int(c))[1], color=class_style(int(c))[0], markersize=6,
                      label=names[c] if c < len(names) else str(c)) for c in present] if legend else []
    if wrong.any():
        handles.append(Line2D([], [], linestyle="", marker="x", color="black", markersize=6,
                              label=f"wrong ({int(wrong.sum())})"))
    if handles:
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False,
                  ncols=1 if len(handles) <= 21 else 2)
    return fig
