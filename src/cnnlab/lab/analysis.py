"""The lab's views of a target that are not one forward pass: what it is, the test set's
errors, the learned filters, and the panels built on cnnlab.insight's attribution,
feature visualisation and embeddings.
"""

from __future__ import annotations

import importlib.util

import numpy as np
from torch import nn

from cnnlab.insight.internals import filter_images, layer_type
from cnnlab.insight.predictions import confusion_matrix
from cnnlab.lab.compute import feature_map, units
from cnnlab.lab.imaging import LabError, png_b64, to_uint8
from cnnlab.lab.targets import evaluated
from cnnlab.scratch.kernels import KERNELS


def available(module: str) -> bool:
    """Whether an optional package (the ``explain`` extra's umap-learn) is installed."""
    return importlib.util.find_spec(module) is not None


def info(target) -> dict:
    """What the page needs to set itself up. A run still before its first epoch has no
    weights yet: ``waiting`` says so and the page shows only its training curves."""
    try:
        model, waiting = target.model, None
    except LabError as exc:
        if exc.status != 409:
            raise
        # A run without weights: training with no epoch done yet, interrupted, or deleted (runstate).
        model, waiting = nn.Module(), (target.waiting() if hasattr(target, "waiting") else None) or exc.message
    layers = [{"name": n, "type": layer_type(m), "conv": isinstance(m, nn.Conv2d)} for n, m in units(model)]
    return {
        "name": target.name, "kind": target.kind, "model": target.model_name, "waiting": waiting,
        "classes": list(target.classes), "input_shape": list(target.input_shape),
        "layers": layers,
        "conv_layers": [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)],
        # A colour kernel (3-D weights) needs an RGB image: not offered for a grey model's inputs.
        "kernels": {name: k.description for name, k in KERNELS.items()
                    if np.ndim(k.weights) == 2 or int(target.input_shape[2]) == 3},
        "has_test": target.kind == "run",  # a pretrained network has no test set: no errors, no map
        "umap": available("umap"),
    }


def map_image(target, item, layer: str, channel: int) -> np.ndarray:
    return to_uint8(feature_map(target.model, item.x, layer, channel))


def pick(target, kind: str, seed: int) -> dict:
    """A test image: ``random`` or ``wrong`` (one the model gets wrong), seeded by the page."""
    target = evaluated(target)
    labels = target.evaluated_labels()
    rng = np.random.default_rng(seed)
    if kind == "random":
        return {"input": f"test:{int(rng.integers(len(labels)))}"}
    if kind != "wrong":
        raise LabError(400, f"kind must be 'random' or 'wrong', got {kind[:40]!r}")
    wrong = np.flatnonzero(target.probs().argmax(1) != labels)
    if not len(wrong):
        raise LabError(404, "the model gets every test image right: there is no wrong one to show")
    return {"input": f"test:{int(rng.choice(wrong))}"}


def confusion(target) -> dict:
    target = evaluated(target)
    probs = target.probs()
    labels = target.evaluated_labels()
    preds = probs.argmax(1)
    cm = confusion_matrix(labels, preds, len(target.classes))
    return {"classes": list(target.classes), "matrix": cm.tolist(), "n": int(len(labels)),
            "accuracy": float((preds == labels).mean())}


def cell(target, actual: int, predicted: int, limit: int) -> dict:
    """The test images of one confusion cell, most confident first, with both probabilities."""
    target = evaluated(target)
    k = len(target.classes)
    if not (0 <= actual < k and 0 <= predicted < k):
        raise LabError(404, f"no cell ({actual}, {predicted}); classes are 0..{k - 1}")
    probs = target.probs()
    labels = target.evaluated_labels()
    idx = np.flatnonzero((labels == actual) & (probs.argmax(1) == predicted))
    idx = idx[np.argsort(-probs[idx, predicted], kind="stable")][:max(1, min(limit, 500))]
    items = [{"index": int(i), "input": f"test:{int(i)}", "predicted_prob": float(probs[i, predicted]),
              "actual_prob": float(probs[i, actual])} for i in idx]
    return {"actual": target.classes[actual], "predicted": target.classes[predicted],
            "count": int(((labels == actual) & (probs.argmax(1) == predicted)).sum()), "items": items}


def filters_view(target, layer: str | None) -> dict:
    """A conv layer's learned filters as one PNG grid (RGB for a colour first layer)."""
    from cnnlab.insight.internals import filters

    model = target.model
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    name = layer or (convs[0] if convs else None)
    if name not in convs:
        raise LabError(404, f"no conv layer {str(layer)[:60]!r}; pick one of {convs}")
    weights = filters(model, name)  # (out, in, kh, kw)
    patches = filter_images(weights[:64, :16] if weights.shape[1] != 3 else weights[:64])
    n, kh, kw = patches.shape[:3]
    cols = 16 if weights.shape[1] == 3 or weights.shape[1] > 8 else weights.shape[1] * max(1, 8 // weights.shape[1])
    cols = min(cols, n)
    rows = -(-n // cols)
    pad = 1  # a dark line between patches
    grid = np.zeros((rows * (kh + pad), cols * (kw + pad), *patches.shape[3:]), dtype=np.uint8)
    for i, patch in enumerate((patches * 255).astype(np.uint8)):
        r, c = divmod(i, cols)
        grid[r * (kh + pad):r * (kh + pad) + kh, c * (kw + pad):c * (kw + pad) + kw] = patch
    return {"layer": name, "layers": convs, "shape": list(weights.shape), "shown": int(n), "cols": cols,
            "png": png_b64(grid), "min": float(weights.min()), "max": float(weights.max()),
            # filter_images scales every patch by the layer's global min and max: this bar is that scale.
            "colorbar": png_b64(np.arange(256, dtype=np.uint8)[None])}
