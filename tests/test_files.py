"""cnnlab.files: atomic writes (permissions, durability, failures, a full disk) and the cache folder."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from cnnlab import files
from cnnlab.errors import CnnlabError


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_bytes_and_text_round_trip_and_leave_only_the_file(tmp_path):
    assert files.write_bytes(tmp_path / "a.bin", b"\x00\x01") == tmp_path / "a.bin"
    files.write_text(tmp_path / "b.txt", "grüße\n")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_bytes() == "grüße\n".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.txt"]


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_new_files_get_the_permissions_open_gives(tmp_path, mask):
    with umask(mask):
        with open(tmp_path / "reference", "w"):
            pass
        files.write_text(tmp_path / "report.html", "<p>hi</p>")
        files.write_with(tmp_path / "last.pt", lambda f: torch.save({"x": torch.ones(2)}, f))
    assert mode_of(tmp_path / "reference") == 0o666 & ~mask
    assert mode_of(tmp_path / "report.html") == 0o666 & ~mask
    assert mode_of(tmp_path / "last.pt") == 0o666 & ~mask


def test_replacing_a_file_keeps_its_mode(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("{}")
    path.chmod(0o640)
    files.write_text(path, '{"a": 1}')
    assert mode_of(path) == 0o640 and path.read_text() == '{"a": 1}'


def test_temporary_folder_has_normal_permissions(tmp_path):
    with umask(0o022):
        folder = files.make_temporary_folder(tmp_path, "entry")
    assert folder.is_dir() and folder.parent == tmp_path and mode_of(folder) == 0o755


def test_target_is_untouched_until_the_block_ends(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("old\n")
    with files.atomic_open(path, "w", newline="") as f:
        f.write("new\r\n")
        f.flush()
        assert path.read_text() == "old\n"  # the new bytes are in the temporary file only
    assert path.read_bytes() == b"new\r\n"


def test_a_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "best.pt"
    path.write_bytes(b"good checkpoint")

    def half_then_fail(f):
        f.write(b"half of a checkpoint")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        files.write_with(path, half_then_fail)
    with pytest.raises(KeyboardInterrupt), files.atomic_open(path) as f:
        f.write(b"x")
        raise KeyboardInterrupt
    assert path.read_bytes() == b"good checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_file_and_folder_are_fsynced_before_and_after_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", stat.S_ISDIR(os.fstat(fd).st_mode)))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", Path(b).name)) or real_replace(a, b))
    files.write_bytes(tmp_path / "last.pt", b"data")
    assert events == [("fsync", False), ("replace", "last.pt"), ("fsync", True)]


def test_writers_of_torch_numpy_matplotlib_and_pillow(tmp_path):
    files.write_with(tmp_path / "w.pt", lambda f: torch.save({"w": torch.arange(3)}, f))
    assert torch.equal(torch.load(tmp_path / "w.pt", weights_only=True)["w"], torch.arange(3))
    files.write_with(tmp_path / "a.npy", lambda f: np.save(f, np.eye(2)))
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.eye(2))
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    files.write_with(tmp_path / "i.png", lambda f: Image.fromarray(image).save(f, format="PNG"))
    with Image.open(tmp_path / "i.png") as read:
        np.testing.assert_array_equal(np.asarray(read), image)
    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    files.save_figure(fig, tmp_path / "f.svg")
    files.save_figure(fig, tmp_path / "f.png", dpi=20)
    assert (tmp_path / "f.svg").read_text().lstrip().startswith("<?xml")
    with Image.open(tmp_path / "f.png") as read:
        assert read.size == (20, 20)


def test_long_names_fit(tmp_path):
    name = "r" * 250 + ".png"
    files.write_bytes(tmp_path / name, b"x")
    assert (tmp_path / name).read_bytes() == b"x"


def test_full_disk_errors_are_one_line_naming_the_path(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("{}")

    def full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    def wrapped(f):  # as a library that catches the OSError and raises its own
        try:
            full(f)
        except OSError as exc:
            raise RuntimeError("writer failed") from exc

    for writer in (full, wrapped):
        with pytest.raises(CnnlabError, match=f"^no space left on device writing {path}") as info:
            files.write_with(path, writer)
        assert "\n" not in str(info.value)
    assert path.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.fixture
def tiny_disk(mount_tmpfs):
    """A 256 KiB tmpfs."""
    return mount_tmpfs(256)

@pytest.mark.parametrize("writer", ["torch", "numpy", "text", "figure"])
def test_a_real_full_disk_keeps_the_good_file(tiny_disk, writer):
    path = tiny_disk / ("out.png" if writer == "figure" else "last.pt")
    path.write_bytes(b"good")
    big = torch.zeros(200_000)  # 800 kB: more than the disk holds
    fig = Figure(figsize=(20, 20))
    fig.subplots().imshow(np.random.default_rng(0).random((400, 400)))
    write = {
        "torch": lambda: files.write_with(path, lambda f: torch.save({"w": big}, f)),  # wraps it in RuntimeError
        "numpy": lambda: files.write_with(path, lambda f: np.save(f, big.numpy())),  # short write, no errno
        "text": lambda: files.write_text(path, "x" * 1_000_000),
        "figure": lambda: files.save_figure(fig, path, dpi=100),
    }[writer]
    with pytest.raises(CnnlabError, match=f"^no space left on device writing {path}"):
        write()
    assert path.read_bytes() == b"good" and [p.name for p in tiny_disk.iterdir()] == [path.name]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    stale = tmp_path / f".last.pt.{pid}.0a1b2c3d.tmp"
    stale.write_bytes(b"half")
    stale_folder = tmp_path / f".parsed.{pid}.00ff00ff.tmp"
    stale_folder.mkdir()
    (stale_folder / "x.npy").write_bytes(b"x")
    live = tmp_path / f".best.pt.{os.getpid()}.0a1b2c3d.tmp"
    live.write_bytes(b"being written")
    other = tmp_path / ".notes.tmp"  # not named by cnnlab: left alone
    other.write_text("mine")
    assert sorted(files.remove_stale_temporaries(tmp_path)) == sorted([stale, stale_folder])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


def test_cache_dir_ignores_a_relative_xdg_cache_home(monkeypatch, tmp_path):
    from cnnlab import data
    from cnnlab.models import pretrained

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert files.cache_dir() == tmp_path / "cnnlab"
    assert data.cache_dir() == tmp_path / "cnnlab"
    assert pretrained.cache_dir() == tmp_path / "cnnlab" / "models"
    for value in ("relative/cache", ""):  # the XDG spec: a relative path is invalid, ignore it
        monkeypatch.setenv("XDG_CACHE_HOME", value)
        assert files.cache_dir("models") == Path.home() / ".cache" / "cnnlab" / "models"
        assert pretrained.cache_dir() == files.cache_dir("models") and data.cache_dir() == files.cache_dir()


def test_a_command_on_a_full_disk_exits_2_with_one_line(tiny_disk, capsys):
    from cnnlab.cli import main

    out = tiny_disk / "gallery.png"
    out.write_bytes(b"an older gallery")
    assert main(["filter", "grace_hopper", "-k", "sobel-x", "-k", "laplacian-8", "--random", "6",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cnnlab filter: error: no space left on device writing {out}") and err.count("\n") == 1
    assert out.read_bytes() == b"an older gallery" and [p.name for p in tiny_disk.iterdir()] == [out.name]
