"""The command line as issue 27 asks: one vocabulary (--quiet/--verbose and examples in every --help),
progress bars only on a terminal, your own ``module:function`` models from the current folder, and
errors before anything is printed or written."""

from __future__ import annotations

import json
import re
import sys

import pytest
from test_cli_options import COMMAND_PATHS, _help, _options  # noqa: E402  (the walk over every command)

from cnnlab.cli import main
from cnnlab.runs.experiment import small_data_batch_size

SPEC = "conv4k3-relu,maxpool2,flatten"
LEAVES = [p for p in COMMAND_PATHS if p != ("data",)]  # `data` alone only lists its actions

MYNETS = """
from torch import nn


def make_net(input_shape=(8, 8, 1), num_classes=10):
    h, w, c = input_shape
    return nn.Sequential(nn.Conv2d(c, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * h * w, num_classes))
"""


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_every_command_takes_quiet_and_verbose_and_ends_its_help_with_examples(path, capsys):
    text = _help(path, capsys)
    assert {"--quiet", "--verbose"} <= _options(text), " ".join(path)
    tail = text.rstrip().split("examples:")
    assert len(tail) > 1, f"{' '.join(path)} --help has no examples"
    examples = [line.strip() for line in tail[-1].strip().splitlines()]
    assert 1 <= len(examples) and all(re.match(r"(\w+=\S+ )?cnnlab ", e) for e in examples), examples


def test_quiet_leaves_only_the_result(tmp_path, capsys):
    out = tmp_path / "edges.png"
    assert main(["filter", "grace_hopper", "--kernel", "sobel-x", "--out", str(out), "--quiet"]) == 0
    assert out.is_file() and capsys.readouterr().out == ""
    assert main(["kernels", "--quiet"]) == 0
    names = capsys.readouterr().out.split()
    assert "sobel-x" in names and "aliases:" not in names
    assert main(["summary", "mnist-cnn", "--quiet"]) == 0
    assert re.fullmatch(r"[\d,]+ parameters \([\d,]+ trainable\), [\d,]+ mult-adds\n", capsys.readouterr().out)


def test_train_writes_no_progress_bar_into_a_redirected_stderr(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", SPEC, "--epochs", "2", "--batch-size", "64", "--out",
                 str(out), "--offline", "--no-report"]) == 0
    captured = capsys.readouterr()
    assert "Epoch 2/2" in captured.out  # the epoch lines stay
    assert "\r" not in captured.err and "step/s" not in captured.err and "it/s" not in captured.err


def test_an_unknown_dataset_is_refused_before_the_banner(tmp_path, capsys):
    assert main(["train", "--data", "nosuch", "--out", str(tmp_path / "r"), "--offline"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "unknown dataset 'nosuch'" in captured.err
    assert not (tmp_path / "r").exists()
    assert main(["train", "--data", f"folder:{tmp_path / 'none'}", "--out", str(tmp_path / "r")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_failed_tensorboard_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    from cnnlab.errors import CnnlabError
    from cnnlab.runs.experiment import train_run
    from cnnlab.train.config import RunConfig, TrainConfig

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as without the tensorboard extra
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", SPEC, "--epochs", "1", "--out", str(out), "--offline",
                 "--tensorboard"]) == 2
    captured = capsys.readouterr()
    assert "pip install 'cnnlab[tensorboard]'" in captured.err and captured.out == ""
    assert not out.exists()
    cfg = RunConfig(data="digits", model=SPEC, train=TrainConfig(epochs=1, verbose=0))
    with pytest.raises(CnnlabError, match="tensorboard"):
        train_run(cfg, out, tensorboard=True)
    assert not out.exists()


def test_own_model_from_the_current_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "mynets.py").write_text(MYNETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])  # as the cnnlab script
    monkeypatch.delitem(sys.modules, "mynets", raising=False)
    assert main(["summary", "mynets:make_net"]) == 0
    text = capsys.readouterr().out
    assert "Conv2d" in text and "(None, 8, 8, 3)" in text  # built for its own default (8, 8, 1)
    out = tmp_path / "run"
    assert main(["train", "--data", "digits", "--model", "mynets:make_net", "--epochs", "1", "--out", str(out),
                 "--offline", "--quiet", "--no-report"]) == 0
    assert json.loads((out / "config.json").read_text())["model"] == "mynets:make_net"
    monkeypatch.delitem(sys.modules, "mynets", raising=False)
    assert main(["summary", "nosuchmodule:make_net"]) == 2
    assert "cannot import model builder 'nosuchmodule:make_net'" in capsys.readouterr().err


@pytest.mark.parametrize(("n", "default", "batch"), [(168, 128, 16), (10_000, 128, 128), (24, 128, 8), (400, 32, 32)])
def test_pretrained_batch_from_the_folder_size(n, default, batch):
    assert small_data_batch_size(n, default) == batch
    assert batch == default or n / batch >= 10 or batch == 8


def test_pretrained_on_a_small_folder_says_its_batch(photos, squeeze_weights, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", f"folder:{photos}", "--model", "squeezenet1_1", "--pretrained", "--weights",
                 str(squeeze_weights), "--image-size", "32", "--epochs", "1", "--freeze-epochs", "0", "--out",
                 str(out), "--offline", "--no-report", "--verbose"]) == 0
    header = capsys.readouterr().out.splitlines()[:3]
    assert any("batches of 8" in line for line in header), header
    assert json.loads((out / "config.json").read_text())["train"]["batch_size"] == 8


def test_long_insight_runs_can_show_progress(capsys):
    import torch
    from torch import nn

    from cnnlab.insight.embedding import penultimate_features
    from cnnlab.insight.featurevis import visualize_class

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 8 * 8, 3))
    visualize_class(net, target=[0, 1], steps=3, size=8, in_channels=1, progress=True)
    assert "2 classes:" in capsys.readouterr().err  # a bar over the optimisation steps
    penultimate_features(net, torch.zeros(10, 1, 8, 8), batch_size=4, progress=True)
    assert "features:" in capsys.readouterr().err  # a bar over the batches
    visualize_class(net, target=0, steps=3, size=8, in_channels=1)
    assert capsys.readouterr().err == ""  # the library is silent unless asked
