"""cnnlab.report.plots: every function returns a Figure with the expected axes; tiling is exact."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure

from cnnlab.errors import CnnlabError
from cnnlab.insight.predictions import confusion_matrix, top_losses
from cnnlab.report import plots

RNG = np.random.default_rng(0)
CLASSES = [f"class{i}" for i in range(4)]
GREY = RNG.integers(0, 256, (30, 8, 8, 1), dtype=np.uint8)
RGB = RNG.integers(0, 256, (30, 6, 6, 3), dtype=np.uint8)
LABELS = RNG.integers(0, 4, 30)
PROBS = RNG.dirichlet(np.ones(4), 30).astype(np.float32)
PREDS = PROBS.argmax(1)


def renders(fig: Figure) -> bool:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=40)
    return buf.getvalue().startswith(b"\x89PNG")


def test_no_pyplot_figures_are_left_open():
    plt = pytest.importorskip("matplotlib.pyplot")
    before = plt.get_fignums()
    plots.plot_history([{"epoch": 1, "loss": 1.0, "accuracy": 0.5}])
    assert plt.get_fignums() == before


def test_plot_history_two_axes_and_missing_validation():
    hist = [{"epoch": e, "loss": 1 / e, "accuracy": 1 - 1 / e, "val_loss": 1.2 / e, "val_accuracy": 0.9 - 1 / e}
            for e in range(1, 5)]
    fig = plots.plot_history(hist)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert [len(ax.get_lines()) for ax in fig.axes] == [2, 2]
    no_val = [{"epoch": 1.0, "loss": 1.0, "accuracy": 0.5, "val_loss": float("nan"), "val_accuracy": float("nan")}]
    fig = plots.plot_history(no_val)
    assert [len(ax.get_lines()) for ax in fig.axes] == [1, 1]
    assert renders(fig)


def test_confusion_matrix_counts_only_when_legible():
    cm = confusion_matrix(LABELS, PREDS, 4)
    fig = plots.plot_confusion_matrix(cm, CLASSES)
    assert len(fig.axes) == 2  # heatmap + colour bar
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 16 and texts[0] == str(cm[0, 0])
    assert renders(fig)
    big = np.random.default_rng(1).integers(0, 5, (30, 30))
    fig = plots.plot_confusion_matrix(big, [str(i) for i in range(30)])
    assert len(fig.axes) == 2 and len(fig.axes[0].texts) == 0
    with pytest.raises(CnnlabError, match="does not match"):
        plots.plot_confusion_matrix(cm, CLASSES[:3])


def test_errors_per_class_and_confidence():
    cm = confusion_matrix(LABELS, PREDS, 4)
    fig = plots.plot_errors_per_class(cm, CLASSES)
    assert len(fig.axes) == 1
    heights = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_array_equal(heights, cm.sum(1) - np.diag(cm))
    fig = plots.plot_confidence_histograms(PROBS, LABELS)
    assert len(fig.axes) == 1 and renders(fig)
    fig = plots.plot_confidence_histograms(np.eye(4)[LABELS], LABELS)  # nothing wrong: one histogram
    assert len(fig.axes) == 1


def test_prediction_grids_titles():
    fig = plots.plot_predictions(GREY, PREDS, LABELS, CLASSES, max_images=7, ncols=3)
    assert len(fig.axes) == 7
    assert fig.axes[0].get_title() == f"{CLASSES[PREDS[0]]} ({CLASSES[LABELS[0]]})"
    wrong = np.flatnonzero(PREDS != LABELS)
    fig = plots.plot_wrong_predictions(RGB, PROBS, LABELS, CLASSES, max_images=5)
    assert len(fig.axes) == min(5, len(wrong))
    i = wrong[0]
    title = fig.axes[0].get_title()
    assert title.startswith(f"{CLASSES[PREDS[i]]} {PROBS[i, PREDS[i]]:.2f}")
    assert f"({CLASSES[LABELS[i]]} {PROBS[i, LABELS[i]]:.2f})" in title
    assert renders(fig)
    fig = plots.plot_wrong_predictions(GREY, np.eye(4)[LABELS], LABELS, CLASSES)
    assert len(fig.axes) == 1 and "no wrong" in fig.axes[0].texts[0].get_text()


def test_top_losses_grid_shows_both_probabilities():
    losses = top_losses(PROBS, LABELS, k=6)
    fig = plots.plot_top_losses(GREY, losses, CLASSES, ncols=4)
    assert len(fig.axes) == 6
    t = losses[0]
    title = fig.axes[0].get_title()
    assert f"{t.predicted_prob:.2f}" in title and f"{t.actual_prob:.2f}" in title and "loss" in title


def test_dataset_grid_is_five_by_five():
    fig = plots.plot_dataset_grid(RGB, LABELS, CLASSES)
    assert len(fig.axes) == 25
    assert fig.axes[3].get_title() == CLASSES[LABELS[3]]
    with pytest.raises(CnnlabError, match=r"\(N, H, W, 1 or 3\) images, got shape"):
        plots.plot_dataset_grid(GREY[..., 0], LABELS, CLASSES)


def test_image_probabilities_two_axes_per_image():
    fig = plots.plot_image_probabilities(GREY[0], PROBS[0], CLASSES, top=3)
    assert len(fig.axes) == 2
    assert len(fig.axes[1].patches) == 3
    fig = plots.plot_image_probabilities(RGB[:3], PROBS[:3], CLASSES)
    assert len(fig.axes) == 6 and renders(fig)


def test_filters_and_feature_maps_one_axes():
    w = np.random.default_rng(2).normal(size=(16, 3, 5, 5)).astype(np.float32)
    fig = plots.plot_filters(w)
    assert len(fig.axes) == 1
    assert fig.axes[0].get_images()[0].get_array().shape == (4 * 6 - 1, 4 * 6 - 1, 3)  # colour
    fig = plots.plot_filters(np.random.default_rng(3).normal(size=(4, 6, 3, 3)))
    assert fig.axes[0].get_images()[0].get_array().ndim == 2  # 24 grey kernels
    fig = plots.plot_feature_maps(np.random.default_rng(4).random((10, 7, 7)))
    assert len(fig.axes) == 1 and renders(fig)
    fig = plots.plot_feature_maps(np.random.default_rng(4).random((1, 300, 2, 2)), max_maps=100)
    assert "first 100 of 300" in fig.axes[0].get_title()


def test_every_plot_shows_as_png_in_a_fresh_ipython():
    # A fresh interpreter where pyplot was never imported, as a new Jupyter kernel is: IPython's display
    # formatter must still turn each figure into image/png (matplotlib's own Figure gives text only there).
    pytest.importorskip("IPython")
    import subprocess
    import sys

    code = """
import sys
import numpy as np
from IPython.core.interactiveshell import InteractiveShell
from cnnlab.data.preview import plot_dataset_grid
from cnnlab.models.pretrained import plot_predictions as plot_photo_predictions
from cnnlab.report import overlay, plots, plots_insight
from cnnlab.scratch.images import gallery

rng = np.random.default_rng(0)
img = rng.integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
probs = rng.dirichlet(np.ones(3), 4)
classes = ["a", "b", "c"]
cm = np.array([[3, 1, 0], [0, 2, 1], [1, 0, 4]])
figures = {
    "history": plots.plot_history([{"epoch": 1, "loss": 1.0, "accuracy": 0.5}]),
    "confusion": plots.plot_confusion_matrix(cm, classes),
    "errors": plots.plot_errors_per_class(cm, classes),
    "predictions": plots.plot_predictions(img, [0, 1, 2, 0], [0, 1, 1, 0], classes),
    "probabilities": plots.plot_image_probabilities(img[:2], probs[:2], classes),
    "feature maps": plots.plot_feature_maps(rng.normal(size=(4, 6, 6))),
    "filters": plots.plot_filters(rng.normal(size=(4, 1, 3, 3))),
    "dataset": plot_dataset_grid(img, [0, 1, 2, 0], classes, n=4),
    "gallery": gallery(img[0, :, :, 0] / 255, {"same": img[0, :, :, 0] / 255}),
    "attributions": overlay.plot_attributions(img[:2], [rng.random((2, 8, 8))], column_titles=["map"]),
    "layer sweep": overlay.plot_layer_sweep(img[0], {"conv": rng.random((8, 8))}),
    "feature visualisations": plots_insight.plot_feature_visualizations(rng.random((2, 8, 8, 3))),
    "photo predictions": plot_photo_predictions([[(0, "cat", 0.9)]]),
}
fmt = InteractiveShell.instance().display_formatter
for name, fig in figures.items():
    data, _ = fmt.format(fig)
    assert data.get("image/png", b"").startswith(b"\\x89PNG"), (name, sorted(data))
assert "matplotlib.pyplot" not in sys.modules
print(len(figures))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "MPLBACKEND": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "13"
