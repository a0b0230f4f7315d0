"""``cnnlab data ...`` run in-process (and once as a subprocess), offline."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main

pytestmark = pytest.mark.usefixtures("offline_data_env")


@pytest.fixture
def pets(tmp_path):
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        for i in range(5):
            path = tmp_path / "pets" / c / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(path)
    return tmp_path / "pets"


def test_info_without_data_or_network_fails_cleanly(tmp_path, capsys):
    assert main(["data", "info", "mnist"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert err.startswith("cnnlab data: error: mnist not found; looked in ") and err.count("\n") == 1
    for part in (str(tmp_path / "xdg" / "cnnlab"), str(tmp_path / "system"), "download failed",
                 "Name or service not known", "cnnlab data fetch mnist", "CNNLAB_DATA"):
        assert part in err
    assert main(["data", "info", "cifar10", "--offline"]) == 2
    assert "downloading is off" in capsys.readouterr().err


def test_fetch_offline_fails_cleanly(capsys):
    assert main(["data", "fetch", "fashion-mnist", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "could not download train-images-idx3-ubyte.gz" in err and "fashion-mnist.s3-website" in err


def test_info_on_real_mnist(mnist_dir, capsys):
    assert main(["data", "info", "mnist", "--root", str(mnist_dir.parent), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "train         60,000 images  (60000, 28, 28, 1)" in out
    assert "test          10,000 images  (10000, 28, 28, 1)" in out
    assert "0.1307" in out and "5,923" in out  # train mean; class 0 count


def test_info_with_options_on_a_folder(pets, capsys):
    assert main(["data", "info", f"folder:{pets}", "--val-size", "2", "--image-size", "8x6"]) == 0
    out = capsys.readouterr().out
    assert "image        8x6x3 uint8, 2 classes" in out
    assert "train" in out and "val" in out and "test" in out
    assert "cat" in out and "dog" in out


def test_list_shows_known_datasets_and_places(tmp_path, datasets_root, capsys, monkeypatch):
    monkeypatch.setenv("CNNLAB_DATA", str(datasets_root))
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert str(datasets_root / "mnist") in out
    assert "fashion-mnist" in out and "folder:PATH" in out
    assert f"$CNNLAB_DATA  {datasets_root}" in out and str(tmp_path / "xdg" / "cnnlab") in out


def test_fetch_when_present(mnist_dir, capsys):
    assert main(["data", "fetch", "mnist", "--root", str(mnist_dir.parent)]) == 0
    assert f"already present at {mnist_dir}" in capsys.readouterr().out


def test_show_writes_a_grid(pets, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["data", "show", f"folder:{pets}", "--n", "6", "--out", str(out), "--random"]) == 0
    with Image.open(out) as im:
        assert im.size[0] > 100
    assert "wrote" in capsys.readouterr().out


def test_show_refuses_unknown_format_before_writing(pets, tmp_path, capsys):
    out = tmp_path / "grid.xyz"
    assert main(["data", "show", f"folder:{pets}", "--out", str(out)]) == 2
    assert not out.exists() and "cannot write .xyz" in capsys.readouterr().err


def test_plot_dataset_grid_titles_images_with_class_names():
    from cnnlab.data.preview import plot_dataset_grid

    images = np.zeros((30, 4, 4, 1), np.uint8)
    labels = np.arange(30) % 3
    fig = plot_dataset_grid(images, labels, ("a", "b", "c"), n=25)
    titled = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(fig.axes) == 25 and titled[:4] == ["a", "b", "c", "a"]
    fig = plot_dataset_grid(images[:7, ..., [0, 0, 0]], labels[:7], ("a", "b", "c"))
    assert len(fig.axes) == 9 and len([ax for ax in fig.axes if ax.get_title()]) == 7


def test_data_without_action_prints_help(capsys):
    assert main(["data"]) == 2
    assert "list" in capsys.readouterr().out


def test_end_to_end_subprocess(datasets_root, cifar10_dir, tmp_path):
    env = {**os.environ, "CNNLAB_DATA": str(datasets_root), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    run = subprocess.run([sys.executable, "-m", "cnnlab", "data", "info", "cifar10"],
                         capture_output=True, text=True, env=env, check=False)
    assert run.returncode == 0, run.stderr
    assert "train         50,000 images  (50000, 32, 32, 3)" in run.stdout
    assert re.search(r"^airplane +5,000 +1,000$", run.stdout, re.M)
