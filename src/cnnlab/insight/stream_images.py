"""A run's test images, whether decoded in memory or streamed from a folder too large for it.

An in-memory run's test split is a uint8 array ``(N, H, W, C)``. A streamed run's
(``cnnlab.data.stream``) is a list of files; :class:`StreamImages` makes it look like that
array where the insight code needs it, without decoding the split:

- indexing (``images[i]``, ``images[[3, 7]]``, ``images[:5]``) decodes only the images asked
  for, in this process: for the few images a command shows or explains;
- :func:`image_batches` gives every image once, a batch at a time, decoded in the split's
  DataLoader workers: for what needs each test image's activations (the embedding map, a
  channel's top examples), holding one batch (plus the loader's prefetch) at a time;
- :func:`take` makes a lazy subset (a seeded sample, the first ``max_test``).

Batches come back as uint8 NHWC, as the in-memory array's slices do, so the caller
preprocesses both with ``Run.preprocess``: the same arithmetic, the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from cnnlab.errors import CnnlabError

__all__ = ["StreamImages", "image_batches", "load_test_images", "take"]


class StreamImages:
    """A streamed split's images (a ``cnnlab.data.stream.FolderStream``), or the subset at
    ``positions`` of it, as uint8 ``(n, H, W, C)`` on indexing, decoded only for the indices
    asked for: what the report shows (top losses, wrong predictions, activations) without
    holding the split in memory."""

    def __init__(self, split: Any, positions=None) -> None:
        self.split = split
        self.positions = np.arange(len(split)) if positions is None else np.asarray(positions, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.split.labels, dtype=np.int64)[self.positions]

    def _empty(self) -> np.ndarray:
        h, w = self.split.size
        return np.zeros((0, h, w, 1 if self.split.mode == "L" else 3), np.uint8)

    def __getitem__(self, index):
        from cnnlab.data.stream import decode

        def one(i):
            return decode(self.split.files[int(i)], self.split.size, self.split.mode)

        if np.ndim(index) == 0 and not isinstance(index, slice):
            return one(self.positions[index])
        picked = [one(i) for i in self.positions[index]]
        return np.stack(picked) if picked else self._empty()

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Every image once, in order, as uint8 ``(B, H, W, C)`` batches of ``batch_size`` (the last
        may be smaller), decoded by a DataLoader with the split's workers."""
        from torch.utils.data import DataLoader, Subset

        whole = len(self.positions) == len(self.split) and np.array_equal(self.positions, np.arange(len(self.split)))
        data = self.split if whole else Subset(self.split, self.positions.tolist())
        workers = getattr(self.split, "loader_options", {}).get("num_workers", 0)
        for x, _ in DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=workers):
            yield x.permute(0, 2, 3, 1).numpy()  # (B, C, H, W) -> (B, H, W, C), as the in-memory array


def image_batches(images, batch_size: int) -> Iterator:
    """``images`` in order, ``batch_size`` at a time: slices of an array (or tensor), or the
    batches of a :class:`StreamImages` (decoded in loader workers, one batch held at a time)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise CnnlabError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
    if isinstance(images, StreamImages):
        yield from images.batches(batch_size)
        return
    for start in range(0, len(images), batch_size):
        yield images[start:start + batch_size]


def take(images, index):
    """``images[index]`` (a slice or an index array): decoded for an array, a lazy :class:`StreamImages`
    of those images for a streamed split (nothing decoded until indexed or batched)."""
    if isinstance(images, StreamImages):
        return StreamImages(images.split, images.positions[index])
    return images[index]


def load_test_images(run, data=None) -> tuple[Any, np.ndarray]:
    """A run's test split as ``(images, labels (N,) int64)``: the uint8 array of an in-memory run,
    or a :class:`StreamImages` for a streamed one (``run.streamed``: nothing decoded here).
    ``data`` is the run's dataset when the caller has it (``run.load_data()`` or ``run.load_stream()``)."""
    if data is None:
        data = run.load_stream() if getattr(run, "streamed", False) else run.load_data()
    split = data.test
    images = split.images if hasattr(split, "images") else StreamImages(split)
    return images, np.asarray(split.labels, dtype=np.int64)
