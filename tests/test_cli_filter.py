"""``cnnlab filter`` and ``cnnlab kernels``, run as a user runs them."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.scratch.images import read_image
from cnnlab.scratch.kernels import KERNELS


def test_filter_writes_a_gallery(tmp_path, capsys):
    out = tmp_path / "gallery.png"
    rc = main(["filter", "grace_hopper", "--kernel", "sobel-x", "--kernel", "brown", "--random", "2",
               "--out", str(out)])
    assert rc == 0
    assert f"wrote {out} (original + 4 filtered maps)" in capsys.readouterr().out
    picture = read_image(out)
    assert picture.ndim == 3 and picture.shape[1] > picture.shape[0]  # 5 panels side by side, 2 rows at most
    assert picture.std() > 0.05  # not a blank canvas


def test_filter_own_file_grey_with_mode_and_boundary(tmp_path):
    source = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30), dtype=np.uint8)).save(source)
    out = tmp_path / "g.pdf"
    rc = main(["filter", str(source), "-k", "laplacian", "-k", "Edge_Vertical", "--grey", "--mode", "valid",
               "--boundary", "wrap", "--out", str(out)])
    assert rc == 0 and out.read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("argv, message", [
    (["grace_hopper", "--kernel", "sobelx"], "unknown kernel 'sobelx'; did you mean 'sobel-x'"),
    (["missing.png", "--kernel", "sobel-x"], "image file 'missing.png' not found"),
    (["grace_hopper", "--kernel", "brown", "--grey"], r"colour kernel of shape (3, 3, 3) needs a colour image"),
    (["grace_hopper"], "no kernels given; add --kernel NAME"),
    (["grace_hopper", "--random", "-1"], "argument --random: must be >= 0, got '-1'"),
])
def test_filter_errors_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "g.png"
    assert main(["filter", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab filter: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_filter_bad_out_path(tmp_path, capsys):
    assert main(["filter", "grace_hopper", "-k", "sobel-x", "--out", str(tmp_path / "g.txt")]) == 2
    assert "has no known figure extension" in capsys.readouterr().err
    assert main(["filter", "grace_hopper", "-k", "sobel-x", "--out", str(tmp_path / "no" / "g.png")]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_kernels_lists_names_and_descriptions(capsys):
    assert main(["kernels"]) == 0
    out = capsys.readouterr().out
    for name, kernel in KERNELS.items():
        assert name in out and kernel.description in out
    assert "laplacian -> laplacian-4" in out


def test_filter_end_to_end_in_a_subprocess(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cnnlab", "filter", "grace_hopper", "--kernel", "sobel-x",
         "--kernel", "laplacian", "--out", "g.png"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote g.png (original + 2 filtered maps)" in result.stdout
    assert read_image(tmp_path / "g.png").shape[2] == 3
