"""Optimisers and learning-rate schedules, by name, as the tutorials and Keras use them.

Every schedule is a multiplier of the base learning rate as a function of the global
iteration ``t`` (0-based) and the total number of iterations, applied through one
``LambdaLR`` stepped after every batch. That keeps resume exact: the scheduler's whole
state is the iteration count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from cnnlab.errors import CnnlabError

# Default learning rates are the libraries' own (PyTorch's, which equal Keras' except
# Adadelta, whose Keras 3 default of 0.001 barely moves; the tutorial's Keras 2 used 1.0).
# Muon's 0.24 is airbench94_muon's (cnnlab.train.muon).
DEFAULT_LR = {"adam": 1e-3, "adamw": 1e-3, "sgd": 0.01, "adadelta": 1.0, "muon": 0.24}
SCHEDULES = ("constant", "step", "cosine", "onecycle", "linear")


def make_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    *,
    lr: float | None = None,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    batch_size: int | None = None,
) -> torch.optim.Optimizer:
    """Build an optimiser by name: adam, adamw, sgd (momentum, Nesterov), adadelta or muon.

    muon (``cnnlab.train.muon``): Muon on conv filters at ``lr`` with ``momentum``, SGD on the
    other parameters at airbench's rates scaled by ``batch_size``; ``weight_decay`` is per
    example there (airbench's 2e-6).
    """
    key = name.lower()
    if key not in DEFAULT_LR:
        raise CnnlabError(f"unknown optimizer {name!r}; choose one of {', '.join(DEFAULT_LR)}")
    lr = DEFAULT_LR[key] if lr is None else lr
    if lr <= 0:
        raise CnnlabError(f"learning rate must be positive, got {lr}")
    if nesterov and (key not in ("sgd", "muon") or momentum <= 0):
        raise CnnlabError("nesterov needs --optimizer sgd (or muon) with a momentum > 0, e.g. --momentum 0.9")
    params = list(params)
    if key == "muon":
        from cnnlab.train.muon import Muon, muon_groups

        if params and isinstance(params[0], dict):
            raise CnnlabError("muon groups parameters by shape itself; it cannot take parameter groups "
                              "(e.g. fine-tuning's discriminative rates): pick another optimizer")
        return Muon(muon_groups(params, lr=lr, batch_size=batch_size or 1, weight_decay=weight_decay),
                    lr=lr, momentum=momentum, nesterov=nesterov)
    # The fused kernel (the whole update in one pass over each tensor) where torch has one
    # for these tensors' device, else one multi-tensor "foreach" kernel per operation. Fused
    # Adam's step ran several times faster than foreach's on the CPU too (BENCHMARKS.md).
    if key == "adadelta":  # no fused kernel exists
        return torch.optim.Adadelta(params, lr=lr, weight_decay=weight_decay, foreach=True)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[key]
    args = {"momentum": momentum, "nesterov": nesterov} if key == "sgd" else {"betas": betas}
    if _fusable(params):
        try:
            return cls(params, lr=lr, weight_decay=weight_decay, fused=True, **args)
        except (TypeError, RuntimeError):  # an older torch without this fused kernel
            pass
    return cls(params, lr=lr, weight_decay=weight_decay, foreach=True, **args)


def _fusable(params: list) -> bool:
    """Whether every parameter (in plain lists or parameter groups) is a floating-point
    tensor on the CPU or a CUDA device, where torch has fused Adam, AdamW and SGD kernels."""
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    return bool(tensors) and all(isinstance(p, torch.Tensor) and p.is_floating_point()
                                 and p.device.type in ("cpu", "cuda") for p in tensors)


def lr_factor(
    schedule: str,
    *,
    total_steps: int,
    steps_per_epoch: int,
    decay: float = 0.0,
    step_epochs: int = 10,
    gamma: float = 0.1,
    warmup: float = 0.25,
) -> Callable[[int], float]:
    """Return ``f(t)``, the multiplier of the base learning rate at iteration ``t``.

    - constant: 1.
    - step: times ``gamma`` every ``step_epochs`` epochs.
    - cosine: half a cosine from 1 to 0 over the run.
    - onecycle: linear warm-up from 0.1 to 1 over the first ``warmup`` fraction of the run,
      then linear down to 0 (Smith & Topin 2017, the shape fast-MNIST/airbench recipes use).
    - linear: from 1 straight down to 0 over the run, no warm-up (airbench94_muon's).
    ``decay`` multiplies any of them by Keras' time-based decay ``1 / (1 + decay * t)``
    (the tutorial's SGD: lr 0.01, Nesterov, decay 1e-6).
    """
    if schedule not in SCHEDULES:
        raise CnnlabError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if decay < 0:
        raise CnnlabError(f"decay must be >= 0, got {decay}")
    total = max(int(total_steps), 1)
    per_epoch = max(int(steps_per_epoch), 1)
    peak = max(int(round(warmup * total)), 1)

    def shape(t: int) -> float:
        if schedule == "step":
            return gamma ** (t // (per_epoch * max(step_epochs, 1)))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))
        if schedule == "onecycle":
            if t < peak:
                return 0.1 + 0.9 * t / peak
            return max(0.0, (total - t) / max(total - peak, 1))
        if schedule == "linear":
            return max(0.0, 1.0 - t / total)
        return 1.0

    def factor(t: int) -> float:
        return shape(t) / (1.0 + decay * t)

    return factor
