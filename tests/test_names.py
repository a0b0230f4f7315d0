"""Class folders and files whose names are not valid UTF-8 work in every plot and page."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main
from cnnlab.data.folder import display_names, scan
from cnnlab.text import clean_figure_text, printable

# b"caf\xe9" (Latin-1 é) as Python hands it over from a Linux directory listing.
CAFE = os.fsdecode(b"caf\xe9")


def test_printable_replaces_undecodable_bytes_like_a_browser():
    assert printable(CAFE) == "caf\ufffd"
    assert printable("caf\u00e9") == "caf\u00e9"  # valid UTF-8 is left alone
    assert printable("a\ud800b") == "a\ufffdb"  # a surrogate surrogateescape did not make


def test_display_names_keep_folders_apart_that_differ_only_in_bad_bytes():
    names = display_names((os.fsdecode(b"x\xe9"), os.fsdecode(b"x\xe8"), CAFE, "ok"))
    assert names == ("x\\xe9", "x\\xe8", "caf\ufffd", "ok")


def test_figure_text_is_cleaned_before_saving(tmp_path):
    fig, ax = plt.subplots()
    ax.set_title(CAFE)
    ax.set_xlabel("fine")
    clean_figure_text(fig)
    fig.savefig(tmp_path / "t.png")  # failed inside matplotlib's font code before
    assert ax.get_title() == "caf\ufffd" and ax.get_xlabel() == "fine"
    plt.close(fig)


@pytest.fixture
def odd_folder(tmp_path) -> Path:
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for c, name in enumerate([b"caf\xe9", b"na\xefve", b"ok"]):
        d = os.path.join(os.fsencode(root), name)
        try:
            os.makedirs(d)
        except (OSError, UnicodeError):
            pytest.skip("this file system refuses names that are not UTF-8")
        for i in range(8):
            img = rng.integers(0, 60, (10, 10), dtype=np.uint8)
            img[:, 3 * c : 3 * c + 2] = 255
            Image.fromarray(img).save(os.path.join(d, b"%d\xff.png" % i))
    return root


def test_scan_gives_printable_class_names(odd_folder):
    classes, files, labels, _ = scan(odd_folder)
    assert classes == ("caf\ufffd", "na\ufffdve", "ok")
    assert all(f.is_file() for f in files) and sorted(set(labels.tolist())) == [0, 1, 2]


def test_train_report_evaluate_predict_and_show_work(odd_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    run = tmp_path / "run"
    data = f"folder:{odd_folder}"
    assert main(["train", "--data", data, "--model", "conv4k3-relu,maxpool2,flatten", "--epochs", "1",
                 "--batch-size", "8", "--out", str(run), "--verbose", "0"]) == 0
    assert json.loads((run / "config.json").read_text())["classes"] == ["caf\ufffd", "na\ufffdve", "ok"]
    assert "caf\ufffd" in (run / "report.html").read_text(encoding="utf-8")
    image = next((odd_folder / CAFE).iterdir())
    assert main(["evaluate", str(run)]) == 0
    assert main(["predict", str(run), str(image), "--out", str(tmp_path / "p.png")]) == 0
    assert main(["activations", str(run), str(image), "--layer", "0", "--out", str(tmp_path / "a.png")]) == 0
    assert main(["data", "show", data, "--out", str(tmp_path / "s.png")]) == 0
    for name in ("p.png", "a.png", "s.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 0
