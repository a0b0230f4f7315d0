"""The loss ``fit`` minimises: cross-entropy by default, or the caller's, as PyTorch and Keras take it.

``fit(loss=...)`` accepts a ``torch.nn`` loss module (``nn.CrossEntropyLoss(weight=w)``), any function of
``(logits, targets)`` returning the batch's mean (a scalar) or one loss per example, or one of Keras'
names for cross-entropy. Targets are class indices (one-hot labels are turned into indices first).
Training steps and validation both sum the loss over a batch (``summed``), so epochs average it
over examples exactly, whatever the batch sizes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError

# Keras' and PyTorch's names for the loss fit uses anyway (labels as indices or one-hot: fit accepts both).
CROSS_ENTROPY_NAMES = ("cross_entropy", "crossentropy", "sparse_categorical_crossentropy", "categorical_crossentropy")


def resolve(loss) -> Callable | None:
    """None for cnnlab's cross-entropy (with label smoothing), else the caller's loss function."""
    if loss is None:
        return None
    if isinstance(loss, str):
        if loss.lower() in CROSS_ENTROPY_NAMES:
            return None
        raise CnnlabError(f"unknown loss {loss!r}; pass one of {', '.join(CROSS_ENTROPY_NAMES)}, a torch.nn loss "
                          "module (loss=torch.nn.CrossEntropyLoss()) or a function of (logits, targets)")
    if isinstance(loss, type):
        raise CnnlabError(f"loss={loss.__name__} is a class; pass an instance: loss={loss.__name__}()")
    if not callable(loss):
        raise CnnlabError(f"loss must be a torch.nn loss module or a function of (logits, targets); "
                          f"got {type(loss).__name__}")
    return loss


def summed(loss: Callable | None, logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """The loss summed over the batch (a 0-d tensor)."""
    if loss is None:
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing, reduction="sum")
    value = loss(logits, y)
    if not isinstance(value, torch.Tensor):
        raise CnnlabError(f"the loss function returned {type(value).__name__}, not a tensor; it must return "
                          "the batch's loss as a torch tensor")
    if value.ndim == 0:  # a mean over the batch, as torch's losses return by default
        return value if getattr(loss, "reduction", "mean") == "sum" else value * len(y)
    if value.shape != (len(y),):
        raise CnnlabError(f"the loss function returned shape {tuple(value.shape)}; return a scalar (the batch's "
                          f"mean) or one loss per example ({len(y)},)")
    return value.sum()
