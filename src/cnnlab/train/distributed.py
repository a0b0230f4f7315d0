"""PyTorch's own distributed engine, as cnnlab uses it: nothing home-made.

``torchrun`` starts one process per GPU (or per CPU slot) and sets RANK, WORLD_SIZE,
LOCAL_RANK and the rendezvous variables; ``setup()`` joins the group (NCCL on GPUs,
gloo on CPUs). With one process nothing is initialised and every helper below is the
identity, so single-process training runs exactly the same code.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as tdist

from cnnlab.errors import CnnlabError

# A rank that dies must not leave the others waiting forever: collectives give up after
# this long and raise, which ends the run with an error instead of a hang.
DEFAULT_TIMEOUT_S = 300


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def setup(device: str = "auto", timeout_s: float | None = None) -> str:
    """Join the process group when started by torchrun; return the device this rank uses."""
    if not launched_by_torchrun() or tdist.is_initialized():
        return device
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        if local >= torch.cuda.device_count():
            raise CnnlabError(
                f"torchrun started more processes per machine than it has GPUs ({torch.cuda.device_count()}); "
                f"use --nproc-per-node={torch.cuda.device_count()} or train on CPU processes with --device cpu"
            )
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    elif device == "auto":
        device = "cpu"
    timeout = datetime.timedelta(seconds=timeout_s or float(os.environ.get("CNNLAB_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
    try:
        store, rank_, world = _attempt_store(timeout)
        tdist.init_process_group("nccl" if use_cuda else "gloo", store=store, rank=rank_, world_size=world,
                                 timeout=timeout)
    except Exception as exc:  # rendezvous failures come in many types; say it in one line
        raise CnnlabError(f"could not join the torchrun process group: {exc}") from exc
    return device


def _attempt_store(timeout: datetime.timedelta):
    """The rendezvous store, with its keys kept apart per torchrun attempt.

    torchrun keeps one TCP store for all restarts of a worker group (by default in torch
    2.13: TORCH_DISABLE_SHARE_RDZV_TCP_STORE unset), and ``init_process_group`` names its
    keys the same in every attempt. A restarted rank could then read the address a killed
    worker had published and fail with "Connection refused" (seen in CI). Prefixing the
    keys with the restart count makes each attempt meet only its own peers."""
    store, rank_, world = next(tdist.rendezvous("env://", timeout=timeout))
    store.set_timeout(timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or "0"
    return tdist.PrefixStore(f"cnnlab/attempt_{attempt}/default_pg", store), rank_, world


def teardown(*, failed: bool = False) -> None:
    """Leave the group together: a rank that destroys its group while a peer is still
    talking to it can abort that peer ("terminate called without an active exception").
    After a failure (``failed``) no peer is waited for: it may be the one that is gone."""
    if tdist.is_initialized():
        try:
            if not failed:
                tdist.barrier()
        finally:
            tdist.destroy_process_group()


def restarted() -> bool:
    """True in a worker that torchrun (torchelastic) started again after the group failed."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0


# What gloo and NCCL say when a peer stops answering (stalled, e.g. SIGSTOP) or dies.
_PEER_SIGNS = ("timed out", "timeout", "connection closed by peer", "connection reset by peer", "broken pipe",
               "connection refused", "nccl communicator was aborted")


def peer_failure(exc: BaseException) -> str | None:
    """One line saying another rank stalled or died, if ``exc`` is that; else None."""
    if world_size() == 1 and not launched_by_torchrun():
        return None
    text = str(exc).lower()
    if not any(sign in text for sign in _PEER_SIGNS):
        return None
    timeout = os.environ.get("CNNLAB_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)
    kind = "stopped answering" if "time" in text else "disconnected"
    return (f"rank {os.environ.get('RANK', '?')}: another process of the group {kind} "
            f"(CNNLAB_DIST_TIMEOUT={timeout} s); it stalled, died or lost the network")


def world_size() -> int:
    return tdist.get_world_size() if tdist.is_initialized() else 1


def rank() -> int:
    return tdist.get_rank() if tdist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all processes (a copy); the identity with one process."""
    if world_size() == 1:
        return t
    out = t.clone()
    if out.device.type == "cpu" and tdist.get_backend() == "nccl":
        out = out.cuda()
    tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
    return out.to(t.device)


def barrier() -> None:
    if world_size() > 1:
        tdist.barrier()


def broadcast_object(obj):
    """Rank 0's value of ``obj`` on every rank (e.g. a decision only rank 0 can make)."""
    if world_size() == 1:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]
