"""What ``fit`` takes as PyTorch and Keras users write it, besides TrainConfig's settings:

- ``optimizer=``: a name (``"sgd"``, a TrainConfig setting), a ``torch.optim.Optimizer`` built on
  the model's parameters (``torch.optim.SGD(model.parameters(), lr=0.1)``), or a factory called
  with the trainable parameters (``torch.optim.AdamW``, ``functools.partial(torch.optim.SGD, lr=0.1)``,
  ``lambda params: ...``);
- ``validation_split=``: Keras' fraction of the arrays held out for validation, taken from the end
  before any shuffling.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.train.feed import is_loader_data

# TrainConfig settings that belong to the optimiser cnnlab builds: meaningless beside the caller's own.
OPTIMIZER_SETTINGS = ("lr", "momentum", "nesterov", "weight_decay", "betas")


def user_optimizer(optimizer, model: nn.Module, settings: dict) -> torch.optim.Optimizer | None:
    """The caller's optimiser (``optimizer`` an instance or a factory), or None for a name or nothing."""
    if optimizer is None or isinstance(optimizer, str):
        return None
    if not (isinstance(optimizer, torch.optim.Optimizer) or callable(optimizer)):
        raise CnnlabError(f"optimizer must be a name such as 'adam', a torch.optim.Optimizer or a function of the "
                          f"parameters; got {type(optimizer).__name__}")
    clash = [k for k in OPTIMIZER_SETTINGS if settings.get(k) is not None]
    if clash:
        raise CnnlabError(f"{', '.join(clash)} cannot be set beside your own optimizer; set them on it, e.g. "
                          "torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)")
    if not isinstance(optimizer, torch.optim.Optimizer):
        made = optimizer([p for p in model.parameters() if p.requires_grad])
        if not isinstance(made, torch.optim.Optimizer):
            raise CnnlabError(f"the optimizer factory returned {type(made).__name__}, not a torch.optim.Optimizer; "
                              "pass e.g. optimizer=lambda params: torch.optim.SGD(params, lr=0.1)")
        return made
    own = {id(p) for p in model.parameters()}
    given = [p for group in optimizer.param_groups for p in group["params"]]
    if not given or any(id(p) not in own for p in given):
        raise CnnlabError("the optimizer was built on parameters that are not this model's; build it on "
                          "model.parameters() of the model you pass to fit, or pass a factory such as "
                          "torch.optim.SGD")
    return optimizer


def split_validation(x, y, fraction) -> tuple:
    """((x_train, y_train), (x_val, y_val)): the last ``fraction`` of the examples held out, as Keras does."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0.0 < fraction < 1.0:
        raise CnnlabError(f"validation_split must be a fraction between 0 and 1 (e.g. 0.1); got {fraction!r}")
    if y is None and isinstance(x, (tuple, list)) and len(x) == 2:
        x, y = x
    if is_loader_data(x) or y is None:
        raise CnnlabError("validation_split needs arrays or tensors x and y; for a Dataset or DataLoader pass "
                          "validation_data= a second one")
    n = len(x)
    if len(y) != n:
        raise CnnlabError(f"{n} inputs but {len(y)} labels; they must match")
    held = int(n * fraction)  # Keras' rounding: the last floor(n * fraction) examples
    if held == 0 or held == n:
        raise CnnlabError(f"validation_split={fraction} of {n} examples leaves "
                          f"{'no validation' if held == 0 else 'no training'} examples; pick a fraction that "
                          "keeps some of both")
    return (x[: n - held], y[: n - held]), (x[n - held :], y[n - held :])
