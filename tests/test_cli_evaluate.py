"""The evaluate/predict/activations/report/filters commands, end to end on a real tiny run.

The run is made the way a user makes one (``tiny_run_env`` in tests/conftest.py): a folder
dataset of 10x10 PNGs (bars, dots, rings) trained for two epochs by `cnnlab train` with a
tiny spec model. The user cache points into a temporary folder so nothing outside it is written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main


@pytest.fixture
def run_dir(run_env) -> Path:
    return run_env["run"]


def test_evaluate_prints_metrics_and_saves_them(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--pairs", "2"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "per class:" in out and "most confused" in out
    for name in ("bar", "dot", "ring"):
        assert name in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["per_class"]) == 3 and "confusion_matrix" in metrics
    assert metrics["epochs"] == 2  # what training wrote is kept


def test_predict_converts_any_image(run_dir, run_env, capsys):
    photo = run_env["base"] / "photo.jpg"
    rgb = np.zeros((40, 30, 3), np.uint8)
    rgb[:, 12:18] = 255  # a bar, big and in colour
    Image.fromarray(rgb).save(photo)
    grey = run_env["data"] / "dot" / "0.png"
    out_png = run_env["base"] / "probs.png"
    assert main(["predict", str(run_dir), str(photo), str(grey), "--top", "2", "--out", str(out_png)]) == 0
    out = capsys.readouterr().out
    assert "RGB -> grey" in out and "resized 30x40 -> 10x10" in out
    assert out.count("  1. ") == 2 and out.count("  2. ") == 2 and "  3. " not in out
    with Image.open(out_png) as img:
        assert img.width > 100


def test_predict_refuses_what_is_not_an_image(run_dir, run_env, capsys):
    text = run_env["base"] / "notes.txt"
    text.write_text("hello")
    assert main(["predict", str(run_dir), str(text)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab predict: error:") and "not a readable image" in err and "\n" not in err
    assert main(["predict", str(run_dir), str(run_env["base"] / "missing.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_activations_lists_layers_and_draws_maps(run_dir, run_env, capsys):
    image = str(run_env["data"] / "ring" / "0.png")
    assert main(["activations", str(run_dir), image]) == 0
    out = capsys.readouterr().out
    assert "Conv2d" in out and "(4, 8, 8)" in out and "--layer" in out
    maps = run_env["base"] / "maps.png"
    assert main(["activations", str(run_dir), image, "--layer", "0", "--out", str(maps)]) == 0
    assert "output (4, 8, 8)" in capsys.readouterr().out
    with Image.open(maps) as img:
        img.load()
    assert main(["activations", str(run_dir), image, "--layer", "conv9"]) == 2
    err = capsys.readouterr().err
    assert "no layer 'conv9'" in err and "0 (Conv2d)" in err


def test_report_and_filters_commands(run_dir, run_env, capsys):
    html = run_env["base"] / "r.html"
    assert main(["report", str(run_dir), "--out", str(html)]) == 0
    assert f"wrote {html}" in capsys.readouterr().out
    text = html.read_text()
    for section in ("config", "metrics", "confusion", "top-losses", "filters", "activations"):
        assert f'<section id="{section}">' in text
    page = run_env["base"] / "f.html"
    assert main(["filters", str(run_dir), "--layer", "3", "--out", str(page)]) == 0
    assert "All 6 filters" in page.read_text()
    assert main(["filters", str(run_dir), "--layer", "1"]) == 2
    assert "not a Conv2d; pick one of: 0, 3" in capsys.readouterr().err


def test_report_when_dataset_is_gone(run_dir, run_env, capsys):
    moved = run_env["base"] / "moved"
    shutil.copytree(run_dir, moved)
    config = json.loads((moved / "config.json").read_text())
    config["data"] = f"folder:{run_env['base'] / 'no-such-folder'}"
    (moved / "config.json").write_text(json.dumps(config))
    assert main(["report", str(moved)]) == 0
    text = (moved / "report.html").read_text()
    assert "Per-example sections" in text and "no-such-folder" in text
    assert '<section id="per-class">' in text  # from metrics.json
    assert main(["evaluate", str(moved)]) == 2
    assert "no-such-folder" in capsys.readouterr().err


def test_not_a_run_and_interrupted_run(run_env, capsys):
    empty = run_env["base"] / "empty"
    empty.mkdir()
    assert main(["evaluate", str(empty)]) == 2
    assert "no config.json" in capsys.readouterr().err
    interrupted = run_env["base"] / "interrupted"
    interrupted.mkdir()
    shutil.copy(run_env["run"] / "config.json", interrupted / "config.json")
    assert main(["report", str(interrupted)]) == 2
    assert "no weights" in capsys.readouterr().err
    assert not (interrupted / "report.html").exists()


def test_command_line_exits_2_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "report", str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("cnnlab report: error:") and "Traceback" not in proc.stderr
