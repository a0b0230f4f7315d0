"""Run directories: an epoch's files are written as one unit, even under Ctrl-C."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from torch import nn

from cnnlab.runs import directory as runs
from cnnlab.train.config import TrainConfig
from cnnlab.train.loop import fit


def test_ctrl_c_while_an_epoch_is_saved_lands_after_all_its_files(tmp_path, monkeypatch):
    """On a GPU an epoch can take milliseconds, so a Ctrl-C often arrives mid-save; it used to
    leave last.pt one epoch ahead of history.csv."""
    real_save = runs.save_checkpoint

    def save_then_interrupt(path, obj):
        real_save(path, obj)
        if path.name == "best.pt":  # before last.pt and history.csv are written
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(runs, "save_checkpoint", save_then_interrupt)
    out = runs.create_run(tmp_path / "run", {"model": "tiny"})
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(32, 1, 4, 4), torch.randint(0, 3, (32,))
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        fit(model, x, y, config=TrainConfig(epochs=5, batch_size=16, verbose=0, device="cpu"),
            callbacks=[runs.checkpointer(out)])
    assert runs.load_checkpoint(out / "last.pt")["epoch"] == 1
    assert len(runs.read_history(out / "history.csv")) == 1
    assert signal.getsignal(signal.SIGINT) is handler  # the usual Ctrl-C handling is back


def test_deferral_without_an_interrupt_changes_nothing():
    handler = signal.getsignal(signal.SIGINT)
    with runs.interrupts_deferred():
        value = 1 + 1
    assert value == 2 and signal.getsignal(signal.SIGINT) is handler
