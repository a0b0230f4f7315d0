"""Metrics of a classifier's predictions: accuracy, loss, confusion matrix, per-class
precision/recall/F1, most-confused pairs and top losses. NumPy only: no model, no torch.

The vocabulary follows fastai's ``interpret.py`` (``confusion_matrix``, ``most_confused``,
``top_losses``), with one change its users asked for: a top loss reports both the
predicted class with its probability and the actual class with its probability.
The confusion matrix and precision/recall/F1 are scikit-learn's (``sklearn.metrics``, imported
when first used); this module checks the inputs and keeps fastai's ``most_confused`` and
``top_losses``, which scikit-learn does not have.

``probs`` is ``(N, K)`` float (rows sum to 1), ``labels`` and ``preds`` are ``(N,)``
integers in ``[0, K)``. Every metric is vectorised, so 100 classes cost no more than 10.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from cnnlab.errors import CnnlabError


def _check(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise CnnlabError(
            f"probs must be (N, K) and labels (N,); got {probs.shape} and {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= probs.shape[1]):
        raise CnnlabError(
            f"labels must lie in [0, {probs.shape[1]}), got values from {labels.min()} to {labels.max()}"
        )
    return probs, labels.astype(np.int64, copy=False)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose highest probability is at the true label."""
    probs, labels = _check(probs, labels)
    return float((probs.argmax(1) == labels).mean()) if len(labels) else math.nan


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-example loss ``-log p[true]`` ``(N,)`` float64.

    Probabilities that underflowed to 0 in float32 are clipped to the smallest normal float32,
    so the loss is finite (at most ~87.3) rather than inf.
    """
    probs, labels = _check(probs, labels)
    p_true = probs[np.arange(len(labels)), labels].astype(np.float64)
    return -np.log(np.maximum(p_true, np.finfo(np.float32).tiny))


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` int64 counts: row = actual class, column = predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    if labels.shape != preds.shape or labels.ndim != 1:
        raise CnnlabError(
            f"labels and preds must be 1-D of equal length, got {labels.shape} and {preds.shape}"
        )
    for name, arr in (("labels", labels), ("preds", preds)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise CnnlabError(
                f"{name} must lie in [0, {num_classes}), got values from {arr.min()} to {arr.max()}"
            )
    from sklearn.metrics import confusion_matrix as sklearn_confusion_matrix

    # labels= fixes the K x K shape even when a class never occurs in either array.
    cm = sklearn_confusion_matrix(labels, preds, labels=np.arange(num_classes))
    return cm.astype(np.int64, copy=False)


def per_class_metrics(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 (float64, 0 where undefined) and support (int64) per class.

    ``cm`` is a confusion matrix with actual classes as rows (see :func:`confusion_matrix`).
    """
    from sklearn.metrics import precision_recall_fscore_support

    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or (cm.size and cm.min() < 0):
        raise CnnlabError(f"a confusion matrix is (K, K) counts >= 0; got shape {cm.shape}")
    k = cm.shape[0]
    support = cm.sum(axis=1).astype(np.int64)  # row sums: how often each class occurs
    if not cm.sum():  # no examples at all: every score is undefined, hence 0
        zeros = np.zeros(k)
        return {"precision": zeros, "recall": zeros.copy(), "f1": zeros.copy(), "support": support}
    # The (actual, predicted) pairs the matrix counts, for scikit-learn's y_true / y_pred interface.
    rows, cols = np.indices(cm.shape)
    counts = cm.astype(np.int64).ravel()
    actual, predicted = np.repeat(rows.ravel(), counts), np.repeat(cols.ravel(), counts)
    precision, recall, f1, _ = precision_recall_fscore_support(actual, predicted, labels=np.arange(k),
                                                               zero_division=0.0)
    return {"precision": precision.astype(np.float64), "recall": recall.astype(np.float64),
            "f1": f1.astype(np.float64), "support": support}


def most_confused(
    cm: np.ndarray, *, classes: Sequence[str] | None = None, min_count: int = 1
) -> list[tuple[Any, Any, int]]:
    """Off-diagonal cells with at least ``min_count`` examples, largest first.

    Each entry is ``(actual, predicted, count)``, with class names when ``classes`` is given
    and class indices otherwise (fastai's ``most_confused(min_val)``). Ties keep row-major order.
    """
    cm = np.asarray(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off >= max(min_count, 1))
    counts = off[rows, cols]
    order = np.argsort(-counts, kind="stable")
    if classes is None:
        return [(int(rows[i]), int(cols[i]), int(counts[i])) for i in order]
    return [(classes[rows[i]], classes[cols[i]], int(counts[i])) for i in order]


def wrong_indices(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """Indices (int64, ascending) of the examples whose prediction differs from the label."""
    return np.flatnonzero(np.asarray(preds) != np.asarray(labels)).astype(np.int64)


class TopLoss(NamedTuple):
    """One example among the largest losses: both sides of the mistake, with probabilities."""

    index: int
    loss: float
    predicted: int
    predicted_prob: float
    actual: int
    actual_prob: float


def top_losses(probs: np.ndarray, labels: np.ndarray, *, k: int | None = 10) -> list[TopLoss]:
    """The ``k`` examples with the largest cross-entropy loss (all when ``k`` is None), largest first."""
    probs, labels = _check(probs, labels)
    losses = cross_entropy(probs, labels)
    k = len(losses) if k is None else max(0, min(k, len(losses)))
    if k == 0:
        return []
    # argpartition then sort the k: O(N + k log k), not a full sort of N losses.
    idx = np.argpartition(-losses, k - 1)[:k]
    idx = idx[np.argsort(-losses[idx], kind="stable")]
    preds = probs[idx].argmax(1)
    return [
        TopLoss(
            index=int(i),
            loss=float(losses[i]),
            predicted=int(p),
            predicted_prob=float(probs[i, p]),
            actual=int(labels[i]),
            actual_prob=float(probs[i, labels[i]]),
        )
        for i, p in zip(idx, preds, strict=True)
    ]


def compute_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    *,
    n_top_losses: int = 50,
) -> dict[str, Any]:
    """Every summary metric as a JSON-ready dict (plain Python numbers, lists and strings).

    Keys: ``n``, ``num_classes``, ``classes``, ``loss``, ``accuracy``, ``top5_accuracy``
    (None for fewer than 6 classes), ``macro`` and ``weighted`` (precision/recall/F1),
    ``per_class`` (list of {class, precision, recall, f1, support}), ``confusion_matrix``
    (rows = actual), ``most_confused`` (list of [actual, predicted, count] names),
    ``top_losses`` (the ``n_top_losses`` largest, as dicts of :class:`TopLoss` fields with
    class names added) and ``n_wrong``.
    """
    probs, labels = _check(probs, labels)
    k = probs.shape[1]
    if len(classes) != k:
        raise CnnlabError(f"got {len(classes)} class names for {k} probability columns; pass one per class")
    preds = probs.argmax(1)
    cm = confusion_matrix(labels, preds, k)
    pc = per_class_metrics(cm)
    support = pc["support"]
    weights = support / support.sum() if support.sum() else np.zeros(k)
    top5 = None
    if k > 5 and len(labels):
        top5_idx = np.argpartition(-probs, 4, axis=1)[:, :5]
        top5 = float((top5_idx == labels[:, None]).any(axis=1).mean())
    names = list(classes)
    return {
        "n": int(len(labels)),
        "num_classes": int(k),
        "classes": names,
        "loss": float(cross_entropy(probs, labels).mean()) if len(labels) else None,
        "accuracy": float((preds == labels).mean()) if len(labels) else None,
        "top5_accuracy": top5,
        "n_wrong": int((preds != labels).sum()),
        "macro": {m: float(pc[m].mean()) for m in ("precision", "recall", "f1")},
        "weighted": {m: float((pc[m] * weights).sum()) for m in ("precision", "recall", "f1")},
        "per_class": [
            {
                "class": names[c],
                "precision": float(pc["precision"][c]),
                "recall": float(pc["recall"][c]),
                "f1": float(pc["f1"][c]),
                "support": int(support[c]),
            }
            for c in range(k)
        ],
        "confusion_matrix": cm.tolist(),
        "most_confused": [list(t) for t in most_confused(cm, classes=names)],
        "top_losses": [
            {**t._asdict(), "predicted_class": names[t.predicted], "actual_class": names[t.actual]}
            for t in top_losses(probs, labels, k=n_top_losses)
        ],
    }
