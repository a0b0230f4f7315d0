"""One training step (forward, loss, backward, optimiser update), run eagerly: plain PyTorch.

On a GPU the fast path ``cnnlab.fast.graph.GraphStep`` replays this same step from a CUDA graph.
Both kinds add the step's summed loss and its number of correct predictions to
``sums`` on the device, so nothing in a step makes the host wait for the GPU.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.data.transforms import Augment, augment
from cnnlab.precision import autocast
from cnnlab.train.losses import summed


class EagerStep:
    """A training step run op by op from Python: any model, any device, any world size."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                 aug: Augment, aug_gen: torch.Generator, label_smoothing: float = 0.0, precision: str = "auto",
                 world: int = 1, loss=None) -> None:
        self.model, self.opt, self.x, self.y = model, opt, x, y
        self.aug, self.aug_gen = aug, aug_gen
        self.label_smoothing, self.precision, self.world = label_smoothing, precision, world
        self.loss = loss  # None: cross-entropy; else the caller's (cnnlab.train.losses)
        self.sums = torch.zeros(2, dtype=torch.float64, device=x.device)  # loss sum, correct

    def __call__(self, idx: torch.Tensor, global_batch: int) -> None:
        """Train on the examples ``idx`` (this process's share of a global batch)."""
        xb = augment(self.x[idx], self.aug, self.aug_gen)
        self.opt.zero_grad(set_to_none=True)
        self.forward_backward_update(xb, self.y[idx], self.world / global_batch)

    def forward_backward_update(self, xb: torch.Tensor, yb: torch.Tensor, scale: float, *, cache: bool = True) -> None:
        with autocast(xb.device, self.precision, cache=cache):
            logits = self.model(xb)
        # Sum over the local slice, divided by the global batch: DDP's gradient average
        # over ranks then yields exactly the single-process mean.
        loss_sum = summed(self.loss, logits.float(), yb, self.label_smoothing)
        (loss_sum * scale).backward()
        self.opt.step()
        with torch.no_grad():
            self.sums[0] += loss_sum.detach()
            self.sums[1] += (logits.argmax(1) == yb).sum()
