"""A cache of parsed arrays, so a dataset comes back in well under a second after its first load.

Why: the first load parses (MNIST: gunzip and a content MD5; CIFAR-10: 180 MB read and every
pixel moved from R,G,B planes to channels-last; a folder of JPEGs: seconds to minutes).
Afterwards ``np.load`` of uncompressed .npy files reads CIFAR-10's 150 MB of training images
from the page cache an order of magnitude faster (BENCHMARKS.md) and returns ordinary writable
arrays (no memory map: read-only or copy-on-write memmaps surprise users and make
``torch.from_numpy`` warn).

Where: ``<user cache>/parsed/<name>-<key>/``, with one .npy per array and ``meta.json``.
The key hashes the cache version, the dataset name, each source file's resolved path, size and
mtime (so replacing a file invalidates it) and the parse options.
How it is written: into a hidden temporary folder beside the entry, renamed into place when
complete (atomic), so an entry either exists whole or not at all; a write that fails (read-only
or full disk) is skipped silently and leaves nothing behind. Stale entries are not pruned:
delete ``<user cache>/parsed`` to reclaim the space.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from cnnlab.files import cache_dir, make_temporary_folder

VERSION = 1


def key_for(name: str, files: list[Path], options: dict) -> str:
    """A hex key that changes when any source file or parse option changes."""
    stats = []
    for f in files:
        st = os.stat(f)
        stats.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns])
    blob = json.dumps([VERSION, name, stats, options], sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def entry_dir(name: str, key: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:40]
    return cache_dir() / "parsed" / f"{slug}-{key}"


def read(name: str, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
    """(arrays, meta) from the cache, or None when absent or unreadable."""
    entry = entry_dir(name, key)
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        arrays = {k: np.load(entry / f"{k}.npy", allow_pickle=False) for k in meta["arrays"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return arrays, meta


def write(name: str, key: str, arrays: dict[str, np.ndarray], meta: dict) -> bool:
    """Store an entry atomically; replace an unreadable one. Returns False if it could not."""
    entry = entry_dir(name, key)
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = make_temporary_folder(entry.parent, entry.name)  # normal permissions, unlike mkdtemp
        # The files inside are written plainly, not through cnnlab.files: the folder is the unit
        # that is renamed into place when complete, and a damaged entry is parsed again (read()
        # returns None), so a cache never needs a per-file fsync or turns a full disk into an error.
        for k, array in arrays.items():
            np.save(tmp / f"{k}.npy", np.ascontiguousarray(array), allow_pickle=False)
        meta = {**meta, "version": VERSION, "name": name, "arrays": list(arrays)}
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        if entry.exists():
            if read(name, key) is not None:  # someone else just wrote it
                return True
            trash = make_temporary_folder(entry.parent, "trash")
            os.rename(entry, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(tmp, entry)
        tmp = None
        return True
    except OSError:
        return False
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
