"""Which state a run directory is in, for the Training panel: told apart, never guessed.

``cnnlab train`` holds an exclusive ``flock`` on ``RUN/.cnnlab.lock`` for its whole life
(``cnnlab.runs.lock``), and writes ``metrics.json`` only when every epoch has finished.
So a run is

- ``deleted``: its folder (or its config.json) is gone;
- ``finished``: metrics.json is there;
- ``training``: a process holds the lock (its PID is in the lock file);
- ``interrupted``: none of these: nobody writes it and it did not finish; it can be resumed.

A run that is training but has no finished epoch yet is "training", not "interrupted": the
lock says someone writes it. The lock is looked up in /proc/locks where there is one, which
takes nothing: a probe that took the lock itself, even for a microsecond, could make a
`cnnlab train` starting at that moment refuse to run.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cnnlab.runs.lock import LOCK_NAME

try:
    import fcntl
except ImportError:  # Windows: runs are unguarded there, and nobody is known to write
    fcntl = None

PROC_LOCKS = Path("/proc/locks")


def _held_in_proc_locks(lock: Path, text: str) -> bool:
    """Whether /proc/locks' ``text`` lists a FLOCK on the file ``lock``.

    Lines read ``1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`` (major:minor in hex, then
    the inode), or with ``->`` for a waiter (which does not hold it).
    """
    st = lock.stat()
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and "->" not in fields and fields[5] == dev:
            return True
    return False


def _held_by_probe(lock: Path) -> bool:
    """Fallback without /proc/locks: try a shared lock, without waiting, and drop it at once."""
    try:
        fd = os.open(lock, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # closing drops a lock we took
    return False


def writer(path: Path) -> str | None:
    """The PID (as written in the lock file) of the process writing run ``path``, or None."""
    lock = Path(path) / LOCK_NAME
    if fcntl is None or not lock.is_file():
        return None
    try:
        held = _held_in_proc_locks(lock, PROC_LOCKS.read_text()) if PROC_LOCKS.is_file() else _held_by_probe(lock)
    except OSError:
        held = _held_by_probe(lock)
    if not held:
        return None
    with contextlib.suppress(OSError):
        return lock.read_text(encoding="ascii", errors="replace").strip() or "unknown"
    return "unknown"


def run_state(path: Path, epochs_done: int, total: int | None) -> dict:
    """{state, message, writer} of the run at ``path`` with ``epochs_done`` epochs in its history."""
    path = Path(path)

    def epochs(n: int, of: str = "") -> str:
        return f"{n}{of} epoch{'' if n == 1 and not of else 's'}"

    if not (path / "config.json").is_file():
        return {"state": "deleted", "writer": None,
                "message": f"run directory deleted: {path} is gone (or has no config.json); nothing more will come"}
    if (path / "metrics.json").is_file():
        return {"state": "finished", "writer": None, "message": f"finished: {epochs(epochs_done)}"}
    pid = writer(path)
    of = f" of {total}" if total else ""
    if pid is not None:
        if epochs_done == 0:
            message = f"training, no epoch finished yet (cnnlab train, PID {pid}, writes this run)"
        else:
            message = f"training: {epochs(epochs_done, of)} finished (PID {pid} writes; updates as epochs finish)"
        return {"state": "training", "writer": pid, "message": message}
    return {"state": "interrupted", "writer": None,
            "message": f"interrupted after {epochs(epochs_done, of)}: nobody writes this run now; "
                       f"resume with `cnnlab train --resume {path}`"}
