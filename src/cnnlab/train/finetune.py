"""Fine-tuning a pretrained network the way fastai's ``fine_tune`` does.

1. For the first ``freeze_epochs`` epochs only the new head trains: the body's parameters
   take no gradient and its batch-norm layers stay in eval mode (they keep normalising
   with ImageNet's statistics instead of drifting toward a few batches of new photos),
   under one one-cycle schedule of their own.
2. Then everything trains, under a second one-cycle schedule at half the learning rate,
   the body at ``body_lr_mult`` times the head's rate (discriminative learning rates:
   early features are general and need less change than the new head).

Which epoch is frozen follows from the epoch number alone and the schedule from the step
number, so a run interrupted in either phase resumes exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.train.optim import DEFAULT_LR, lr_factor

# `cnnlab train --pretrained` starts from these TrainConfig settings (options given
# explicitly win): fastai's fine_tune recipe in cnnlab's terms. AdamW (Adam with decoupled
# weight decay, fastai's default optimiser) at fastai's base rate 2e-3; one-cycle with 30%
# warm-up (fastai's pct_start); one frozen epoch; the body at a tenth of the head's rate;
# photos get a random resized crop (at least 35% of the area, as for small images in
# fastai's aug_transforms/min_scale) and a horizontal flip; light label smoothing.
FINETUNE_DEFAULTS = {
    "optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.01, "schedule": "onecycle", "warmup": 0.3,
    "freeze_epochs": 1, "body_lr_mult": 0.1, "label_smoothing": 0.1, "epochs": 5,
    "augment": "resized-crop=0.35,flip-h",
}
# After the frozen phase fastai halves the base learning rate (fine_tune: base_lr /= 2).
UNFROZEN_LR_SCALE = 0.5


def _is_bn(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


class Phases:
    """Parameter groups, per-group schedules and the freezing of the body for ``fit``."""

    def __init__(self, model: nn.Module, head: nn.Module | Iterable[nn.Parameter], *, freeze_epochs: int,
                 body_lr_mult: float) -> None:
        if freeze_epochs < 0:
            raise CnnlabError(f"freeze_epochs must be >= 0, got {freeze_epochs}")
        if not 0 < body_lr_mult <= 1:
            raise CnnlabError(f"body_lr_mult must be in (0, 1], got {body_lr_mult}; e.g. 0.1")
        head_params = list(head.parameters() if isinstance(head, nn.Module) else head)
        ids = {id(p) for p in head_params}
        if not head_params or not ids <= {id(p) for p in model.parameters()}:
            raise CnnlabError("the head must be a non-empty part of the model (a submodule or its parameters)")
        self.head = head_params
        self.body = [p for p in model.parameters() if id(p) not in ids]
        self.body_bn = [m for m in model.modules() if _is_bn(m) and not any(id(p) in ids for p in m.parameters())]
        self.freeze_epochs, self.body_lr_mult = freeze_epochs, body_lr_mult
        self._hooks: list = []
        self.frozen: bool | None = None

    def param_groups(self, optimizer: str, lr: float | None) -> list[dict]:
        base = DEFAULT_LR[optimizer.lower()] if lr is None else lr
        return [{"params": self.body, "lr": base * self.body_lr_mult}, {"params": self.head, "lr": base}]

    def lr_lambdas(self, schedule: str, *, epochs: int, steps_per_epoch: int, **kwargs) -> list[Callable]:
        """[body factor, head factor] of the global step: frozen phase, then unfrozen phase."""
        frozen_steps = min(self.freeze_epochs, epochs) * steps_per_epoch
        free = lr_factor(schedule, total_steps=max(epochs * steps_per_epoch - frozen_steps, 1),
                         steps_per_epoch=steps_per_epoch, **kwargs)
        first = lr_factor(schedule, total_steps=max(frozen_steps, 1), steps_per_epoch=steps_per_epoch, **kwargs)
        scale = UNFROZEN_LR_SCALE if frozen_steps else 1.0

        def head(t: int) -> float:
            return first(t) if t < frozen_steps else scale * free(t - frozen_steps)

        def body(t: int) -> float:
            return 0.0 if t < frozen_steps else scale * free(t - frozen_steps)

        return [body, head]

    def begin_epoch(self, epoch: int) -> bool:
        """Freeze or unfreeze the body for 0-based ``epoch``; True when that changed anything."""
        frozen = epoch < self.freeze_epochs
        if frozen == self.frozen:
            return False
        self.frozen = frozen
        for p in self.body:
            p.requires_grad_(not frozen)
            if frozen:
                p.grad = None
        for handle in self._hooks:
            handle.remove()
        # A forward pre-hook, not .eval(): every loop calls model.train() each epoch, and the
        # hook holds the frozen BN layers in eval mode through that.
        self._hooks = [m.register_forward_pre_hook(_hold_eval) for m in self.body_bn] if frozen else []
        return True

    def release(self) -> None:
        """Unfreeze everything and remove the hooks (at the end of fit)."""
        self.begin_epoch(self.freeze_epochs)


def _hold_eval(module: nn.Module, args) -> None:
    module.training = False

