"""Keep large freed blocks inside the process, so CPU training and inference stop page-faulting.

glibc's malloc hands blocks above its mmap threshold (128 KiB, rising to at most 32 MiB)
back to the system when they are freed, and serves the next request of that size with
fresh pages that the kernel must fault in and zero. A CNN allocates and frees every
activation on every step: with the thresholds raised, mnist-cnn's training step took under 100
page faults instead of thousands, and VGG-16 inference ran faster (BENCHMARKS.md has the figures).
PyTorch's performance guide reaches for jemalloc or tcmalloc through LD_PRELOAD for the same reason; this does it from inside
the process, on glibc. The cost: memory freed by the network stays with the process (it
is reused by the next step, not returned to the system until the process ends).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_state: bool | None = None


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds, once per process; return whether it is in effect.

    ``CNNLAB_MALLOC=default`` in the environment leaves malloc as it is; so does any C
    library other than glibc (musl, macOS), where this returns False.
    """
    global _state
    if _state is None:
        _state = _raise_thresholds()
    return _state


def status() -> str:
    """Whether the thresholds are raised in this process, in the words of ``cnnlab.fast.status``."""
    if _state is None:
        return "off (not asked for in this process: the cnnlab command turns it on)"
    if _state:
        return "on"
    if os.environ.get("CNNLAB_MALLOC", "").lower() == "default":
        return "off (CNNLAB_MALLOC=default)"
    return "off (not glibc)"


def _raise_thresholds() -> bool:
    if os.environ.get("CNNLAB_MALLOC", "").lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # no glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # 1 GiB: above any single activation of the networks here (VGG-16's largest at batch 8
    # is 103 MB), so they come from the heap and are reused; older glibc caps it lower.
    mmap_ok = any(mallopt(_M_MMAP_THRESHOLD, size) for size in (1 << 30, 32 << 20))
    trim_ok = bool(mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
    return mmap_ok and trim_ok
