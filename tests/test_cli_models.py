"""`cnnlab models`, `cnnlab summary` and `cnnlab classify`, run as a user would."""

from __future__ import annotations

import subprocess
import sys
import urllib.error

import pytest

from cnnlab.cli import main
from cnnlab.models import pretrained


def test_models_lists_names_params_and_descriptions(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, params in [("intro-cnn", "54,410"), ("mnist-cnn", "220,234"), ("vgg16", "138,357,544"),
                         ("squeezenet1_1", "1,235,496")]:
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert params in line and len(line.split()) > 4


def test_summary_of_a_named_model(capsys):
    assert main(["summary", "intro-cnn"]) == 0
    out = capsys.readouterr().out
    assert "(None, 26, 26, 32)" in out and "Total params: 54,410" in out


def test_summary_of_a_spec_with_input_classes_and_depth(capsys):
    assert main(["summary", "conv8k3-bn-relu,gap", "--input", "32x32x3", "--classes", "5"]) == 0
    out = capsys.readouterr().out
    assert "(None, 30, 30, 8)" in out and "(None, 5)" in out and "(BatchNorm2d)" in out
    assert main(["summary", "vgg16", "--depth", "2"]) == 0
    out = capsys.readouterr().out
    assert "features.28 (Conv2d)" in out and "Total params: 138,357,544" in out


@pytest.mark.parametrize("argv, message", [
    (["summary", "resnet"], "unknown model 'resnet'"),
    (["summary", "conv8,maxpol2"], "token 2 'maxpol2'"),
    (["summary", "mnist-cnn", "--input", "3x3x1"], "layer '5' (MaxPool2d)"),
    (["summary", "intro-cnn", "--depth", "0"], "--depth: must be at least 1, got '0'"),
])
def test_summary_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab summary: error: ") and message in err and err.count("\n") == 1


def test_bad_input_option_is_a_usage_error(capsys):
    assert main(["summary", "intro-cnn", "--input", "28x28"]) == 2
    err = capsys.readouterr().err
    assert "not HxWxC" in err and err.count("\n") == 1  # one line, no usage screen


@pytest.fixture(scope="module")
def weights(squeeze_weights):
    return str(squeeze_weights)


def test_classify_prints_top_k_and_saves_a_chart(capsys, tmp_path, shared_dir, weights):
    chart = tmp_path / "chart.png"
    cat = str(shared_dir / "images" / "cat.jpg")
    assert main(["classify", cat, "grace_hopper", "--weights", weights, "--top", "3", "--out", str(chart)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == cat and out[1].startswith("  1. Egyptian_cat")
    assert out[4] == "grace_hopper" and len([line for line in out if line.startswith("  ")]) == 6
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("typed, expected", [(None, "fp32"), ("bf16", "bf16")])
def test_classify_says_which_precision_ran(capsys, shared_dir, weights, monkeypatch, typed, expected):
    # auto keeps SqueezeNet in fp32 even where the CPU has bf16 (FP32_UNDER_AUTO says why).
    monkeypatch.setenv("CNNLAB_CPU_BF16", "1")
    args = ["classify", str(shared_dir / "images" / "cat.jpg"), "--weights", weights, "--top", "1", "--verbose"]
    assert main(args + (["--precision", typed] if typed else [])) == 0
    out = capsys.readouterr().out
    assert f"squeezenet1_1 with {weights} on cpu, precision {expected}" in out and "1. Egyptian_cat" in out


def test_classify_bad_photo_writes_nothing(capsys, tmp_path, weights):
    chart = tmp_path / "chart.png"
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert main(["classify", str(notes), "--weights", weights, "--out", str(chart)]) == 2
    err = capsys.readouterr().err
    assert "notes.txt' is not a readable image" in err and err.count("\n") == 1
    assert not chart.exists()


def test_classify_offline_without_weights_points_at_the_option(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    def offline(url, timeout=None):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(pretrained, "_urlopen", offline)
    assert main(["classify", "grace_hopper", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "squeezenet1_1-b8a52dc0.pth" in err and "--weights PATH" in err and err.count("\n") == 1


def test_classify_end_to_end_in_a_subprocess(shared_dir, weights):
    cat = str(shared_dir / "images" / "cat.jpg")
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "classify", cat, "--weights", weights, "--top", "1"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1].split()[1] in {"Egyptian_cat", "tabby", "tiger_cat"}


def test_classify_with_winograd_gives_the_same_answer(capsys, shared_dir, weights):
    cat = str(shared_dir / "images" / "cat.jpg")
    assert main(["classify", cat, "--weights", weights, "--top", "3"]) == 0
    direct = capsys.readouterr().out
    assert main(["classify", cat, "--weights", weights, "--top", "3", "--winograd"]) == 0
    assert capsys.readouterr().out == direct  # same classes, same rounded probabilities
