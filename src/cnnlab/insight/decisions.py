"""Why a trained run decided: Grad-CAM of its worst mistakes and a layer sweep, as plain data.

For the report's "Why it decided" section: each top-loss test image explained twice, for
the class it is (actual) and the class the model said (predicted), so the two maps can be
compared side by side; and every conv layer's Grad-CAM of one image, so no one has to
guess which layer to look at. Computed here, rendered by ``cnnlab.report.why``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from cnnlab.insight.attribution import gradcam_maps
from cnnlab.insight.internals import conv_layers

__all__ = ["DecisionMaps", "explain_decisions"]


@dataclass(frozen=True, eq=False)
class DecisionMaps:
    """Grad-CAM of ``layer`` for ``images`` uint8 (n, H, W, C) (test indices ``indices``):
    ``actual_maps`` / ``predicted_maps`` (n, H, W) for ``labels`` / ``predicted``, with those
    classes' probabilities; ``sweep`` {layer: (H, W)} of test image ``sweep_index`` for its
    predicted class, every conv layer's rectified unit in the order they run."""

    layer: str
    indices: np.ndarray
    images: np.ndarray
    labels: np.ndarray
    predicted: np.ndarray
    actual_probs: np.ndarray
    predicted_probs: np.ndarray
    actual_maps: np.ndarray
    predicted_maps: np.ndarray
    sweep_index: int
    sweep: dict[str, np.ndarray]


def explain_decisions(model: nn.Module, preprocess: Callable, images: np.ndarray, losses: Sequence, *,
                      n: int = 8) -> DecisionMaps | None:
    """Grad-CAM of the first ``n`` top losses (``cnnlab.insight.predictions.TopLoss``, their
    images ``images`` uint8 (len(losses), H, W, C) in the same order) for their actual and
    predicted classes, and a layer sweep of the worst one. None when there is nothing to
    explain (no losses, or a model without a conv layer)."""
    losses = list(losses)[:n]
    if not losses or not conv_layers(model):
        return None
    images = np.asarray(images)[: len(losses)]
    x = preprocess(images)
    labels = np.array([t.actual for t in losses])
    predicted = np.array([t.predicted for t in losses])
    actual, _, layers, _ = gradcam_maps(model, x, labels)
    said, _, _, _ = gradcam_maps(model, x, predicted, layers=layers)
    sweep, _, _, _ = gradcam_maps(model, x[:1], predicted[:1], layers=["sweep"])
    return DecisionMaps(
        layer=layers[0], indices=np.array([t.index for t in losses]), images=images, labels=labels,
        predicted=predicted, actual_probs=np.array([t.actual_prob for t in losses]),
        predicted_probs=np.array([t.predicted_prob for t in losses]), actual_maps=actual[layers[0]],
        predicted_maps=said[layers[0]], sweep_index=int(losses[0].index), sweep={k: v[0] for k, v in sweep.items()})
