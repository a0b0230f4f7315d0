"""Past one machine, with faults: torchrun restarts after a dead worker, a stalled rank ends the run,
and two "machines" (network namespaces joined by a veth pair) train together over c10d rendezvous."""

from __future__ import annotations

import json
import os
import shutil
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


def _command(out: Path, *extra: str, launcher: list[str] = TORCHRUN, train_size: int = 2048,
             epochs: int = EPOCHS) -> list[str]:
    return [*launcher, *extra, "-m", "cnnlab", "train", "--data", "mnist", "--model", "intro-cnn",
            "--train-size", str(train_size), "--epochs", str(epochs), "--batch-size", "128", "--out", str(out),
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


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def two_hosts():
    """Two network namespaces joined by a veth pair: [(namespace, interface, address), ...] for
    "machine" 0 (10.77.0.1) and 1 (10.77.0.2). Names carry the pid, so parallel runs do not
    clash (each pair has its own namespaces, so the addresses do not either). Removed after the
    test; deleting a namespace deletes its end of the veth pair with it."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("network namespaces need root on Linux (CI runs as root)")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is not installed")
    tag = f"cnl{os.getpid()}"
    hosts = [(f"{tag}-{k}", f"{tag}v{k}", f"10.77.0.{k + 1}") for k in (0, 1)]
    made = []
    steps = [("netns", "add", ns) for ns, _, _ in hosts]
    steps.append(("link", "add", hosts[0][1], "type", "veth", "peer", "name", hosts[1][1]))
    for ns, dev, addr in hosts:
        steps += [("link", "set", dev, "netns", ns), ("-n", ns, "addr", "add", f"{addr}/24", "dev", dev),
                  ("-n", ns, "link", "set", dev, "up"), ("-n", ns, "link", "set", "lo", "up")]
    try:
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0 and ("not permitted" in done.stderr or "Permission denied" in done.stderr):
                # e.g. a container without CAP_NET_ADMIN (or CAP_SYS_ADMIN for `ip netns add`)
                pytest.skip(f"`ip {' '.join(step)}` is not permitted here: {done.stderr.strip()}")
            assert done.returncode == 0, f"ip {' '.join(step)}: {done.stderr.strip()}"
            if step[0] == "netns":
                made.append(step[2])
        yield hosts
    finally:
        for ns in made:
            _ip("netns", "delete", ns)


@pytest.mark.slow
def test_two_machines_over_a_veth_link_train_as_one_standalone_group(tmp_path, datasets_root, two_hosts):
    # One torchrun node per namespace, meeting through c10d rendezvous on machine 0's address.
    # Nothing is shared but the link (and the disk, which the test keeps apart: one --out each).
    # --local-addr: the workers' master address, else torchrun would publish the hostname, which
    # resolves to an address outside the namespaces; GLOO_SOCKET_IFNAME: the same for gloo.
    port, epochs, size = 29400, 2, 1024
    procs = []
    try:
        for k, (ns, dev, addr) in enumerate(two_hosts):
            node = ["ip", "netns", "exec", ns, sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                    "--nproc-per-node=1", f"--node-rank={k}", "--rdzv-backend=c10d",
                    f"--rdzv-endpoint={two_hosts[0][2]}:{port}", f"--rdzv-id=cnnlab-{os.getpid()}",
                    f"--rdzv-conf=is_host={str(k == 0).lower()}", f"--local-addr={addr}"]
            env = _env(datasets_root, GLOO_SOCKET_IFNAME=dev)
            procs.append(subprocess.Popen(_command(tmp_path / f"node{k}", launcher=node, train_size=size, epochs=epochs),
                                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          start_new_session=True))
        results = [proc.communicate(timeout=240) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:  # torchrun and its worker: the whole session
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    for k, (proc, (_, stderr)) in enumerate(zip(procs, results, strict=True)):
        assert proc.returncode == 0, f"node {k}: {stderr[-3000:]}"
    # Rendezvous decides which node holds global rank 0; that node's folder is the run.
    runs = [tmp_path / f"node{k}" for k in (0, 1) if (tmp_path / f"node{k}").exists()]
    assert len(runs) == 1, "exactly one machine (global rank 0's) writes a run directory"
    run = runs[0]
    for name in ("config.json", "history.csv", "last.pt", "best.pt", "metrics.json"):
        assert (run / name).is_file(), name
    assert _epochs_done(run) == epochs
    assert json.loads((run / "config.json").read_text())["world_size"] == 2

    # The same training as two processes on one machine: the same history to the last digit.
    one = tmp_path / "one-machine"
    done = subprocess.run(_command(one, train_size=size, epochs=epochs), env=_env(datasets_root),
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _history(run) == _history(one)
