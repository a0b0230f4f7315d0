"""Every figure cnnlab draws, one function each, each returning a ``matplotlib.figure.Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly rather than ``pyplot``: nothing
enters pyplot's global list, so nothing needs closing, no GUI backend is touched, and
``show`` is never called. In a notebook the returned figure displays itself, in any kernel
(``cnnlab.scratch.figure.Figure`` gives IPython its PNG); elsewhere call ``fig.savefig("out.png")``.

Images are uint8 ``(N, H, W, C)`` with C = 1 (grey) or 3 (RGB), as ``cnnlab.data`` returns
them; probabilities are ``(N, K)``; class names are a list of K strings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.ticker import MaxNLocator

from cnnlab.data.preview import plot_dataset_grid  # noqa: F401  (one implementation, re-exported)
from cnnlab.errors import CnnlabError
from cnnlab.insight.internals import filter_images
from cnnlab.scratch.figure import Figure
from cnnlab.scratch.images import tile

__all__ = [
    "plot_confidence_histograms",
    "plot_confusion_matrix",
    "plot_dataset_grid",
    "plot_errors_per_class",
    "plot_feature_maps",
    "plot_filters",
    "plot_history",
    "plot_image_probabilities",
    "plot_predictions",
    "plot_top_losses",
    "plot_wrong_predictions",
]

# Past this many classes a confusion-matrix cell is too small for its count to be legible.
MAX_ANNOTATED_CLASSES = 20
WRONG = "tab:red"
RIGHT = "tab:green"
# Grey patches can be white, so grey grids pad with NaN, drawn in a colour no patch has.
GREY_WITH_PADDING = colormaps["gray"].with_extremes(bad="#b7cde8")


# --------------------------------------------------------------------------- helpers


def _show_image(ax, image: np.ndarray) -> None:
    """uint8 images on their 0..255 scale; float images on 0..1. Grey NaN (padding) is pale blue."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        vmax = 255 if img.dtype == np.uint8 else 1
        ax.imshow(img, cmap=GREY_WITH_PADDING, vmin=0, vmax=vmax, interpolation="nearest")
    else:
        ax.imshow(img, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _image_grid(n: int, ncols: int, cell: float = 1.8, title_lines: int = 1):
    """A Figure with exactly ``n`` image axes on a grid of ``ncols`` columns (spares removed)."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(ncols * cell, nrows * (cell + 0.2 * title_lines)))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        fig.delaxes(ax)
    hspace = 0.15 + 0.2 * title_lines
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.92, wspace=0.1, hspace=hspace)
    return fig, axes[:n]


def _empty(message: str) -> Figure:
    fig = Figure(figsize=(5, 1.2))
    ax = fig.subplots()
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.axis("off")
    return fig


def _check_images(images: np.ndarray, n: int | None = None) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise CnnlabError(f"images must be (N, H, W, C) with C = 1 or 3, got shape {images.shape}")
    if n is not None and len(images) != n:
        raise CnnlabError(f"got {len(images)} images for {n} labels; pass one image per label")
    return images


def _label_ticks(ax, classes: Sequence[str], axis: str, max_labels: int = 40) -> None:
    k = len(classes)
    step = max(1, math.ceil(k / max_labels))
    ticks = np.arange(0, k, step)
    labels = [classes[i] for i in ticks]
    fontsize = 9 if k <= 20 else 6
    if axis == "x":
        ax.set_xticks(ticks, labels, rotation=90 if k > 10 else 45, fontsize=fontsize)
    else:
        ax.set_yticks(ticks, labels, fontsize=fontsize)


# --------------------------------------------------------------------------- training


def plot_history(history) -> Figure:
    """Accuracy and loss per epoch, training vs validation: two axes side by side.

    ``history`` is what ``fit`` returns (a History), a list of rows with ``epoch``, ``loss``,
    ``accuracy`` and optionally ``val_loss``, ``val_accuracy`` (``run.history``), or Keras'
    layout, a dict of per-epoch lists (``History.history``). Missing or NaN values are left out.
    """
    history = _history_rows(history)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    for ax, key, title in ((ax_acc, "accuracy", "Accuracy"), (ax_loss, "loss", "Loss")):
        for prefix, label, style in (("", "training", "-o"), ("val_", "validation", "-s")):
            pts = [
                (e, float(row[prefix + key]))
                for e, row in zip(epochs, history, strict=True)
                if row.get(prefix + key) is not None and not math.isnan(float(row[prefix + key]))
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, style, label=label, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    return fig


def _history_rows(history) -> list[Mapping[str, float]]:
    if isinstance(getattr(history, "epochs", None), list):  # cnnlab.train.History
        return history.epochs
    if isinstance(history, Mapping):  # {"loss": [...], "accuracy": [...], ...}
        n = max((len(v) for v in history.values()), default=0)
        return [{k: v[i] for k, v in history.items() if i < len(v)} for i in range(n)]
    if isinstance(history, Sequence) and all(isinstance(row, Mapping) for row in history):
        return list(history)
    raise CnnlabError(f"history of type {type(history).__name__} is not fit()'s History, a list of per-epoch "
                      "dicts or a dict of per-epoch lists")


# --------------------------------------------------------------------------- error analysis


def plot_confusion_matrix(
    cm: np.ndarray, classes: Sequence[str], *, normalize: bool = False, title: str = "Confusion matrix"
) -> Figure:
    """Heatmap of a confusion matrix (rows actual, columns predicted) with a colour bar.

    Counts (or row fractions with ``normalize``) are written in the cells up to
    ``MAX_ANNOTATED_CLASSES`` classes; past that the cells are too small and only colour shows.
    Returns a figure with two axes: the heatmap and the colour bar.
    """
    cm = np.asarray(cm)
    k = cm.shape[0]
    if cm.shape != (k, k) or len(classes) != k:
        raise CnnlabError(f"confusion matrix {cm.shape} does not match {len(classes)} class names")
    values = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    size = min(max(5.0, 0.45 * k + 2), 16.0)
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(values, cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    _label_ticks(ax, classes, "x")
    _label_ticks(ax, classes, "y")
    if k <= MAX_ANNOTATED_CLASSES:
        threshold = values.max() / 2 if values.size else 0
        for i in range(k):
            for j in range(k):
                text = f"{values[i, j]:.2f}" if normalize else str(int(values[i, j]))
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if values[i, j] > threshold else "black")
    return fig


def plot_errors_per_class(cm: np.ndarray, classes: Sequence[str]) -> Figure:
    """Bar chart of the number of wrong predictions per actual class (one axes)."""
    cm = np.asarray(cm)
    errors = cm.sum(axis=1) - np.diag(cm)
    k = len(classes)
    fig = Figure(figsize=(min(max(6.0, 0.25 * k), 18.0), 3.8), layout="constrained")
    ax = fig.subplots()
    ax.bar(np.arange(k), errors, color=WRONG)
    _label_ticks(ax, classes, "x")
    ax.set_xlabel("actual class")
    ax.set_ylabel("wrong predictions")
    ax.set_title(f"Errors per class ({int(errors.sum())} in all)")
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_confidence_histograms(probs: np.ndarray, labels: np.ndarray, *, bins: int = 20) -> Figure:
    """Normalised histograms of the top probability, for wrong predictions and for all,
    overlaid in one axes: a well-calibrated model is less sure when it is wrong."""
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    top = probs.max(axis=1)
    wrong = probs.argmax(axis=1) != labels
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    edges = np.linspace(1.0 / max(probs.shape[1], 1), 1.0, bins + 1) if probs.size else bins
    ax.hist(top, bins=edges, density=True, alpha=0.5, label=f"all ({len(top)})", color="tab:blue")
    if wrong.any():
        ax.hist(top[wrong], bins=edges, density=True, alpha=0.5, label=f"wrong ({int(wrong.sum())})",
                color=WRONG)
    ax.set_xlabel("probability of the predicted class")
    ax.set_ylabel("density")
    ax.set_title("Confidence: wrong vs all predictions")
    ax.legend()
    return fig


# --------------------------------------------------------------------------- image grids


def _prediction_title(classes, pred, true, pred_prob=None, true_prob=None, loss=None) -> str:
    if pred_prob is None:
        return f"{classes[pred]} ({classes[true]})"
    text = f"{classes[pred]} {pred_prob:.2f}\n({classes[true]} {true_prob:.2f})"
    return text if loss is None else f"{text}\nloss {loss:.2f}"


def plot_predictions(
    images: np.ndarray,
    preds: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    *,
    probs: np.ndarray | None = None,
    max_images: int = 25,
    ncols: int = 5,
    title: str | None = None,
) -> Figure:
    """A grid of images titled ``pred (true)``, red when wrong, green when right.

    With ``probs`` ``(N, K)`` each title also shows the predicted class's probability and
    the actual class's: ``7 0.91 (2 0.05)``. Shows the first ``max_images``; one axes each.
    """
    labels = np.asarray(labels)
    preds = np.asarray(preds)
    images = _check_images(images, len(labels))
    n = min(len(labels), max_images)
    if n == 0:
        return _empty("no images to show")
    lines = 1 if probs is None else 2
    fig, axes = _image_grid(n, ncols, title_lines=lines)
    for i, ax in enumerate(axes):
        p, t = int(preds[i]), int(labels[i])
        pp, tp = (None, None) if probs is None else (float(probs[i, p]), float(probs[i, t]))
        _show_image(ax, images[i])
        ax.set_title(_prediction_title(classes, p, t, pp, tp), fontsize=9, color=RIGHT if p == t else WRONG)
    if title:
        fig.suptitle(title)
    return fig


def plot_wrong_predictions(
    images: np.ndarray,
    probs: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    *,
    max_images: int = 25,
    ncols: int = 5,
) -> Figure:
    """The first ``max_images`` wrongly classified images, titled ``pred p (true p)``."""
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    preds = probs.argmax(axis=1)
    idx = np.flatnonzero(preds != labels)[:max_images]
    if len(idx) == 0:
        return _empty("no wrong predictions")
    return plot_predictions(np.asarray(images)[idx], preds[idx], labels[idx], classes, probs=probs[idx],
                            max_images=max_images, ncols=ncols)


def plot_top_losses(
    images: np.ndarray, losses: Sequence, classes: Sequence[str], *, ncols: int = 5
) -> Figure:
    """The images of ``losses`` (:class:`cnnlab.insight.metrics.TopLoss`, indices into ``images``),
    titled with the predicted class and its probability, the actual class and its
    probability, and the loss."""
    if not losses:
        return _empty("no losses to show")
    images = _check_images(images)
    fig, axes = _image_grid(len(losses), ncols, title_lines=3)
    for ax, t in zip(axes, losses, strict=True):
        _show_image(ax, images[t.index])
        text = _prediction_title(classes, t.predicted, t.actual, t.predicted_prob, t.actual_prob, t.loss)
        ax.set_title(text, fontsize=9, color=RIGHT if t.predicted == t.actual else WRONG)
    return fig


def plot_image_probabilities(
    images: np.ndarray, probs: np.ndarray, classes: Sequence[str], *, top: int = 10,
    titles: Sequence[str] | None = None,
) -> Figure:
    """Each image beside a horizontal bar chart of its ``top`` class probabilities.

    ``images`` is one ``(H, W, C)`` image or a batch ``(N, H, W, C)``; ``probs`` is ``(K,)``
    or ``(N, K)``. Two axes per image, one row per image.
    """
    images = np.asarray(images)
    probs = np.asarray(probs, dtype=np.float64)
    if images.ndim == 3:
        images, probs = images[None], probs.reshape(1, -1)
    images = _check_images(images, len(probs))
    k = min(top, probs.shape[1])
    fig = Figure(figsize=(8, 2.4 * len(images) + 0.2 * k * len(images) / 2), layout="constrained")
    axes = fig.subplots(len(images), 2, squeeze=False, width_ratios=[1, 1.6])
    for i, (ax_img, ax_bar) in enumerate(axes):
        _show_image(ax_img, images[i])
        if titles is not None:
            ax_img.set_title(str(titles[i]), fontsize=8)
        order = np.argsort(-probs[i], kind="stable")[:k]
        colours = ["tab:blue"] + ["tab:gray"] * (k - 1)
        ax_bar.barh(np.arange(k), probs[i][order], color=colours)
        ax_bar.set_yticks(np.arange(k), [str(classes[c]) for c in order], fontsize=8)
        ax_bar.invert_yaxis()
        ax_bar.set_xlim(0, 1)
        ax_bar.set_xlabel("probability")
        for y, c in enumerate(order):
            ax_bar.text(min(probs[i][c] + 0.01, 0.85), y, f"{probs[i][c]:.3f}", va="center", fontsize=7)
    return fig


# --------------------------------------------------------------------------- inside the network


def plot_filters(
    weights: np.ndarray, *, per_filter: bool = False, title: str | None = None, max_patches: int = 1024
) -> Figure:
    """Learned filters ``(out, in, kh, kw)`` tiled in a square grid with padding (one axes).

    Three input channels are shown as colour patches, anything else as one grey patch per
    2-D kernel (at most ``max_patches``, a note in the title says when some are left out).
    """
    patches = filter_images(weights, per_filter=per_filter)
    shown = patches[:max_patches]
    # Colour patches pad with white (as vis_square); grey ones with NaN, drawn pale blue.
    grid = tile(shown, padding=1, pad_value=1.0 if shown.ndim == 4 else np.nan)
    fig = _square_figure(grid)
    ax = fig.subplots()
    _show_image(ax, grid)
    w = np.asarray(weights)
    text = title or f"{w.shape[0]} filters of {w.shape[1]}×{w.shape[2]}×{w.shape[3]}"
    if len(shown) < len(patches):
        text += f" (first {len(shown)} of {len(patches)} kernels)"
    ax.set_title(text, fontsize=10)
    return fig


def _square_figure(grid: np.ndarray) -> Figure:
    """A one-axes figure sized to a tiled grid: about 12 pixels (at 80 dpi) per grid pixel
    for small grids, at most 6 inches wide."""
    width = min(6.0, max(2.5, 0.15 * grid.shape[1]))
    return Figure(figsize=(width, width * grid.shape[0] / grid.shape[1] + 0.4), layout="constrained")


def plot_feature_maps(
    maps: np.ndarray, *, title: str | None = None, per_map: bool = False, max_maps: int = 256
) -> Figure:
    """The feature maps ``(C, H, W)`` of one layer for one image, tiled in a square grid
    (one axes). Scaled to [0, 1] together (``per_map=True``: each on its own)."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim == 4 and len(maps) == 1:
        maps = maps[0]
    if maps.ndim == 1:  # a dense layer: one value per unit, show as 1×1 maps
        maps = maps[:, None, None]
    if maps.ndim != 3:
        raise CnnlabError(f"feature maps must be (C, H, W) for one image, got shape {maps.shape}")
    c = len(maps)
    maps = maps[:max_maps]
    axes = (1, 2) if per_map else None
    lo = maps.min(axis=axes, keepdims=True)
    span = maps.max(axis=axes, keepdims=True) - lo
    scaled = np.divide(maps - lo, span, out=np.zeros_like(maps), where=span > 0)
    grid = tile(scaled, padding=1, pad_value=np.nan)  # NaN padding draws as background
    fig = _square_figure(grid)
    ax = fig.subplots()
    ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    text = title or f"{c} feature maps of {maps.shape[1]}×{maps.shape[2]}"
    if c > len(maps):
        text += f" (first {len(maps)} of {c})"
    ax.set_title(text, fontsize=10)
    return fig
