"""Who may write a run directory: one process at a time, and readers see whole epochs.

Two trainings writing one folder (a second one started with ``--overwrite`` while the first
still runs) used to leave the config of one model beside the weights of the other, both
exiting 0. So a writer holds an exclusive ``flock`` on ``RUN/.cnnlab.lock`` for its whole
life; the operating system drops it when the process ends, however it ends (a kill -9
leaves no stale lock). A second writer is refused at once, with the PID written in the
lock file.

The files of one epoch (``best.pt``, ``last.pt``, ``history.csv``) are each replaced
atomically, but a reader between two of them would see epoch N's history beside epoch
N+1's weights. The writer therefore replaces them under an exclusive lock on
``RUN/.cnnlab.snapshot``, and readers read under a shared one: a few milliseconds each.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from cnnlab.errors import CnnlabError

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are then unguarded, as before
    fcntl = None

LOCK_NAME = ".cnnlab.lock"
SNAPSHOT_NAME = ".cnnlab.snapshot"
# Bookkeeping files of a run folder: they do not make a folder "not empty" or "not a run".
BOOKKEEPING = (LOCK_NAME, SNAPSHOT_NAME)

_HELD: dict[Path, int] = {}  # run folder -> descriptor of its lock file, for this process


def _key(path: Path) -> Path:
    return Path(os.path.abspath(path))


def acquire(path: Path) -> None:
    """Take the writer's lock of run folder ``path`` (created if absent) until :func:`release`.

    Raises CnnlabError naming the PID of the process that holds it.
    """
    path = Path(path)
    key = _key(path)
    if key in _HELD or fcntl is None:
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise CnnlabError(f"{path} is being written by another cnnlab process (PID {holder}); wait for it "
                          "to finish or stop it, or choose another --out") from None
    try:  # the PID is for the message of a refused writer; a full disk must not stop the run here
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
    _HELD[key] = fd


def release(path: Path) -> None:
    fd = _HELD.pop(_key(path), None)
    if fd is not None:
        os.close(fd)  # closing drops the flock


@contextlib.contextmanager
def snapshot(path: Path, *, write: bool) -> Iterator[None]:
    """Exclusive (``write``) or shared lock on the run's epoch files for the block.

    A reader that cannot create the lock file (a read-only folder) reads without it.
    """
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(Path(path) / SNAPSHOT_NAME, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError:
        if write:
            raise
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)
