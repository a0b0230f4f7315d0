"""Atomic writes for the exporters (temp file beside the target, then rename).

A stand-in with the signature of ``cnnlab.files.write_with``, which is landing in
parallel; the exporters switch to it once it is on main.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from cnnlab.train.runs import _atomic_write


def write_with(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    def to_file(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)

    _atomic_write(Path(path), to_file)
    return Path(path)
