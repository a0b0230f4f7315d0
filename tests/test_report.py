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
from cnnlab.models import build
from cnnlab.report.html import ReportOptions, write_filters_page, write_report
from cnnlab.train import runs

SPEC = "conv4k3-relu,maxpool2,conv6k3-relu,flatten"
SECTIONS = ("config", "summary", "curves", "metrics", "per-class", "confusion", "most-confused",
            "top-losses", "wrong", "confidence", "filters", "activations")
PER_EXAMPLE = ("wrong", "confidence")
FAST = ReportOptions(dpi=30, n_activation_images=1, n_top_losses=5, n_wrong=5)  # smaller PNGs, same sections


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
    # curves, confusion + errors, top losses, wrong, confidence, filters, 3 images x (1 + 2 conv layers)
    assert len(images) == 1 + 2 + 1 + 1 + 1 + 1 + 3 * 3
    assert all(img.width > 0 and img.height > 0 for img in images)
    # self-contained: nothing fetched from elsewhere
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)
    assert "<script" not in html and "<link" not in html
    assert "Total params" in html  # cnnlab.models.summary's table
    assert "p(predicted)" in html and "p(actual)" in html
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["n"] == 60 and len(metrics["per_class"]) == 3


def test_report_given_evaluation_and_out(tiny_run, tmp_path):
    from cnnlab.insight.evaluate import evaluate_run

    run = runs.load_run(tiny_run)
    ev = evaluate_run(run)
    out = write_report(tiny_run, evaluation=ev, out=tmp_path / "elsewhere.html", options=FAST)
    assert out.is_file() and not (tiny_run / "report.html").exists()
    assert f"{ev.metrics['accuracy']:.4f}" in out.read_text()


def test_report_without_dataset_renders_saved_metrics(tiny_run, monkeypatch):
    write_report(tiny_run, options=FAST)  # saves metrics.json while the data is there

    def absent(self, download=False):
        raise CnnlabError("dataset 'synthetic' not found in ~/.cache/cnnlab; run with download=True")

    monkeypatch.setattr(runs.Run, "load_data", absent)
    html = write_report(tiny_run, options=FAST).read_text()
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
    html = write_report(tmp_path / "run100", options=FAST).read_text()
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
