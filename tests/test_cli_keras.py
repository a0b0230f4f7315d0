"""Keras semantics at the command line: --steps-per-epoch without --batch-size, and --init."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cnnlab.cli import main
from cnnlab.runs.experiment import _prepare, keras_batch_size
from cnnlab.train.config import RunConfig, TrainConfig

SPEC = "conv4k3-relu,maxpool2,flatten"


def train(tmp_path, *extra):
    out = tmp_path / "run"
    code = main(["train", "--data", "digits", "--model", SPEC, "--epochs", "1", "--out", str(out),
                 "--quiet", "--no-report", "--overwrite", *extra])
    return code, json.loads((out / "config.json").read_text()) if code == 0 else None


def test_keras_batch_size_is_ceil_n_over_steps():
    assert keras_batch_size(50_000, 100) == 500  # the CIFAR-10 tutorial
    assert keras_batch_size(1_437, 10) == 144 and keras_batch_size(3, 10) == 1


def test_steps_without_batch_size_uses_ceil_n_over_steps_and_says_so(tmp_path, capsys):
    code, config = train(tmp_path, "--steps-per-epoch", "7")
    n = json.loads((tmp_path / "run" / "config.json").read_text())
    out = capsys.readouterr().out
    assert code == 0
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert len(history) == 2
    line = next(x for x in out.splitlines() if "steps_per_epoch 7 without a batch size" in x)
    size = int(line.split("= ")[1].split()[0])
    total = int(line.split("ceil(")[1].split(" /")[0])
    assert size == math.ceil(total / 7) == config["train"]["batch_size"] == n["train"]["batch_size"]


def test_an_explicit_batch_size_wins_and_nothing_is_said(tmp_path, capsys):
    code, config = train(tmp_path, "--steps-per-epoch", "7", "--batch-size", "16")
    assert code == 0 and config["train"]["batch_size"] == 16
    assert "without a batch size" not in capsys.readouterr().out


@pytest.mark.parametrize("init", ["keras", "torch"])
def test_init_flag_is_recorded_and_used(tmp_path, init):
    code, config = train(tmp_path, "--init", init)
    assert code == 0 and config["init"] == init
    _, model, _, _ = _prepare(RunConfig(data="digits", model=SPEC, init=init, train=TrainConfig(verbose=0)), False)
    conv = model[0]
    assert (torch.count_nonzero(conv.bias) == 0) == (init == "keras")


def test_unknown_init_is_refused_by_the_parser(tmp_path, capsys):
    assert main(["train", "--data", "digits", "--init", "glorot"]) == 2
    assert "invalid choice: 'glorot'" in capsys.readouterr().err
