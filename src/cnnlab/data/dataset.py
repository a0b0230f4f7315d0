"""The two value types every loader returns: a ``Split`` and a ``Dataset``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class Split:
    """One split of a dataset.

    images: (N, H, W, C) uint8, channels last, 0..255.
    labels: (N,) int64 class indices into ``Dataset.classes``.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.dtype != np.uint8:
            got = f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
            raise CnnlabError(f"Split images must be a uint8 (N, H, W, C) array, got {got}")
        if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype != np.int64:
            got = f"{getattr(labels, 'dtype', type(labels).__name__)} {getattr(labels, 'shape', '')}"
            raise CnnlabError(f"Split labels must be an int64 (N,) array, got {got}")
        if len(images) != len(labels):
            raise CnnlabError(f"Split has {len(images)} images but {len(labels)} labels; give one label per image")

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self, num_classes: int) -> np.ndarray:
        """(num_classes,) int64: how many images each class has in this split."""
        return np.bincount(self.labels, minlength=num_classes)


@dataclass(frozen=True)
class Dataset:
    """Train and test splits (and an optional validation split) with class names.

    name: "mnist", "fashion-mnist", "cifar10" or "folder:PATH".
    source: where the files were found, for messages and ``cnnlab data list``.
    """

    name: str
    train: Split
    test: Split
    classes: tuple[str, ...]
    val: Split | None = None
    source: str = ""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        h, w, c = self.train.images.shape[1:]
        return (int(h), int(w), int(c))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def splits(self) -> dict[str, Split]:
        """The splits present, in the order train, val, test."""
        out = {"train": self.train}
        if self.val is not None:
            out["val"] = self.val
        out["test"] = self.test
        return out
