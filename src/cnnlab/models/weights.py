"""Checks that a state dict really holds weights for a model, before it is loaded.

``load_state_dict`` accepts integer tensors for float parameters (it casts them) and
tensors full of NaN or infinity; a model built from them predicts nonsense, ranking
classes by NaN without a word. And when keys or shapes differ it raises a RuntimeError
of many lines. ``check_state_dict`` turns each of these into a one-line CnnlabError that
names the file, the first bad tensor and what is wrong with it.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.errors import CnnlabError


def _listing(label: str, items: list[str]) -> str:
    return f"{label} ({len(items)}): {', '.join(items[:3])}{', ...' if len(items) > 3 else ''}"


def check_state_dict(model: nn.Module, state, *, source: str, name: str, fix: str) -> None:
    """Raise a CnnlabError unless ``state`` fits ``model``: a dict of tensors with the model's
    keys and shapes, floating point where the model's are, and every floating value finite.

    ``source`` names the file in the message, ``name`` the model, ``fix`` says what to do.
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CnnlabError(f"weights {source} hold a {type(state).__name__}, not a state dict of tensors; {fix}")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
                 if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or misshaped:
        parts = [_listing(label, items) for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if items]
        raise CnnlabError(f"weights {source} do not fit {name}: {'; '.join(parts)}; {fix}")
    for key, ref in expected.items():
        value = state[key]
        if ref.is_floating_point() and not value.is_floating_point():
            raise CnnlabError(f"weights {source}: {key} has dtype {value.dtype} where {name} needs floating "
                              f"point; these are not trained weights, {fix}")
        if value.is_floating_point() or value.is_complex():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise CnnlabError(f"weights {source}: {key} holds {bad} NaN or infinite value(s) of "
                                  f"{value.numel()}; the training diverged or the file is damaged, {fix}")
