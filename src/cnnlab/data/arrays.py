"""Array helpers for uint8 image sets: scale to [0, 1], per-channel statistics, one-hot labels."""

from __future__ import annotations

import numpy as np

from cnnlab.errors import CnnlabError


def _check_uint8_nhwc(images: np.ndarray, what: str) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise CnnlabError(
            f"{what} expects uint8 images of shape (N, H, W, C), got {images.dtype} {images.shape}; "
            "pass Split.images as loaded"
        )
    return images


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 images (any shape) -> float32 in [0, 1] (divided by 255, correctly rounded)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise CnnlabError(f"to_float expects uint8 images (0..255), got {images.dtype}; they may be scaled already")
    return np.divide(images, np.float32(255), dtype=np.float32)


# Exact integer sums, one block of images at a time: a uint16 copy holds a pixel's square
# (255**2 = 65,025), and 1,024 rows of those sum to at most 66.6 million, inside uint32, so
# each block reduces in uint32 and the running totals are uint64: exact, single-threaded, and
# unlike a float32 BLAS version not slowed down many times when other processes compete for
# the cores; several times faster than reshape(-1, 3).sum(0) (figures: BENCHMARKS.md).
_ROWS_PER_BLOCK = 1024


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of a uint8 (N, H, W, C) set, in [0, 1] units.

    Returns two float64 arrays of shape (C,). The std is the population std (ddof=0) over all
    N*H*W pixels, as normalisation constants are usually quoted
    (CIFAR-10 train: mean 0.4914/0.4822/0.4465, std 0.2470/0.2435/0.2616).
    """
    images = _check_uint8_nhwc(images, "channel_stats")
    n, h, w, c = images.shape
    if n == 0:
        raise CnnlabError("channel_stats got 0 images; pass a non-empty training set")
    rows = images.reshape(n, h * w * c)  # one image per row, channels interleaved
    total = np.zeros(h * w * c, np.uint64)
    total_sq = np.zeros(h * w * c, np.uint64)
    for start in range(0, n, _ROWS_PER_BLOCK):
        block = rows[start : start + _ROWS_PER_BLOCK].astype(np.uint16)
        total += block.sum(0, dtype=np.uint32)
        block *= block
        total_sq += block.sum(0, dtype=np.uint32)
    count = n * h * w
    mean = total.reshape(h * w, c).sum(0) / count  # uint64 sums, exact; one rounding here
    mean_sq = total_sq.reshape(h * w, c).sum(0) / count
    std = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))
    return mean / 255.0, std / 255.0


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N,) integer labels -> (N, num_classes) float32 with a single 1 per row."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise CnnlabError(f"one_hot expects a 1-D integer label array, got {labels.dtype} {labels.shape}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise CnnlabError(f"one_hot needs num_classes >= 1, got {num_classes!r}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise CnnlabError(f"label {bad} is outside 0..{num_classes - 1}; pass num_classes > {labels.max()}")
    out = np.zeros((len(labels), int(num_classes)), np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out
