"""The embedding map: penultimate features, PCA against scikit-learn, t-SNE, UMAP's missing
extra, the cached run map, and sprite sheets of any image size and of many images."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.insight import embedding as emb
from cnnlab.insight.embedding import (
    embed,
    pca_2d,
    penultimate_features,
    project,
    sprite_sheet,
    sprite_thumb,
)


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 7), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(7, 3))


def test_penultimate_features_are_the_last_linear_layers_input():
    model = _net().train()  # dropout on: features must still come from eval mode
    x = torch.randn((50, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    feats, preds = penultimate_features(model, x, batch_size=16)
    with torch.no_grad():
        model.eval()
        expected = model[:6](x)
        logits = model(x)
    model.train()
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-6, atol=1e-6)
    assert np.array_equal(preds, logits.argmax(1).numpy())
    assert all(m.training for m in model.modules())
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_penultimate_features_preprocess_a_batch_at_a_time():
    model = _net()
    raw = np.random.default_rng(0).integers(0, 256, (30, 8, 8, 1), dtype=np.uint8)
    seen = []

    def prep(batch):
        seen.append(len(batch))
        return torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255

    feats, _ = penultimate_features(model, raw, preprocess=prep, batch_size=8)
    direct, _ = penultimate_features(model, prep(raw))
    assert seen[:-1] == [8, 8, 8, 6]
    np.testing.assert_allclose(feats, direct, rtol=1e-6, atol=1e-6)


def test_a_network_without_linear_layer_maps_its_last_conv_blocks_pooled_output():
    """SqueezeNet's way: a 1x1 conv classifier, ReLU, global pool. The features are the last
    conv block's output (the classifier conv's input), averaged over H and W."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 5, 3), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(5, 3, 1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn((20, 1, 8, 8), generator=torch.Generator().manual_seed(2))
    feats, preds = penultimate_features(model, x, batch_size=8)
    with torch.no_grad():
        expected = model[:2](x).mean((2, 3))
        logits = model.eval()(x)
    assert feats.shape == (20, 5)
    np.testing.assert_allclose(feats, expected.numpy(), rtol=1e-6, atol=1e-6)
    assert np.array_equal(preds, logits.argmax(1).numpy())
    with pytest.raises(CnnlabError, match="has no nn.Linear or nn.Conv2d layer") as err:
        penultimate_features(nn.Sequential(nn.Flatten()), torch.zeros((2, 1, 8, 8)))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("width", [20, 700])  # the exact path and the randomised one
def test_pca_equals_scikit_learns_up_to_sign(width):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, width)) * np.linspace(3, 0.1, width) + rng.normal(size=width)
    x[:, :2] *= (4.0, 2.5)  # two clearly leading directions
    ours = pca_2d(x.astype(np.float32))
    ref = PCA(n_components=2, svd_solver="full").fit_transform(x)
    for axis in range(2):
        sign = np.sign(ours[:, axis] @ ref[:, axis])
        np.testing.assert_allclose(ours[:, axis] * sign, ref[:, axis], rtol=1e-3, atol=1e-3 * np.abs(ref).max())


def test_tsne_runs_seeded_on_a_small_set():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 10)) * 10
    labels = np.repeat(np.arange(3), 20)
    x = centres[labels] + rng.normal(size=(60, 10))
    a = project(x, method="tsne", seed=1)
    b = project(x, method="tsne", seed=1)
    assert a.shape == (60, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    # the three clusters stay apart: each point's nearest neighbour has its label
    d = ((a[:, None] - a[None]) ** 2).sum(-1) + np.eye(60) * 1e9
    assert (labels[d.argmin(1)] == labels).mean() > 0.95


def test_umap_without_the_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap -> ImportError
    with pytest.raises(CnnlabError) as err:
        project(np.random.default_rng(0).normal(size=(20, 4)), method="umap")
    assert str(err.value) == "UMAP needs the 'explain' extra: pip install 'cnnlab[explain]'"


@pytest.mark.slow
def test_umap_maps_when_installed():
    pytest.importorskip("umap")
    x = np.random.default_rng(0).normal(size=(60, 5))
    assert project(x, method="umap", seed=0).shape == (60, 2)


def test_embed_returns_labels_predictions_and_the_wrong_mask():
    model = _net()
    x = torch.randn((40, 1, 8, 8), generator=torch.Generator().manual_seed(2))
    labels = np.arange(40) % 3
    result = embed(model, x, labels, method="pca")
    feats, preds = penultimate_features(model, x)
    np.testing.assert_allclose(result.coords, pca_2d(feats), rtol=1e-6)
    assert np.array_equal(result.predictions, preds)
    assert np.array_equal(result.wrong, preds != labels)
    assert np.array_equal(result.indices, np.arange(40))
    with pytest.raises(CnnlabError, match="method 'isomap' is not one of pca, tsne, umap"):
        embed(model, x, labels, method="isomap")
    with pytest.raises(CnnlabError, match="40 images but labels of shape"):
        embed(model, x, labels[:5])


# --------------------------------------------------------------------------- sprite sheets


def test_sprite_sheet_letterboxes_images_of_any_size_and_aspect():
    wide = np.full((10, 20, 3), 200, np.uint8)  # landscape
    tall = np.full((30, 6), 90, np.uint8)  # portrait, grey: becomes RGB beside colour images
    small = np.full((4, 4, 3), 30, np.uint8)
    result = sprite_sheet([wide, tall, small], thumb=10, background=7)
    assert result.thumb == 10
    assert result.sheet.shape == (20, 20, 3)  # ceil(sqrt(3)) = 2 cells a side, square
    np.testing.assert_array_equal(result.cells, [[0, 2, 10, 5], [10 + 4, 0, 2, 10], [0, 10, 10, 10]])
    for i, value in enumerate((200, 90, 30)):
        x, y, w, h = result.cells[i]
        assert (result.sheet[y:y + h, x:x + w] == value).all()
        cell = result.sheet[(i // 2) * 10:(i // 2) * 10 + 10, (i % 2) * 10:(i % 2) * 10 + 10]
        assert (cell == value).sum() == w * h * 3  # everything else is background
    assert (result.sheet[10:20, 10:20] == 7).all()  # the unused fourth cell


def test_sprite_sheet_matches_pillow_resizing_for_an_array():
    from PIL import Image

    images = np.random.default_rng(0).integers(0, 256, (5, 12, 18), dtype=np.uint8)
    result = sprite_sheet(images, thumb=9)
    assert result.sheet.shape == (27, 27, 1)
    x, y, w, h = result.cells[4]
    assert (w, h) == (9, 6)
    ref = np.asarray(Image.fromarray(images[4]).resize((9, 6), Image.BILINEAR), dtype=np.int16)
    assert np.abs(result.sheet[y:y + h, x:x + w, 0].astype(np.int16) - ref).max() <= 2


def test_sprite_sheet_for_many_images_stays_within_8192_pixels():
    assert sprite_thumb(100_000) == 25  # 317 cells a side
    assert sprite_thumb(10, thumb=48) == 48
    with pytest.raises(CnnlabError, match="cannot fit"):
        sprite_thumb(8193**2)
    images = np.random.default_rng(0).integers(0, 256, (70_000, 6, 4), dtype=np.uint8)
    result = sprite_sheet(images)  # default 64 px cells would need 265 * 64 = 16,960 px
    side = result.sheet.shape[0]
    assert result.sheet.shape[:2] == (side, side) and side <= 8192
    assert result.thumb == 8192 // 265
    assert result.cells[:, 0].max() + result.cells[:, 2].max() <= side


# --------------------------------------------------------------------------- a run's cached map


def test_run_embedding_is_cached_and_invalidated_by_a_new_checkpoint(tiny_run, monkeypatch, tmp_path):
    import os

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the dataset's parsed cache, if any, goes here

    first = emb.run_embedding(tiny_run, method="pca")
    cache = tiny_run / "embedding-pca.npz"
    assert cache.is_file()
    calls = []
    original = emb.embed
    monkeypatch.setattr(emb, "embed", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = emb.run_embedding(tiny_run, method="pca")
    assert not calls
    np.testing.assert_array_equal(again.coords, first.coords)
    np.testing.assert_array_equal(again.wrong, first.wrong)
    weights = tiny_run / "best.pt"
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a newer checkpoint
    emb.run_embedding(tiny_run, method="pca")
    assert calls == [1]
    limited = emb.run_embedding(tiny_run, method="pca", limit=5)
    assert len(limited.coords) == 5 and calls == [1, 1]
    assert len(np.unique(limited.indices)) == 5
    assert not list(tiny_run.glob(".embedding-*"))  # no temporary files left behind


# --------------------------------------------------------------------------- figures


def test_embedding_figure_colours_classes_and_crosses_out_the_wrong():
    from cnnlab.report.plots_insight import OKABE_ITO, class_style, plot_embedding

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    preds = labels.copy()
    preds[[0, 15]] = [1, 2]
    e = emb.Embedding(coords=rng.normal(size=(30, 2)), labels=labels, predictions=preds, method="tsne",
                      indices=np.arange(30))
    ax = plot_embedding(e, classes=["a", "b", "c"]).axes[0]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["a", "b", "c", "wrong (2)"]
    crosses = ax.collections[-1].get_offsets()
    np.testing.assert_allclose(crosses, e.coords[[0, 15]])
    assert {class_style(k)[0] for k in range(7)} <= set(OKABE_ITO)
    assert len({class_style(k)[0] for k in range(10)}) == 10  # MNIST's ten classes: ten colours
    assert class_style(0)[0] == class_style(10)[0] and class_style(0)[1] != class_style(10)[1]
    many = emb.Embedding(coords=rng.normal(size=(200, 2)), labels=np.arange(200) % 100,
                         predictions=np.arange(200) % 100, method="pca", indices=np.arange(200))
    fig = plot_embedding(many)
    assert fig.axes[0].get_legend() is None and "100 classes" in fig.axes[0].get_title()
    import io

    fig.savefig(io.BytesIO(), format="png")  # lays out without warnings


def test_feature_visualization_figure_has_a_row_per_channel():
    from cnnlab.report.plots_insight import plot_feature_visualizations

    vis = np.random.default_rng(0).random((3, 8, 8, 3), dtype=np.float32)
    examples = np.zeros((3, 4, 10, 10, 1), np.uint8)
    fig = plot_feature_visualizations(vis, labels=["a", "b", "c"], examples=examples)
    assert len(fig.axes) == 3 * 5
    assert len(plot_feature_visualizations(vis).axes) == 3
    with pytest.raises(CnnlabError, match="2 rows of examples for 3"):
        plot_feature_visualizations(vis, examples=examples[:2])


def test_pca_of_identical_rows_is_all_zeros_without_a_warning():
    # scikit-learn divides by a total variance of 0 there (a RuntimeWarning, an error under pytest's settings).
    assert (pca_2d(np.ones((5, 3), dtype=np.float32)) == 0).all()
    assert pca_2d(np.arange(5, dtype=np.float32)[:, None]).shape == (5, 2)  # one feature: a zero second axis
