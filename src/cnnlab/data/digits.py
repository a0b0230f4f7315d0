"""scikit-learn's bundled 8×8 digits: the offline fallback when no MNIST can be found.

1,797 greyscale 8×8 images of handwritten digits (UCI ML hand-written digits, as shipped
inside scikit-learn, so they load with no file and no network). Pixel values 0..16 are
scaled to 0..255; a seeded per-class split holds out ``test_size`` of each class.
"""

from __future__ import annotations

import numpy as np

from cnnlab.data.dataset import Split
from cnnlab.errors import CnnlabError

CLASSES = tuple(str(d) for d in range(10))


def load_digits(*, seed: int = 0, test_size: float = 0.2) -> tuple[Split, Split, tuple[str, ...], str]:
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise CnnlabError("the 'digits' dataset comes from scikit-learn, which is not installed; "
                          "pip install scikit-learn") from None
    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (1797, 8, 8, 1)
    labels = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for c in range(10):
        members = rng.permutation(np.flatnonzero(labels == c))
        test[members[: int(round(test_size * len(members)))]] = True
    train_idx, test_idx = rng.permutation(np.flatnonzero(~test)), rng.permutation(np.flatnonzero(test))
    return (Split(images[train_idx], labels[train_idx]), Split(images[test_idx], labels[test_idx]),
            CLASSES, "scikit-learn (bundled)")
