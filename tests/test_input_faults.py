"""Faults, third round, outside the lab and the model files: configs (bounded, every nested key
checked, --print-config always reads back), streamed folders with truncated images, and the
explain/export arguments that used to end in a traceback. Each case ends in a sensible result
or one line starting "cnnlab", exit 2."""

from __future__ import annotations

import os

import pytest

from cnnlab.cli import main


def _one_line(capsys, *words) -> str:
    err = capsys.readouterr().err
    assert err.startswith("cnnlab") and err.count("\n") == 1, err[-2000:]
    for w in words:
        assert w in err, err
    return err


# --------------------------------------------------------------------------- --config


@pytest.mark.parametrize(("text", "words"), [
    ("[hyperparams.augment]\nbogus = 1\n", ["hyperparams.augment.bogus is not an augmentation setting", "crop"]),
    ('[hyperparams.augment]\ncrop = "x"\n', ["hyperparams.augment.crop must be an integer"]),
    ("[run]\nworkers = -3\n", ["workers must be >= 0"]),
    ("[run]\nmax_memory = -1.0\n", ["max_memory must be > 0"]),
    ("[run]\nmodel = " + "[" * 5000 + "]" * 5000 + "\n", ["nests arrays or tables too deeply"]),
    ("[run]\nmodel = " + "[" * 50 + "]" * 50 + "\n", ["model must be a string"]),
    ("[run]\nmodel = 'a\xff'\n", []),  # Latin-1 bytes below: not UTF-8
])
def test_bad_configs_are_one_line_naming_the_key(tmp_path, capsys, text, words):
    path = tmp_path / "c.toml"
    if words:
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text.encode("latin-1"))
        words = ["not UTF-8"]
    assert main(["train", "--config", str(path), "--print-config"]) == 2
    _one_line(capsys, *words)


def test_a_config_that_is_not_a_small_regular_file_is_refused_before_reading(tmp_path, capsys):
    for path in ("/dev/zero", str(tmp_path)):
        assert main(["train", "--config", path, "--print-config"]) == 2
        _one_line(capsys, "is not a regular file")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it would block until a writer came: never opened
    assert main(["train", "--config", str(fifo), "--print-config"]) == 2
    _one_line(capsys, "is not a regular file")
    big = tmp_path / "big.toml"
    big.write_text("# padding\n" * 110_000)
    assert main(["train", "--config", str(big), "--print-config"]) == 2
    _one_line(capsys, "is over 1 MB")
    assert main(["train", "--config", str(tmp_path / "none.toml"), "--print-config"]) == 2
    _one_line(capsys, "does not exist")


@pytest.mark.parametrize("name", ["d\x7fir", "tab\there", 'quote"back\\slash', "ünï €", "new\nline", "bell\x07"])
def test_print_config_reads_back_whatever_a_path_holds(tmp_path, capsys, name):
    folder = tmp_path / name
    folder.mkdir()
    assert main(["train", "--data", f"folder:{folder}", "--print-config"]) == 0
    printed = capsys.readouterr().out
    path = tmp_path / "p.toml"
    path.write_text(printed, encoding="utf-8")
    from cnnlab.runs.config_file import read_config

    assert read_config(path)["data"] == f"folder:{folder}"
    assert main(["train", "--config", str(path), "--print-config"]) == 0
    assert capsys.readouterr().out == printed


def test_print_config_refuses_a_path_that_is_not_utf8(tmp_path, capsys):
    folder = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xff")
    os.mkdir(folder)
    assert main(["train", "--data", f"folder:{folder}", "--print-config"]) == 2
    _one_line(capsys, "not UTF-8")


# --------------------------------------------------------------------------- streamed folders


def _truncated_png(path, rng_seed: int = 1) -> None:
    """A PNG whose header (IHDR) reads but whose pixel data stops half-way."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(rng_seed).integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(buf, "PNG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_a_truncated_image_in_a_streamed_folder(photos, tmp_path, capsys):
    from PIL import Image

    from cnnlab.data.stream import check_headers

    bad = photos / "dog" / "cut.png"
    _truncated_png(bad)
    with Image.open(bad) as im:
        assert im.size == (12, 12)  # the header pass alone cannot tell
    assert check_headers([bad])[1] == [] and check_headers([bad], pixels=True)[1][0][0] == bad
    common = ["train", "--data", f"folder:{photos}", "--model", "conv4k3-relu,gap,dense3", "--stream", "--workers",
              "1", "--epochs", "1", "--batch-size", "8", "--quiet", "--no-report", "--offline", "--seed", "0"]
    # Without --skip-bad: one line naming the file, not a DataLoader worker's traceback.
    assert main([*common, "--out", str(tmp_path / "a")]) == 2
    _one_line(capsys, str(bad), "cannot decode", "--skip-bad")
    # With it: left out before training, and said so.
    assert main([*common, "--skip-bad", "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "left out 1 of 31 files" in err and "dog/cut.png" in err
    assert (tmp_path / "b" / "best.pt").is_file() or (tmp_path / "b" / "last.pt").is_file()


def test_undecodable_image_keeps_one_line_through_a_dataloader_worker(tmp_path):
    import torch

    from cnnlab.data.stream import FolderStream, UndecodableImage

    bad = tmp_path / "cut.png"
    _truncated_png(bad)
    loader = torch.utils.data.DataLoader(FolderStream([bad], [0], size=(12, 12), mode="RGB", workers=1),
                                         batch_size=1, num_workers=1)
    with pytest.raises(UndecodableImage) as info:
        next(iter(loader))
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{bad}: cannot decode")


def test_an_image_size_no_batch_fits_is_refused_up_front(photos, tmp_path, capsys):
    assert main(["train", "--data", f"folder:{photos}", "--image-size", "200000", "--epochs", "1", "--quiet",
                 "--no-report", "--offline", "--out", str(tmp_path / "r")]) == 2
    _one_line(capsys, "200000x200000", "GiB available", "--image-size")
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- explain / export arguments


@pytest.fixture(scope="module")
def colour_run(module_colour_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "run"
    assert main(["train", "--data", f"folder:{module_colour_folder}", "--model", "conv4k3-relu,gap,dense3",
                 "--epochs", "1", "--batch-size", "8", "--quiet", "--no-report", "--offline", "--seed", "0",
                 "--out", str(out)]) == 0
    return out


@pytest.fixture()
def read_only(tmp_path):
    """A read-only file system (a tmpfs mounted ro): root can write anywhere else, so a chmod is not enough."""
    import subprocess

    where = tmp_path / "ro"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here ({done.stderr.decode().strip()[:80]})")
    yield where
    subprocess.run(["umount", str(where)], check=True)


@pytest.mark.parametrize(("args", "words"), [
    (["test:0", "--target", "9" * 30], ["--target 999", "out of range: the model has 3 classes (indices 0..2)"]),
    (["test:0", "--target", "-1"], ["--target -1 is out of range: the model has 3 classes"]),
    (["test:0", "--target", "3"], ["--target 3 is out of range: the model has 3 classes"]),
    (["test:-1"], ["'test:-1' is not test:INDEX with INDEX in 0.."]),
    (["test:" + "9" * 5000], ["is not test:INDEX"]),
    (["test:٣"], ["is not test:INDEX"]),  # a digit to str.isdigit, not an index
])
def test_explain_arguments_out_of_range_are_one_line(colour_run, capsys, args, words):
    assert main(["explain", str(colour_run), *args]) == 2
    _one_line(capsys, *words)


def test_explain_a_class_index_in_range_still_works(colour_run, capsys):
    assert main(["explain", str(colour_run), "test:0", "--target", "2"]) == 0
    assert "explaining k2" in capsys.readouterr().out


def test_a_photo_target_out_of_range_is_refused():
    from cnnlab.errors import CnnlabError
    from cnnlab.insight.photo import _target

    names = ["a", "b", "c"]
    assert _target(2, names) == 2 and _target("b", names) == 1 and _target("predicted", names) == "predicted"
    for bad in (3, -1, 10**40):
        with pytest.raises(CnnlabError, match=r"out of range: the model has 3 classes \(indices 0..2\)"):
            _target(bad, names)


def test_writing_into_a_read_only_folder_is_one_line(colour_run, read_only, capsys):
    import importlib.util

    cases = [
        ["explain", str(colour_run), "test:0", "--save-array", str(read_only / "maps.npy")],
        ["explain", str(colour_run), "test:0", "--out", str(read_only / "maps.png")],
    ]
    if importlib.util.find_spec("safetensors") is not None:  # the export extra (absent in the plain install)
        cases.append(["export", str(colour_run), "--format", "safetensors", "--out", str(read_only / "m.safetensors")])
    for argv in cases:
        assert main(argv) == 2
        _one_line(capsys, f"cannot write {read_only}", "read-only")
    assert list(read_only.iterdir()) == []


def test_cannot_write_is_one_line_and_still_an_oserror(tmp_path):
    from cnnlab.errors import CnnlabError
    from cnnlab.files import CannotWrite, write_bytes

    with pytest.raises(CannotWrite, match="the folder does not exist") as info:
        write_bytes(tmp_path / "none" / "x.bin", b"1")
    assert isinstance(info.value, CnnlabError) and isinstance(info.value, OSError)
