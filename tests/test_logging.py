"""What a library caller sees besides return values goes through ``logging`` (the "cnnlab"
loggers) or a ``verbose``/``progress`` switch, so it can be silenced or redirected; the
command line shows the library's warnings in its own one-line form."""

from __future__ import annotations

import logging
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cnnlab.data import load
from cnnlab.data.stream import stream_folder
from cnnlab.train import session
from cnnlab.train.config import TrainConfig
from cnnlab.train.loop import fit


@pytest.fixture()
def photos(photos):
    """conftest's folder of 3 classes x 10 PNGs, and 2 files that are not images."""
    (photos / "dog" / "notes.jpg").write_text("not a photo")
    (photos / "owl" / "broken.png").write_bytes(b"\x89PNG\r\n")
    return photos


@pytest.fixture()
def good(photos, tmp_path):
    """Two classes of 10 readable images each."""
    root = tmp_path / "good"
    for c in ("cat", "owl"):
        (root / c).mkdir(parents=True)
        for f in (photos / c).glob("[0-9].png"):
            (root / c / f.name).write_bytes(f.read_bytes())
    return root


@pytest.fixture()
def stderr_logging():
    """A caller who configures logging as basicConfig does: call it for a root handler printing
    to stderr (inside the test, so that it prints to the stderr capfd captures)."""
    root, handlers = logging.getLogger(), []
    old = root.level

    def configure():
        handlers.append(logging.StreamHandler(sys.stderr))
        root.addHandler(handlers[-1])
        root.setLevel(logging.INFO)

    yield configure
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(old)
    logging.getLogger("cnnlab").setLevel(logging.NOTSET)


def _fit_tiny(**settings):
    torch.manual_seed(0)
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 3, (32,))
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    return fit(model, x, y, config=TrainConfig(epochs=2, batch_size=16, seed=0, device="cpu", **settings))


def test_fit_with_verbose_0_prints_nothing_and_logs_each_epoch(capfd, caplog):
    with caplog.at_level(logging.INFO, logger="cnnlab"):
        history = _fit_tiny(verbose=0)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    lines = [r.getMessage() for r in caplog.records if r.name == "cnnlab.train.loop"]
    assert [line.split(" - ")[0] for line in lines] == ["Epoch 1/2", "Epoch 2/2"]
    assert f"loss: {history.epochs[-1]['loss']:.4f}" in lines[-1]


def test_fit_with_verbose_2_prints_the_epoch_lines_on_stdout(capfd):
    _fit_tiny(verbose=2)
    out, err = capfd.readouterr()
    assert [line.split(" - ")[0] for line in out.splitlines()] == ["Epoch 1/2", "Epoch 2/2"] and err == ""


def test_a_configured_root_logger_hears_cnnlab_until_cnnlab_is_set_to_critical(photos, good, stderr_logging,
                                                                                 capfd):
    stderr_logging()
    logging.getLogger("cnnlab").setLevel(logging.CRITICAL)
    _fit_tiny(verbose=0)
    st = stream_folder(f"folder:{photos}", skip_bad=True, workers=0)
    load(f"folder:{good}", progress=False, cache=False)
    assert len(st.skipped) == 2
    assert capfd.readouterr() == ("", "")

    logging.getLogger("cnnlab").setLevel(logging.NOTSET)  # back to the root's INFO
    _fit_tiny(verbose=0)
    stream_folder(f"folder:{photos}", skip_bad=True, workers=0)
    out, err = capfd.readouterr()
    assert out == ""
    assert "Epoch 2/2 - " in err
    assert "left out 2 of 32 files" in err and "dog/notes.jpg, owl/broken.png" in err


def test_skipped_files_are_a_warning_with_their_count(photos, caplog):
    with caplog.at_level(logging.WARNING, logger="cnnlab"):
        stream_folder(f"folder:{photos}", skip_bad=True, workers=0)
    (record,) = [r for r in caplog.records if r.name == "cnnlab.data.stream"]
    assert record.levelno == logging.WARNING and "left out 2 of 32 files" in record.getMessage()


def test_load_says_where_the_data_came_from_and_whether_the_cache_answered(good, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    name = f"folder:{good}"
    with caplog.at_level(logging.INFO, logger="cnnlab"):
        load(name, progress=False)
        first = [r.getMessage() for r in caplog.records]
        caplog.clear()
        load(name, progress=False)
        second = [r.getMessage() for r in caplog.records]
    assert any(f"16 train, 0 val and 4 test images from {good}" in m for m in first)
    assert not any("from the cache" in m for m in first)
    assert any("decoded images read from the cache" in m for m in second)


def test_cuda_graph_fallback_is_a_logged_warning_not_a_python_warning(monkeypatch, caplog):
    monkeypatch.delenv("CNNLAB_FAST", raising=False)  # CI's leg with every fast path off would skip the attempt
    from cnnlab.fast.graph import GraphStep

    monkeypatch.setattr(GraphStep, "capture", classmethod(lambda cls, step, batch: (None, "a host read")))
    fake = SimpleNamespace(cfg=TrainConfig(batch_size=4, epochs=1), device=torch.device("cuda"), feed=None,
                           phases=None, start_epoch=0, step=SimpleNamespace(x=torch.zeros(8), model=torch.nn.Linear(1, 1)))
    with caplog.at_level(logging.WARNING, logger="cnnlab"):
        session.Session.maybe_graph(fake)  # pytest's filterwarnings=error would turn a warnings.warn into a failure
    (record,) = caplog.records
    assert record.name == "cnnlab.train.session" and "CUDA graph (a host read)" in record.getMessage()
    assert "cuda_graphs=False" in record.getMessage()


def test_the_command_line_prints_library_warnings_in_one_line(photos, tmp_path, capsys):
    from cnnlab.cli import main

    assert main(["train", "--data", f"folder:{photos}", "--model", "conv4k3-relu,gap,dense3", "--epochs", "1",
                 "--batch-size", "8", "--quiet", "--no-report", "--offline", "--skip-bad", "--workers", "1",
                 "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("cnnlab train: warning: left out 2 of 32 files in ") and err.count("\n") == 1
    assert len(logging.getLogger("cnnlab").handlers) == 1  # the command's handler is gone, the NullHandler stays
