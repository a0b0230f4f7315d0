"""`cnnlab train` end to end on a small MNIST subset from ../shared."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cnnlab.cli import main
from cnnlab.runs.directory import load_checkpoint, load_run

SMALL = ["--data", "mnist", "--train-size", "512", "--batch-size", "64", "--offline", "--quiet"]


@pytest.fixture(autouse=True)
def _data(monkeypatch, datasets_root):
    monkeypatch.setenv("CNNLAB_DATA", str(datasets_root))


def test_train_writes_a_complete_run(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", *SMALL, "--model", "intro-cnn", "--epochs", "2", "--out", str(out), "--no-report"])
    assert code == 0
    assert "run directory:" in capsys.readouterr().out
    for name in ("config.json", "history.csv", "last.pt", "best.pt", "metrics.json"):
        assert (out / name).is_file(), name
    run = load_run(out)
    assert run.config["model"] == "intro-cnn" and run.config["input_shape"] == [28, 28, 1]
    assert run.config["train"]["epochs"] == 2 and len(run.history) == 2
    assert 0.5 < run.metrics["test_accuracy"] <= 1
    model = run.build_model()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 28, 28)).shape == (1, 10)


def test_existing_directory_is_refused_then_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", *SMALL, "--model", "intro-cnn", "--epochs", "1", "--out", str(out), "--no-report"]
    assert main(args) == 0
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"output directory {out} already exists; use --overwrite" in err and "Traceback" not in err
    assert main([*args, "--overwrite"]) == 0


def test_resume_continues_to_the_same_weights(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ["train", *SMALL, "--model", "intro-cnn", "--no-report", "--seed", "3"]
    assert main([*common, "--epochs", "3", "--out", str(straight)]) == 0
    assert main([*common, "--epochs", "1", "--out", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--epochs", "3", "--offline", "--no-report", "--quiet"]) == 0
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(split / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert len(load_run(split).history) == 3


@pytest.mark.parametrize("args,message", [
    (["--model", "mnist-cnnn"], "unknown model 'mnist-cnnn'; known models:"),
    (["--model", "intro-cnn", "--batch-size", "0"], "argument --batch-size: must be at least 1, got '0'"),
    (["--model", "conv32k3-relu,maxpol2,flatten,dense10"], "maxpol2"),
    (["--model", "cifar-cnn", "--data", "mnistt"], "mnistt"),
    (["--recipe", "nope"], "unknown recipe 'nope'"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["train", "--offline", "--quiet", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_ctrl_c_keeps_finished_epochs_and_resume_finishes(tmp_path, datasets_root):
    out = tmp_path / "run"
    env = dict(os.environ, CNNLAB_DATA=str(datasets_root), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "cnnlab", "train", *SMALL, "--model", "intro-cnn", "--epochs", "200",
           "--out", str(out), "--no-report"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Waits on progress (the first checkpoint appearing), with deadlines generous enough for a
    # loaded machine: a slow machine makes this slower, never red. The process is always ended,
    # so a failure here cannot leave it running into the next test.
    try:
        deadline = time.monotonic() + 600
        while not (out / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (out / "last.pt").exists(), f"no checkpoint after 600 s; exit {proc.poll()}"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-2000:]
    assert f"cnnlab train --resume {out}" in err and "Traceback" not in err
    done = load_checkpoint(out / "last.pt")["epoch"]
    assert 1 <= done < 200
    assert len(load_run(out).history) == done
    code = main(["train", "--resume", str(out), "--epochs", str(done + 1), "--offline", "--no-report", "--quiet"])
    assert code == 0
    assert load_checkpoint(out / "last.pt")["epoch"] == done + 1
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == done + 1


def test_recipe_fills_the_config_and_flags_override(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--recipe", "mnist-fast", "--train-size", "512", "--epochs", "1", "--offline",
                 "--quiet", "--out", str(out), "--no-report", "--seed", "5"]) == 0
    cfg = load_run(out).config
    assert cfg["model"] == "mnist-fast" and cfg["train"]["lr"] == 0.015 and cfg["train"]["schedule"] == "onecycle"
    assert cfg["train"]["seed"] == 5 and cfg["train_size"] == 512


def _history(path):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in load_run(path).history]


def test_print_config_then_config_repeats_the_run(tmp_path, capsys):
    first, again = tmp_path / "first", tmp_path / "again"
    typed = [*SMALL, "--model", "intro-cnn", "--epochs", "2", "--seed", "4", "--lr", "0.003", "--augment", "crop=1"]
    assert main(["train", *typed, "--print-config"]) == 0
    config = tmp_path / "c.toml"
    config.write_text(capsys.readouterr().out)
    assert not first.exists()  # --print-config trains nothing
    assert main(["train", *typed, "--out", str(first), "--no-report"]) == 0
    assert main(["train", "--config", str(config), "--offline", "--out", str(again), "--no-report"]) == 0
    assert load_run(again).config["train"] == load_run(first).config["train"]
    assert _history(again) == _history(first) and len(_history(first)) == 2


def test_resume_applies_typed_options_to_the_remaining_epochs(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--model", "intro-cnn", "--epochs", "1", "--out", str(out), "--no-report"]) == 0
    assert main(["train", "--resume", str(out), "--model", "mnist-cnn", "--epochs", "2", "--offline"]) == 2
    assert "cannot change model of a run being resumed" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--epochs", "2", "--lr", "0.0005", "--batch-size", "128",
                 "--label-smoothing", "0.1", "--monitor", "loss", "--offline", "--no-report", "--quiet"]) == 0
    train = load_run(out).config["train"]
    assert (train["epochs"], train["lr"], train["batch_size"], train["label_smoothing"], train["monitor"]) == \
        (2, 0.0005, 128, 0.1, "loss")
    history = load_run(out).history
    assert history[0]["lr"] == pytest.approx(0.001) and history[1]["lr"] == pytest.approx(0.0005)
    assert load_checkpoint(out / "last.pt")["optimizer"]["param_groups"][0]["initial_lr"] == 0.0005
