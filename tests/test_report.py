"""cnnlab.report: every section is present, embedded images decode, absent data still renders.

The run directories here are made by hand (config.json, history.csv, best.pt) with a tiny
spec model, and the dataset is a small synthetic one patched into ``Run.load_data``, so
the tests are offline and fast.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.errors import CnnlabError
from cnnlab.insight.results import ResultsOptions
from cnnlab.models import build
from cnnlab.report.html import ReportOptions
from cnnlab.reporting import filters_page as write_filters_page
from cnnlab.reporting import report_run
from cnnlab.runs import directory as runs

SPEC = "conv4k3-relu,maxpool2,conv6k3-relu,flatten"
SECTIONS = ("config", "summary", "curves", "metrics", "per-class", "confusion", "most-confused",
            "top-losses", "wrong", "confidence", "filters", "activations", "features", "embedding",
            "why")
PER_EXAMPLE = ("wrong", "confidence")
FAST = {"options": ReportOptions(dpi=30),  # smaller PNGs, same sections
        "collect": ResultsOptions(n_activation_images=1, n_top_losses=5, n_wrong=5, n_feature_channels=2,
                                  feature_steps=4)}


def write_report(run_dir, **kwargs):
    """The whole path from a run directory: collect (insight), then render (report)."""
    fast = kwargs.pop("fast", False)
    return report_run(run_dir, **(FAST if fast else {}), **kwargs)


def make_run(path: Path, *, num_classes: int = 3, n_test: int = 60, shape=(8, 8, 1)) -> SimpleNamespace:
    """A run directory written by hand, and the synthetic dataset it was 'trained' on."""
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build(SPEC, input_shape=shape, num_classes=num_classes)
    classes = [f"class{i}" for i in range(num_classes)]
    config = {"data": "synthetic", "model": SPEC, "input_shape": list(shape), "num_classes": num_classes,
              "classes": classes, "mean": [0.5] * shape[2], "std": [0.25] * shape[2], "train": {"seed": 0}}
    (path / "config.json").write_text(json.dumps(config))
    runs.write_history(path / "history.csv", [
        {"epoch": e, "loss": 1 / e, "accuracy": 1 - 1 / e, "val_loss": 1.2 / e, "val_accuracy": 0.9 - 1 / e,
         "lr": 1e-3, "seconds": 0.1} for e in range(1, 4)])
    torch.save(model.state_dict(), path / "best.pt")
    rng = np.random.default_rng(0)
    test = SimpleNamespace(images=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
                           labels=rng.integers(0, num_classes, n_test).astype(np.int64))
    return SimpleNamespace(train=test, test=test, classes=classes)


@pytest.fixture
def tiny_run(tmp_path, monkeypatch):
    data = make_run(tmp_path / "run")
    monkeypatch.setattr(runs.Run, "load_data", lambda self, download=False: data)
    return tmp_path / "run"


def embedded_images(html: str) -> list[Image.Image]:
    out = []
    for b64 in re.findall(r'src="data:image/png;base64,([^"]+)"', html):
        img = Image.open(io.BytesIO(base64.b64decode(b64, validate=True)))
        img.load()
        out.append(img)
    return out


def section_ids(html: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)">', html)


def test_report_has_every_section_and_images_decode(tiny_run):
    path = write_report(tiny_run)
    assert path == tiny_run / "report.html"
    html = path.read_text()
    assert section_ids(html) == list(SECTIONS)
    images = embedded_images(html)
    # curves, confusion + errors, top losses, wrong, confidence, filters, 3 images x (1 + 2 conv layers),
    # feature visualisation, embedding map, Grad-CAM of the top losses + a layer sweep
    assert len(images) == 1 + 2 + 1 + 1 + 1 + 1 + 3 * 3 + 1 + 1 + 2
    assert (tiny_run / "embedding-pca.npz").is_file()  # the map is cached for the lab and `cnnlab embed`
    # layer 3's map is 1x1: the ReLU after conv 0 (issue 30: Grad-CAM of the rectified output)
    assert "Grad-CAM (layer 1: the rectified output of the last conv layer with a map larger than 1×1)" in html
    assert all(img.width > 0 and img.height > 0 for img in images)
    # self-contained: nothing fetched from elsewhere
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)
    assert "<script" not in html and "<link" not in html
    assert "Total params" in html  # cnnlab.models.summary's table
    assert "p(predicted)" in html and "p(actual)" in html
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["n"] == 60 and len(metrics["per_class"]) == 3


def test_report_given_evaluation_and_out(tiny_run, tmp_path):
    from cnnlab.insight.predictions import evaluate_run

    run = runs.load_run(tiny_run)
    ev = evaluate_run(run)
    out = write_report(tiny_run, evaluation=ev, out=tmp_path / "elsewhere.html", fast=True)
    assert out.is_file() and not (tiny_run / "report.html").exists()
    assert f"{ev.metrics['accuracy']:.4f}" in out.read_text()


def test_report_without_dataset_renders_saved_metrics(tiny_run, monkeypatch):
    write_report(tiny_run, fast=True)  # saves metrics.json while the data is there

    def absent(self, download=False):
        raise CnnlabError("dataset 'synthetic' not found in ~/.cache/cnnlab; run with download=True")

    monkeypatch.setattr(runs.Run, "load_data", absent)
    html = write_report(tiny_run, fast=True).read_text()
    ids = section_ids(html)
    for name in ("metrics", "per-class", "confusion", "most-confused", "top-losses", "filters"):
        assert name in ids
    for name in PER_EXAMPLE:
        assert name not in ids
    assert "Per-example sections" in html and "not found in ~/.cache/cnnlab" in html
    assert "Skipped: the dataset is not available" in html
    embedded_images(html)  # still decode


def test_report_without_dataset_or_metrics(tiny_run, monkeypatch):
    monkeypatch.setattr(runs.Run, "load_data", lambda self, download=False: (_ for _ in ()).throw(
        CnnlabError("dataset gone")))
    html = write_report(tiny_run).read_text()
    assert "No metrics" in html and "dataset gone" in html
    assert not (tiny_run / "metrics.json").exists()


def test_report_for_many_classes_is_truncated(tmp_path, monkeypatch):
    data = make_run(tmp_path / "run100", num_classes=100, n_test=300, shape=(8, 8, 3))
    monkeypatch.setattr(runs.Run, "load_data", lambda self, download=False: data)
    html = write_report(tmp_path / "run100", fast=True).read_text()
    assert "Showing the 30 classes with the lowest F1 of 100" in html
    assert "counts are left out of the cells" in html
    assert html.count("<tr>") < 100  # per-class (30), pairs (20) and top losses (5) are all capped
    embedded_images(html)


def test_interrupted_run_without_weights_is_refused(tiny_run):
    (tiny_run / "best.pt").unlink()
    with pytest.raises(CnnlabError, match="no weights"):
        write_report(tiny_run)
    assert not (tiny_run / "report.html").exists()


def test_not_a_run_directory(tmp_path):
    with pytest.raises(CnnlabError, match="no config.json"):
        write_report(tmp_path)


def test_filters_page(tiny_run, tmp_path):
    path = write_filters_page(tiny_run, layer="3", out=tmp_path / "f.html")
    html = path.read_text()
    assert "All 6 filters" in html
    images = embedded_images(html)
    assert len(images) == 1 + 6  # overview + one per filter
    default = write_filters_page(tiny_run)
    assert default == tiny_run / "filters-0.html"
    with pytest.raises(CnnlabError, match="not a Conv2d; pick one of: 0, 3"):
        write_filters_page(tiny_run, layer="1")
    with pytest.raises(CnnlabError, match="no layer 'nope'"):
        write_filters_page(tiny_run, layer="nope")


def test_report_without_dataset_from_training_summary(tiny_run, monkeypatch):
    # `cnnlab train` alone writes only this summary to metrics.json
    runs.save_metrics(tiny_run, {"test_loss": 0.5, "test_accuracy": 0.8125, "epochs": 3, "seconds": 1.0})
    monkeypatch.setattr(runs.Run, "load_data", lambda self, download=False: (_ for _ in ()).throw(
        CnnlabError("dataset gone")))
    html = write_report(tiny_run).read_text()
    assert "0.8125" in html and "only the summary written by training" in html
    assert "per-class" not in section_ids(html) and "filters" in section_ids(html)


def test_bad_output_path_fails_before_any_work(tiny_run, tmp_path):
    with pytest.raises(CnnlabError, match="does not exist; create it first"):
        write_report(tiny_run, out=tmp_path / "missing" / "r.html")
    with pytest.raises(CnnlabError, match="is a directory"):
        write_report(tiny_run, out=tmp_path)
    assert not (tiny_run / "metrics.json").exists()


# --------------------------------------------------------------------------- report computes nothing

REPORT_DIR = Path(__file__).resolve().parents[1] / "src" / "cnnlab" / "report"
FORBIDDEN = re.compile(r"cnnlab\.[a-z_.]*(train|runs|experiment|evaluate|predictions|step)\b")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (functions, TYPE_CHECKING blocks included)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_report_package_imports_nothing_that_trains_or_evaluates():
    modules = {p.name: imported_modules(p) for p in sorted(REPORT_DIR.glob("*.py"))}
    assert {"html.py", "sections.py", "page.py", "plots.py"} <= modules.keys()
    bad = {name: sorted(m for m in found if FORBIDDEN.search(m) or m.split(".")[0] == "torch")
           for name, found in modules.items()}
    assert bad == {name: [] for name in modules}
    assert FORBIDDEN.search("cnnlab.insight.predictions") and FORBIDDEN.search("cnnlab.runs.directory")  # the check bites


def hand_built_results(tmp_path: Path, *, with_images: bool = True):
    """Results made by hand, as another tool (or a test) would: no run directory, no model."""
    from cnnlab.insight.decisions import DecisionMaps
    from cnnlab.insight.embedding import Embedding
    from cnnlab.insight.featurevis import ChannelVisuals
    from cnnlab.insight.internals import filter_images
    from cnnlab.insight.predictions import compute_metrics, top_losses
    from cnnlab.insight.results import ActivationExample, FilterResults, Predictions, Results

    rng = np.random.default_rng(1)
    classes = ["cat", "dog", "bird"]
    probs = rng.dirichlet(np.ones(3), size=40).astype(np.float32)
    labels = rng.integers(0, 3, 40)
    images = rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    losses = top_losses(probs, labels, k=4)
    wrong = np.flatnonzero(probs.argmax(1) != labels)
    weights = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    return Results(
        run_dir=tmp_path / "hand-made", config={"data": "synthetic", "model": "by hand", "num_classes": 3},
        classes=classes, history=[{"epoch": 1.0, "loss": 1.0, "accuracy": 0.5}, {"epoch": 2.0, "loss": 0.5,
                                                                                 "accuracy": 0.75}],
        model_summary="Total params: 123", metrics=compute_metrics(probs, labels, classes), top_losses=losses,
        top_loss_images=images[[t.index for t in losses]] if with_images else None,
        wrong=Predictions(images=images[wrong[:3]] if with_images else None, probs=probs[wrong[:3]],
                          labels=labels[wrong[:3]], total=len(wrong)),
        predictions=Predictions(images=None, probs=probs, labels=labels, total=40),
        first_filters=FilterResults(layer="conv1", weights=weights, patches=filter_images(weights)),
        activations=[ActivationExample(index=0, image=images[0], maps={"conv1": rng.random((4, 6, 6))},
                                       label=int(labels[0]), predicted=int(probs[0].argmax()),
                                       prob=float(probs[0].max()))] if with_images else None,
        activations_skipped=None if with_images else "the dataset is not available",
        features=ChannelVisuals(layer="conv2", channels=[0, 3], images=rng.random((2, 8, 8, 3), dtype=np.float32),
                                top=np.array([[1, 2], [3, 4]]) if with_images else None,
                                examples=images[[[1, 2], [3, 4]]] if with_images else None),
        embedding=Embedding(coords=rng.normal(size=(40, 2)).astype(np.float32), labels=labels,
                            predictions=probs.argmax(1), method="pca", indices=np.arange(40)) if with_images else None,
        embedding_skipped=None if with_images else "the dataset is not available",
        decisions=DecisionMaps(
            layer="conv1", indices=np.array([t.index for t in losses]), images=images[[t.index for t in losses]],
            labels=np.array([t.actual for t in losses]), predicted=np.array([t.predicted for t in losses]),
            actual_probs=np.array([t.actual_prob for t in losses]),
            predicted_probs=np.array([t.predicted_prob for t in losses]),
            actual_maps=rng.random((4, 8, 8)), predicted_maps=rng.random((4, 8, 8)), sweep_index=losses[0].index,
            sweep={"conv1": rng.random((8, 8)), "conv2": rng.random((8, 8))}) if with_images else None,
        decisions_skipped=None if with_images else "the dataset is not available",
    )


def test_report_renders_hand_built_results_without_running_a_model(tmp_path, monkeypatch):
    from cnnlab.report import render_report
    from cnnlab.report import write_report as write_results

    monkeypatch.setattr(torch.nn.Module, "__call__", lambda *a, **k: pytest.fail("the report ran a model"))
    results = hand_built_results(tmp_path)
    losses = results.top_losses
    html = render_report(results, options=ReportOptions(dpi=30))
    assert section_ids(html) == list(SECTIONS)
    assert f"{results.metrics['accuracy']:.4f}" in html and "Total params: 123" in html
    assert f"The first 3 of {results.wrong.total} wrong predictions" in html
    assert "First-layer filters (conv1)" in html and "test image 0: " in html, re.findall("<h3>.*</h3>", html)
    # curves, confusion + errors, top losses, wrong, confidence, filters, 1 image x (1 + 1 conv layer),
    # feature visualisation, embedding map, Grad-CAM of the top losses + a layer sweep
    assert len(embedded_images(html)) == 1 + 2 + 1 + 1 + 1 + 1 + 2 + 1 + 1 + 2
    assert "Feature visualisation (conv2)" in html and "black × = wrong prediction" in html
    assert (f"Grad-CAM (layer conv1: the rectified output of the last conv layer with a map larger than 1×1) of "
            f"the {len(losses)} largest") in html
    (tmp_path / "hand-made").mkdir()
    path = write_results(results, options=ReportOptions(dpi=30))
    assert path == tmp_path / "hand-made" / "report.html" and section_ids(path.read_text()) == list(SECTIONS)
    without = render_report(hand_built_results(tmp_path, with_images=False), options=ReportOptions(dpi=30))
    assert "wrong" not in section_ids(without) and "The images are skipped" in without
    assert "Skipped: the dataset is not available" in without
    assert "features" in section_ids(without) and "embedding" in section_ids(without)  # with a skip note


def test_report_refuses_a_path_and_names_the_new_way(tiny_run):
    from cnnlab.report import write_filters_page as write_filters
    from cnnlab.report import write_report as write_results

    with pytest.raises(CnnlabError, match=r"computes nothing.*collect_results\(RUN_DIR\).*report_run"):
        write_results(tiny_run)
    with pytest.raises(CnnlabError, match=r"collect_filters\(RUN_DIR\)"):
        write_filters(str(tiny_run))
    assert not (tiny_run / "report.html").exists() and not (tiny_run / "metrics.json").exists()


def test_public_write_report_still_takes_a_run_directory(tiny_run):
    import cnnlab

    assert cnnlab.write_report(tiny_run, **FAST) == tiny_run / "report.html"
    assert json.loads((tiny_run / "metrics.json").read_text())["n"] == 60


def test_a_skipped_section_says_why_with_one_full_stop():
    from cnnlab.report.page import Page

    page = Page(title="t")
    page.skipped("embedding", "Embedding map", "perplexity 30 needs more than 90 images.")
    page.skipped("why", "Why <it> decided", "the dataset is not available")
    html = "\n".join(page.parts)
    assert "Skipped: perplexity 30 needs more than 90 images.</p>" in html
    assert "Skipped: the dataset is not available.</p>" in html and "Why &lt;it&gt; decided" in html
    assert [a for a, _ in page.toc] == ["embedding", "why"]
