"""The evaluate/predict/activations/report/filters commands, end to end on a real tiny run.

The run is made the way a user makes one: a folder dataset of 10x10 PNGs (bars, dots,
rings) trained for two epochs by `cnnlab train` with a tiny spec model. The user cache
points into a temporary folder so nothing outside it is written.
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

SPEC = "conv4k3-relu,maxpool2,conv6k3-relu,flatten"


def _shapes_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(["bar", "dot", "ring"]):
        (root / name).mkdir(parents=True)
        for i in range(15):
            img = rng.integers(0, 60, (10, 10), dtype=np.uint8)
            if c == 0:
                img[:, 4:6] = 255
            elif c == 1:
                img[4:6, 4:6] = 255
            else:
                img[2, 2:8] = img[7, 2:8] = img[2:8, 2] = img[2:8, 7] = 255
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(base / "cache"))
        data = _shapes_folder(base / "shapes")
        run = base / "run"
        rc = main(["train", "--data", f"folder:{data}", "--model", SPEC, "--epochs", "2", "--batch-size", "8",
                   "--out", str(run), "--quiet", "--offline", "--no-report"])
        assert rc == 0
        yield {"base": base, "run": run, "data": data}


@pytest.fixture
def run_dir(env) -> Path:
    return env["run"]


def test_evaluate_prints_metrics_and_saves_them(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--pairs", "2"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "per class:" in out and "most confused" in out
    for name in ("bar", "dot", "ring"):
        assert name in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["per_class"]) == 3 and "confusion_matrix" in metrics
    assert metrics["epochs"] == 2  # what training wrote is kept


def test_predict_converts_any_image(run_dir, env, capsys):
    photo = env["base"] / "photo.jpg"
    rgb = np.zeros((40, 30, 3), np.uint8)
    rgb[:, 12:18] = 255  # a bar, big and in colour
    Image.fromarray(rgb).save(photo)
    grey = env["data"] / "dot" / "0.png"
    out_png = env["base"] / "probs.png"
    assert main(["predict", str(run_dir), str(photo), str(grey), "--top", "2", "--out", str(out_png)]) == 0
    out = capsys.readouterr().out
    assert "RGB -> grey" in out and "resized 30x40 -> 10x10" in out
    assert out.count("  1. ") == 2 and out.count("  2. ") == 2 and "  3. " not in out
    with Image.open(out_png) as img:
        assert img.width > 100


def test_predict_refuses_what_is_not_an_image(run_dir, env, capsys):
    text = env["base"] / "notes.txt"
    text.write_text("hello")
    assert main(["predict", str(run_dir), str(text)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cnnlab predict: error:") and "not a readable image" in err and "\n" not in err
    assert main(["predict", str(run_dir), str(env["base"] / "missing.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_activations_lists_layers_and_draws_maps(run_dir, env, capsys):
    image = str(env["data"] / "ring" / "0.png")
    assert main(["activations", str(run_dir), image]) == 0
    out = capsys.readouterr().out
    assert "Conv2d" in out and "(4, 8, 8)" in out and "--layer" in out
    maps = env["base"] / "maps.png"
    assert main(["activations", str(run_dir), image, "--layer", "0", "--out", str(maps)]) == 0
    assert "output (4, 8, 8)" in capsys.readouterr().out
    with Image.open(maps) as img:
        img.load()
    assert main(["activations", str(run_dir), image, "--layer", "conv9"]) == 2
    err = capsys.readouterr().err
    assert "no layer 'conv9'" in err and "0 (Conv2d)" in err


def test_report_and_filters_commands(run_dir, env, capsys):
    html = env["base"] / "r.html"
    assert main(["report", str(run_dir), "--out", str(html)]) == 0
    assert f"wrote {html}" in capsys.readouterr().out
    text = html.read_text()
    for section in ("config", "metrics", "confusion", "top-losses", "filters", "activations"):
        assert f'<section id="{section}">' in text
    page = env["base"] / "f.html"
    assert main(["filters", str(run_dir), "--layer", "3", "--out", str(page)]) == 0
    assert "All 6 filters" in page.read_text()
    assert main(["filters", str(run_dir), "--layer", "1"]) == 2
    assert "not a Conv2d; pick one of: 0, 3" in capsys.readouterr().err


def test_report_when_dataset_is_gone(run_dir, env, capsys):
    moved = env["base"] / "moved"
    shutil.copytree(run_dir, moved)
    config = json.loads((moved / "config.json").read_text())
    config["data"] = f"folder:{env['base'] / 'no-such-folder'}"
    (moved / "config.json").write_text(json.dumps(config))
    assert main(["report", str(moved)]) == 0
    text = (moved / "report.html").read_text()
    assert "Per-example sections" in text and "no-such-folder" in text
    assert '<section id="per-class">' in text  # from metrics.json
    assert main(["evaluate", str(moved)]) == 2
    assert "no-such-folder" in capsys.readouterr().err


def test_not_a_run_and_interrupted_run(env, capsys):
    empty = env["base"] / "empty"
    empty.mkdir()
    assert main(["evaluate", str(empty)]) == 2
    assert "no config.json" in capsys.readouterr().err
    interrupted = env["base"] / "interrupted"
    interrupted.mkdir()
    shutil.copy(env["run"] / "config.json", interrupted / "config.json")
    assert main(["report", str(interrupted)]) == 2
    assert "no weights" in capsys.readouterr().err
    assert not (interrupted / "report.html").exists()


def test_command_line_exits_2_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "report", str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("cnnlab report: error:") and "Traceback" not in proc.stderr
