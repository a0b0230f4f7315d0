"""Past one machine, with faults: torchrun restarts after a dead worker, and a stalled rank ends the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
EPOCHS = 5


def _env(datasets_root, **extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", CNNLAB_DATA=str(datasets_root), **extra)
    env.pop("RANK", None)
    return env


def _command(out: Path, *extra: str) -> list[str]:
    return [*TORCHRUN, *extra, "-m", "cnnlab", "train", "--data", "mnist", "--model", "intro-cnn",
            "--train-size", "2048", "--epochs", str(EPOCHS), "--batch-size", "128", "--out", str(out),
            "--no-report", "--offline", "--quiet", "--device", "cpu"]


def _workers(parent: int) -> list[int]:
    """The cnnlab processes torchrun started (its children running cnnlab)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"cnnlab" in cmd:
                found.append(int(entry.name))
    return sorted(found)


def _history(out: Path) -> list[list[str]]:
    rows = [line.split(",") for line in (out / "history.csv").read_text().strip().splitlines()[1:]]
    return [row[:-1] for row in rows]  # all but the seconds


def _epochs_done(out: Path) -> int:
    try:
        return len((out / "history.csv").read_text().strip().splitlines()) - 1
    except OSError:
        return 0


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds torchrun's workers in /proc")
def test_torchrun_restarts_and_cnnlab_resumes_with_the_same_history(tmp_path, datasets_root):
    whole = tmp_path / "whole"
    done = subprocess.run(_command(whole), env=_env(datasets_root), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen(_command(out, "--max-restarts=1"), env=_env(datasets_root),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while _epochs_done(out) < 1 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert _epochs_done(out) < EPOCHS, "the run finished before a worker could be killed"
    workers = _workers(proc.pid)
    assert len(workers) == 2
    os.kill(workers[-1], signal.SIGKILL)  # a worker dies mid-run
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr[-3000:]
    assert _history(out) == _history(whole)  # resumed from last.pt, as if never interrupted


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds torchrun's workers in /proc")
def test_a_stalled_rank_ends_the_others_within_the_timeout(tmp_path, datasets_root):
    out = tmp_path / "stalled"
    env = _env(datasets_root, CNNLAB_DIST_TIMEOUT="10")
    proc = subprocess.Popen(_command(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while _epochs_done(out) < 1 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    workers = _workers(proc.pid)
    assert len(workers) == 2 and _epochs_done(out) < EPOCHS
    os.kill(workers[-1], signal.SIGSTOP)  # stalled: alive, holding its sockets, silent
    t0 = time.monotonic()
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert proc.returncode != 0 and time.monotonic() - t0 < 90
    lines = [line for line in stderr.splitlines() if line.startswith("cnnlab train: error:")]
    assert lines and "another process of the group stopped answering" in lines[0], stderr[-3000:]
    assert "CNNLAB_DIST_TIMEOUT=10" in lines[0]
