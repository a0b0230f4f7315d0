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
    ("[run]\nmax_memory = -1.0\n", ["max_memory must be a positive number"]),
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
    from cnnlab.train.config_file import read_config

    assert read_config(path)["data"] == f"folder:{folder}"
    assert main(["train", "--config", str(path), "--print-config"]) == 0
    assert capsys.readouterr().out == printed


def test_print_config_refuses_a_path_that_is_not_utf8(tmp_path, capsys):
    folder = os.fsdecode(os.fsencode(str(tmp_path)) + b"/bad\xff")
    os.mkdir(folder)
    assert main(["train", "--data", f"folder:{folder}", "--print-config"]) == 2
    _one_line(capsys, "not UTF-8")
