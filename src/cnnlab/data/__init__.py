"""Datasets as uint8 NumPy arrays: MNIST, Fashion-MNIST, CIFAR-10 and folders of images.

    >>> from cnnlab import data
    >>> ds = data.load("mnist", train_size=20_000, val_size=0.1)
    >>> ds.train.images.shape, ds.classes[:3]          # (18000, 28, 28, 1), ('0', '1', '2')

Files are searched for in ``root``, ``$CNNLAB_DATA``, the user cache (``~/.cache/cnnlab``)
and ``/usr/share/datasets``, then downloaded (checksum-verified) into the cache if allowed.
This package imports only NumPy (and Pillow/tqdm/matplotlib lazily, when needed) so that
``cnnlab data info`` starts fast; torch tensor transforms live in ``cnnlab.data.transforms``.
"""

from cnnlab.data.arrays import channel_stats, one_hot, to_float
from cnnlab.data.dataset import Dataset, Split
from cnnlab.data.download import fetch
from cnnlab.data.loading import load
from cnnlab.data.registry import DATASETS, DatasetSpec, Download
from cnnlab.data.sources import cache_dir, locate, locations, search_roots

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetSpec",
    "Download",
    "Split",
    "cache_dir",
    "channel_stats",
    "fetch",
    "load",
    "locate",
    "locations",
    "one_hot",
    "search_roots",
    "to_float",
]
