"""Evaluate a trained classifier: predictions, metrics, confusion matrix, top losses.

This module runs the model (:func:`predict`, :func:`evaluate_images`, :func:`evaluate_run`);
the metrics are plain NumPy functions in ``cnnlab.insight.metrics`` and image files are read
by ``cnnlab.insight.image_files``. Every name is importable from here, as before the split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.insight.image_files import load_images, read_image
from cnnlab.insight.metrics import (
    TopLoss,
    accuracy,
    compute_metrics,
    confusion_matrix,
    cross_entropy,
    most_confused,
    per_class_metrics,
    top_losses,
    wrong_indices,
)
from cnnlab.insight.stream_images import StreamImages
from cnnlab.precision import autocast
from cnnlab.train.device import resolve_device

__all__ = [
    "Evaluation",
    "StreamImages",
    "TopLoss",
    "accuracy",
    "compute_metrics",
    "confusion_matrix",
    "cross_entropy",
    "evaluate_images",
    "evaluate_run",
    "evaluate_stream",
    "load_images",
    "merged_metrics",
    "most_confused",
    "per_class_metrics",
    "predict",
    "read_image",
    "resolve_device",
    "top_losses",
    "wrong_indices",
]


# --------------------------------------------------------------------------- predictions


def predict(
    model: nn.Module,
    x: torch.Tensor,
    batch_size: int = 1024,
    *,
    device: torch.device | str | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """Class probabilities ``(N, K)`` float32 for the input batch ``x`` ``(N, C, H, W)``.

    The model must return logits; softmax is applied here. Runs in eval mode under
    ``torch.inference_mode`` in batches of ``batch_size`` on ``device`` (default: where the
    model's parameters are), and restores the model's training flag afterwards.
    ``precision``: "auto" computes in bf16 autocast where the hardware has native bf16
    (as training does; top-1 agrees with fp32 on >= 99.9% of MNIST's test set, see
    BENCHMARKS.md), "fp32" or "bf16" to choose.
    """
    _check_batch_size(batch_size)
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        got = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise CnnlabError(f"predict expects a tensor of shape (N, C, H, W), got {got}")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with torch.inference_mode(), autocast(torch.device(device), precision):
            for start in range(0, len(x), batch_size):
                logits = model(x[start : start + batch_size].to(device))
                chunks.append(torch.softmax(logits.float(), dim=1).cpu())
    finally:
        model.train(was_training)
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(chunks).numpy()


def _check_batch_size(batch_size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise CnnlabError(f"batch_size must be a positive integer, got {batch_size!r}")


# --------------------------------------------------------------------------- whole runs


@dataclass(frozen=True, eq=False)
class Evaluation:
    """The outcome of evaluating a model on one split.

    ``probs`` ``(N, K)`` float32, ``labels`` ``(N,)`` int64, ``metrics`` from
    :func:`compute_metrics` (JSON-ready), ``split`` names the data ("test").
    """

    probs: np.ndarray
    labels: np.ndarray
    metrics: dict[str, Any]
    split: str = "test"

    @property
    def preds(self) -> np.ndarray:
        """Predicted class per example ``(N,)`` int64."""
        return self.probs.argmax(1)

    @property
    def confusion_matrix(self) -> np.ndarray:
        return np.asarray(self.metrics["confusion_matrix"], dtype=np.int64)

    def top_losses(self, k: int | None = 10) -> list[TopLoss]:
        return top_losses(self.probs, self.labels, k=k)

    def wrong_indices(self) -> np.ndarray:
        return wrong_indices(self.labels, self.preds)


def evaluate_images(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    preprocess: Callable[[np.ndarray], torch.Tensor],
    classes: Sequence[str],
    batch_size: int = 1024,
    split: str = "test",
    progress: bool = False,
) -> Evaluation:
    """Evaluate ``model`` on uint8 NHWC ``images``, preprocessing one batch at a time.

    Preprocessing per batch keeps memory at one batch of float32 rather than the whole split.
    """
    _check_batch_size(batch_size)
    if len(images) != len(labels):
        raise CnnlabError(f"got {len(images)} images but {len(labels)} labels; pass one label per image")
    if len(images) == 0:
        raise CnnlabError(f"the {split} split has no images, so there is nothing to evaluate")
    starts = range(0, len(images), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"evaluate {split}", unit="batch")
    chunks = [predict(model, preprocess(images[s : s + batch_size]), batch_size) for s in starts]
    probs = np.concatenate(chunks) if chunks else np.zeros((0, len(classes)), np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    metrics = compute_metrics(probs, labels, classes)
    return Evaluation(probs=probs, labels=labels, metrics=metrics, split=split)


def evaluate_stream(
    model: nn.Module,
    split: Any,
    *,
    classes: Sequence[str],
    batch_size: int = 1024,
    split_name: str = "test",
    progress: bool = False,
) -> Evaluation:
    """Evaluate ``model`` on a streamed split (a ``cnnlab.data.stream.FolderStream``), batch by batch.

    The images are decoded by the DataLoader's workers one batch at a time and dropped after
    their forward pass (normalised on the device with the stream's ``mean``/``std``, as in
    training); what is kept is ``K`` probabilities and a label per image, which the metrics
    need (loss, top-5, top losses, confidence) and which are ``H * W * C / (4 * K)`` times
    smaller than the decoded images. Images for the report are decoded again by index
    (:class:`StreamImages`), only for the few examples shown.
    """
    from cnnlab.train.feed import LoaderFeed

    _check_batch_size(batch_size)
    if len(split) == 0:
        raise CnnlabError(f"the {split_name} split has no images, so there is nothing to evaluate")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    # NCHW as run.preprocess gives in-memory images: the same layout, the same arithmetic.
    feed = LoaderFeed(split, batch_size=batch_size, seed=0, device=device, shuffle=False,
                      memory_format=torch.contiguous_format)
    batches = feed.batches()
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, total=feed.steps, desc=f"evaluate {split_name}", unit="batch")
    probs, labels = [], []
    for xb, yb in batches:
        probs.append(predict(model, xb, batch_size))
        labels.append(yb.cpu().numpy())
    probs_a, labels_a = np.concatenate(probs), np.concatenate(labels).astype(np.int64)
    return Evaluation(probs=probs_a, labels=labels_a, metrics=compute_metrics(probs_a, labels_a, classes),
                      split=split_name)


def evaluate_run(
    run: Any, *, batch_size: int = 1024, progress: bool = False, data: Any = None, device: str | None = "cpu"
) -> Evaluation:
    """Evaluate a run's best weights on its dataset's test split.

    ``run`` is a :class:`cnnlab.runs.directory.Run` (``load_run(path)``). ``data`` is the run's dataset
    when the caller has loaded it already (``run.load_data()``, or ``run.load_stream()``). A run
    trained on a streamed folder is evaluated from its files batch by batch
    (:func:`evaluate_stream`). ``device``: where the model runs ("auto" picks CUDA when
    present). Does not write metrics.json; call
    ``cnnlab.runs.directory.save_metrics(run.path, evaluation.metrics)`` for that.
    """
    model = run.build_model(weights="best").to(resolve_device(device))
    if data is None:
        data = run.load_stream() if getattr(run, "streamed", False) else run.load_data()
    split = data.test
    if not hasattr(split, "images"):
        return evaluate_stream(model, split, classes=run.classes, batch_size=batch_size, progress=progress)
    return evaluate_images(
        model,
        split.images,
        split.labels,
        preprocess=run.preprocess,
        classes=run.classes,
        batch_size=batch_size,
        progress=progress,
    )


def merged_metrics(saved: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """``new`` metrics over the ones already in metrics.json (``run.metrics``): keys that
    training wrote and evaluation does not (``epochs``, ``seconds``, ...) are kept."""
    return {**(saved or {}), **new}
