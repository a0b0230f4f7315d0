"""`cnnlab features` and `cnnlab embed` end to end on a tiny trained run (and SqueezeNet)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.cli.features import parse_units
from cnnlab.errors import CnnlabError


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_parse_units():
    assert parse_units("0-3,8") == [0, 1, 2, 3, 8]
    assert parse_units("5") == [5]
    for bad in ("3-1", "a", "1,,2", "-2"):
        with pytest.raises(CnnlabError, match="not a list of indices"):
            parse_units(bad)


def test_features_of_a_run_draws_channels_with_their_top_test_images(tiny_run, tmp_path, user_cache, capsys):
    out, arr = tmp_path / "grid.png", tmp_path / "vis.npy"
    assert main(["features", str(tiny_run), "--channels", "0-2", "--steps", "5", "--examples", "3", "--out", str(out),
                 "--save-array", str(arr)]) == 0
    text = capsys.readouterr().out
    assert "layer 3," in text  # the last conv layer: conv, relu, maxpool, conv (3), ...
    with Image.open(out) as img:
        assert img.size[0] > 200 and img.size[1] > 200
    images = np.load(arr)
    assert images.shape == (3, 10, 10, 1) and images.dtype == np.float32


def test_features_of_run_classes(tiny_run, tmp_path, user_cache, capsys):
    out = tmp_path / "classes.png"
    assert main(["features", str(tiny_run), "--class", "0,2", "--steps", "4", "--out", str(out), "--device", "cpu"]) == 0
    assert out.is_file() and "classes" in capsys.readouterr().out


def test_features_bad_input_is_one_line(tiny_run, tmp_path, user_cache, capsys):
    out = tmp_path / "x.png"
    assert main(["features", str(tiny_run), "--layer", "nope", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no layer 'nope'" in err and "(Conv2d)" in err
    assert main(["features", str(tiny_run), "--channels", "0-99", "--steps", "2", "--out", str(out)]) == 2
    assert "channel 6 is out of range" in capsys.readouterr().err
    assert main(["features", "--out", str(out)]) == 2
    assert "give a run directory or --model" in capsys.readouterr().err
    assert not out.exists()


def test_features_of_pretrained_squeezenet(shared_dir, tmp_path, user_cache, capsys):
    weights = shared_dir / "models" / "squeezenet1_1-imagenet.pth"
    if not weights.is_file():
        pytest.skip(f"{weights} is absent")
    out = tmp_path / "sq.png"
    assert main(["features", "--model", "squeezenet1_1", "--weights", str(weights), "--layer", "features.12",
                 "--channels", "0,1", "--steps", "3", "--size", "64", "--out", str(out), "--offline"]) == 0
    assert "squeezenet1_1 layer features.12" in capsys.readouterr().out and out.is_file()


def test_embed_draws_the_map_and_caches_it(tiny_run, tmp_path, user_cache, capsys):
    out = tmp_path / "map.png"
    assert main(["embed", str(tiny_run), "--method", "pca", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "test images by pca" in text and (tiny_run / "embedding-pca.npz").is_file()
    with Image.open(out) as img:
        assert img.size == (800, 650)
    assert main(["embed", str(tiny_run), "--method", "tsne", "--out", str(out), "--device", "cpu"]) == 0
    assert (tiny_run / "embedding-tsne.npz").is_file()
    assert main(["embed", str(tiny_run), "--method", "pca", "--limit", "1", "--out", str(out)]) == 2
    assert "limit must be an int >= 3" in capsys.readouterr().err
