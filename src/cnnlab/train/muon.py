"""Muon for convolution filters, SGD with Nesterov momentum for the rest: the optimiser of
airbench94_muon (Keller Jordan's CIFAR-10 speed record, 94% in 8 epochs).

Muon ("MomentUm Orthogonalized by Newton-schulz") keeps SGD's momentum buffer, but steps
each filter bank (a conv weight seen as an out x (in*k*k) matrix) along the nearest
semi-orthogonal matrix to it: every direction of the update gets about the same size,
so the rarely-excited directions of a layer learn as fast as the dominant ones. The
orthogonalisation is a few Newton-Schulz iterations of an odd quintic in bf16, cheap next
to the convolutions (about 1% of a CIFAR-10 step here). As airbench does, each filter
bank is also rescaled to a fixed norm before its step, so the step size stays a fixed
fraction of the weights (batch norm after every conv makes the scale of a filter
irrelevant to the output).

Written here, not taken from ``torch.optim.Muon``: PyTorch's takes 2-D parameters only
(conv filters are 4-D), has no weight normalisation and no auxiliary SGD groups, and a
learning-rate schedule needs all groups in one optimiser.

Parameters are grouped by shape (``muon_groups``): conv filters (>= 3-D) take Muon; the
classifier's weights (2-D) and biases and batch-norm shifts (1-D) take SGD with Nesterov
momentum 0.85, at airbench's rates. airbench sums its loss over the batch; cnnlab averages
it, so those SGD rates are multiplied by the batch size (the same steps as airbench's at
any batch size: the linear scaling rule). Muon's update does not depend on the gradient's
scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from cnnlab.errors import CnnlabError

# airbench94_muon's rates at its Muon rate of 0.24, as ratios to it: biases 0.053, head 0.67
# (per summed example), and its Muon/SGD momenta.
BIAS_RATIO = 0.053 / 0.24
HEAD_RATIO = 0.67 / 0.24
SGD_MOMENTUM = 0.85
# The quintic's coefficients (airbench/modded-nanogpt): chosen to make the iteration's slope at
# zero as steep as possible, so 3 steps push every singular value into roughly [0.5, 1.5]
# (not exactly to 1, which training does not need).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """An approximately semi-orthogonal matrix near ``g`` (2-D): ``U V^T`` of its SVD, with
    singular values left roughly in [0.5, 1.5] by ``steps`` Newton-Schulz iterations in bf16."""
    if g.ndim != 2:
        raise CnnlabError(f"orthogonalize takes a matrix (2-D), got shape {tuple(g.shape)}")
    a, b, c = NS_COEFFICIENTS
    x = g.to(torch.bfloat16)
    x = x / (x.norm() + eps)  # every singular value <= 1, where the iteration converges
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


def muon_groups(params: Iterable[torch.nn.Parameter], *, lr: float, batch_size: int,
                weight_decay: float = 0.0) -> list[dict]:
    """Parameter groups for :class:`Muon`: filters (>= 3-D) orthogonalised at ``lr``; 2-D weights
    and 1-D parameters by SGD at airbench's ratios to ``lr`` times ``batch_size``.

    ``weight_decay`` is per example, as airbench writes it (2e-6): each step shrinks the SGD
    groups' weights by ``weight_decay * batch_size`` times the schedule's factor.
    """
    if not (lr > 0 and math.isfinite(lr)):
        raise CnnlabError(f"muon's learning rate must be a positive number, got {lr}")
    if batch_size < 1:
        raise CnnlabError(f"batch_size must be at least 1, got {batch_size}")
    if not weight_decay >= 0:
        raise CnnlabError(f"weight_decay must be >= 0, got {weight_decay}")
    trainable = [p for p in params if p.requires_grad]
    filters = [p for p in trainable if p.ndim >= 3]
    heads = [p for p in trainable if p.ndim == 2]
    biases = [p for p in trainable if p.ndim <= 1]
    groups = [{"params": filters, "lr": lr, "orthogonal": True}]
    for ps, ratio in ((heads, HEAD_RATIO), (biases, BIAS_RATIO)):
        group_lr = lr * ratio * batch_size
        # torch's coupled L2 term times the group's rate gives a fixed shrink per step
        groups.append({"params": ps, "lr": group_lr, "orthogonal": False,
                       "weight_decay": weight_decay * batch_size / group_lr})
    return [g for g in groups if g["params"]]


class Muon(torch.optim.Optimizer):
    """Muon on groups marked ``orthogonal``, SGD with Nesterov momentum on the others.

    Every group: ``lr``, ``momentum`` (default: ``momentum`` for Muon groups, 0.85 for
    SGD groups), ``nesterov``, ``weight_decay`` (SGD groups, coupled L2 as torch's SGD).
    The momentum buffer starts at the first gradient, as torch's SGD does.
    """

    def __init__(self, params, lr: float = 0.24, momentum: float = 0.6, nesterov: bool = True,
                 weight_decay: float = 0.0) -> None:
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay,
                    "orthogonal": True}
        super().__init__(params, defaults)
        for group in self.param_groups:
            if not group["orthogonal"] and group["momentum"] == momentum:
                group["momentum"] = SGD_MOMENTUM

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu, nesterov = group["lr"], group["momentum"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not group["orthogonal"] and group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = g.detach().clone()
                else:
                    state["momentum_buffer"].mul_(mu).add_(g)
                buf = state["momentum_buffer"]
                update = g.add(buf, alpha=mu) if nesterov else buf
                if group["orthogonal"]:
                    p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))  # a fixed norm (see the module doc)
                    update = orthogonalize(update.reshape(len(update), -1)).view(p.shape)
                p.add_(update, alpha=-lr)
        return loss
