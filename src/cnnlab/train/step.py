"""One training step (forward, loss, backward, optimiser update), run eagerly or replayed
from a CUDA graph.

A small network's step on a GPU is a few dozen kernels of a few microseconds each, so
launching them from Python costs more than running them: mnist-fast on an H100 spends
about 3 ms per step on the host and 0.5 ms on the GPU. ``GraphStep`` records the whole
step once as a CUDA graph (PyTorch's "whole network capture") and then launches it with
one call per batch. Everything that changes between steps lives in fixed device tensors
that the graph reads: the batch's indices, its augmentation draws and the learning rate.

Both kinds add the step's summed loss and its number of correct predictions to
``sums`` on the device, so nothing in a step makes the host wait for the GPU.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.data.transforms import Augment, apply_augment, augment, augment_draws
from cnnlab.errors import CnnlabError
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


class GraphStep:
    """``EagerStep`` for full batches of ``batch`` examples, captured once as a CUDA graph.

    Use ``GraphStep.capture``; a batch of another size (the last, partial one of an epoch)
    runs eagerly on the same model and optimiser.
    """

    def __init__(self, eager: EagerStep, batch: int) -> None:
        if not 1 <= batch <= len(eager.x):
            raise CnnlabError(f"a CUDA graph step needs a batch of 1 to {len(eager.x)} examples, got {batch}")
        if eager.x.device.type != "cuda":
            raise CnnlabError(f"CUDA graphs need the data on a CUDA device, got {eager.x.device}")
        dev = eager.x.device
        self.eager, self.batch = eager, batch
        self.model, self.sums = eager.model, eager.sums
        self.idx = torch.zeros(batch, dtype=torch.long, device=dev)
        k = len(augment_draws(eager.aug, 0))  # rows of random numbers a step uses (none drawn here)
        self.draws = torch.full((k, batch), 0.5, device=dev)
        self.lrs = [torch.tensor(float(g["lr"]), device=dev) for g in eager.opt.param_groups]
        self.graph: torch.cuda.CUDAGraph | None = None

    @classmethod
    def capture(cls, eager: EagerStep, batch: int, *, warmup: int = 3) -> tuple[GraphStep | None, str]:
        """Record the step; returns (GraphStep, "") or (None, why it could not be captured).

        Capturing runs ``warmup`` real steps first (CUDA graphs need the optimiser's state
        and the libraries' workspaces to exist), so the model's weights and buffers, the
        optimiser's state and the CUDA random state are put back afterwards: training then
        starts exactly where it stood.
        """
        self = cls(eager, batch)
        model, opt = eager.model, eager.opt
        dev = eager.x.device
        tensors = [*model.parameters(), *model.buffers()]
        saved = [t.detach().clone() for t in tensors]
        saved_state = {p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for p, s in opt.state.items()}
        rng = torch.cuda.get_rng_state(dev)
        floats = [g["lr"] for g in opt.param_groups]
        flags = [g.get("capturable") for g in opt.param_groups]
        for group, lr in zip(opt.param_groups, self.lrs, strict=True):
            group["lr"] = lr  # the graph reads the learning rate from this tensor
            if "capturable" in group:
                group["capturable"] = True
        why = ""
        try:
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    opt.zero_grad(set_to_none=True)
                    self._body()
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            opt.zero_grad(set_to_none=True)  # captured backward then writes (not adds) the gradients
            with torch.cuda.graph(graph):
                self._body()
            self.graph = graph
        except Exception as exc:  # any op that cannot be captured: train eagerly instead
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        for group, lr, flag in zip(opt.param_groups, floats, flags, strict=True):
            group["lr"] = lr
            if self.graph is None and flag is not None:
                group["capturable"] = flag
        with torch.no_grad():
            for t, v in zip(tensors, saved, strict=True):
                t.copy_(v)
            for p in list(opt.state):
                before = saved_state.get(p)
                if before is None and self.graph is None:
                    del opt.state[p]  # as fresh as before the warm-up
                    continue
                for k, v in opt.state[p].items():
                    if torch.is_tensor(v):  # a fresh state is all zeros (Adam, SGD's momentum, Adadelta)
                        v.copy_(before[k]) if before is not None and k in before else v.zero_()
            self.sums.zero_()
        torch.cuda.set_rng_state(rng, dev)
        opt.zero_grad(set_to_none=self.graph is None)
        return (self, "") if self.graph is not None else (None, why)

    def _body(self) -> None:
        e = self.eager
        xb = apply_augment(e.x[self.idx], e.aug, self.draws)
        e.forward_backward_update(xb, e.y[self.idx], 1.0 / self.batch, cache=False)

    def __call__(self, idx: torch.Tensor, global_batch: int) -> None:
        if len(idx) != self.batch:
            self.eager(idx, global_batch)
            return
        self.idx.copy_(idx)
        if len(self.draws):  # the same draws, in the same order, as the eager step would make
            draws = augment_draws(self.eager.aug, self.batch, self.eager.aug_gen)
            self.draws.copy_(draws.pin_memory(), non_blocking=True)
        for lr, group in zip(self.lrs, self.eager.opt.param_groups, strict=True):
            lr.fill_(group["lr"])
        self.graph.replay()
