"""Data-parallel training with torchrun on CPU processes (gloo), as CI runs it."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


def _env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra)
    env.pop("RANK", None)
    return env


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([*TORCHRUN, str(HERE / "helpers" / "dist_worker.py"), str(out), "train"],
                          env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_parameters_identical_across_ranks_after_each_step(two_ranks):
    a, b = two_ranks
    assert a["world"] == b["world"] == 2
    assert len(a["checksums"]) == 6
    assert a["checksums"] == b["checksums"]
    assert len(set(a["checksums"])) == 6  # and they did change every step


def test_shards_are_disjoint_and_cover_the_data(two_ranks):
    a, b = two_ranks
    # 6 steps of a global batch of 32 over 96 examples: two passes (epochs) over the data,
    # 16 examples per rank per step
    assert len(a["seen"]) == len(b["seen"]) == 6 * 16
    for part in (slice(0, 48), slice(48, 96)):
        assert not set(a["seen"][part]) & set(b["seen"][part])
        assert sorted(a["seen"][part] + b["seen"][part]) == list(range(96))


def test_reduced_metrics_equal_a_single_process_evaluation(two_ranks):
    for r in two_ranks:
        assert r["reduced"] == pytest.approx(r["local"], rel=1e-5)
    def metrics(r):
        return [{k: v for k, v in e.items() if k != "seconds"} for e in r["history"]]

    assert metrics(two_ranks[0]) == metrics(two_ranks[1])
    last = two_ranks[0]["history"][-1]
    assert (last["val_loss"], last["val_accuracy"]) == pytest.approx(tuple(two_ranks[0]["local"]), rel=1e-5)


def test_a_rank_that_dies_ends_the_run_with_an_error(tmp_path):
    t0 = time.monotonic()
    proc = subprocess.run([*TORCHRUN, str(HERE / "helpers" / "dist_worker.py"), str(tmp_path), "die"],
                          env=_env(CNNLAB_DIST_TIMEOUT="15"), capture_output=True, text=True, timeout=200)
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 120
    assert not list(tmp_path.glob("rank*.json"))


def test_cli_end_to_end_on_mnist_subset(tmp_path, datasets_root):
    out = tmp_path / "run"
    cmd = [*TORCHRUN, "-m", "cnnlab", "train", "--data", "mnist", "--model", "intro-cnn", "--train-size", "1024",
           "--epochs", "2", "--batch-size", "128", "--out", str(out), "--no-report", "--offline", "--quiet",
           "--device", "cpu"]
    proc = subprocess.run(cmd, env=_env(CNNLAB_DATA=str(datasets_root)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = (out / "history.csv").read_text().strip().splitlines()
    assert history[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy")
    assert len(history) == 1 + 2
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] > 0.5
    assert proc.stdout.count("run directory:") == 1  # only rank 0 reports


def test_batch_size_must_divide_by_world_size(tmp_path, datasets_root):
    cmd = [*TORCHRUN, "-m", "cnnlab", "train", "--data", "mnist", "--model", "intro-cnn", "--train-size", "256",
           "--epochs", "1", "--batch-size", "63", "--out", str(tmp_path / "r"), "--offline", "--quiet",
           "--device", "cpu"]
    proc = subprocess.run(cmd, env=_env(CNNLAB_DATA=str(datasets_root)), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "batch size 63 is not divisible by the world size 2" in proc.stderr
    assert "Traceback" not in proc.stderr.split("batch size 63")[0][-2000:]


def test_each_torchrun_attempt_keeps_its_own_keys_in_the_shared_store(monkeypatch):
    # torchrun keeps one store across restarts; a restarted rank must not read the keys
    # (peer addresses) that a killed attempt left there.
    import socket

    import torch.distributed as tdist

    from cnnlab.train.distributed import _attempt_store

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = tdist.TCPStore("127.0.0.1", port, 2, is_master=True, wait_for_workers=False)
    server.set("default_pg/0//cpu//0/rank_1", "stale")  # as an init_process_group key might be left
    for attempt in ("0", "1"):
        monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", attempt)
        monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        monkeypatch.setenv("MASTER_PORT", str(port))
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("WORLD_SIZE", "2")
        store, rank, world = _attempt_store(datetime.timedelta(seconds=10))
        assert (rank, world) == (0, 2)
        assert not store.check(["0//cpu//0/rank_1"])  # the stale key is not seen
        store.set("mine", attempt)
        assert server.get(f"cnnlab/attempt_{attempt}/default_pg/mine") == attempt.encode()
