"""Training: configuration and recipes, the loop (``fit``), the step, optimisers, torchrun,
and where it runs. The run directory (checkpoints, resume, config files) is ``cnnlab.runs``.

``from cnnlab.train import fit, TrainConfig`` keeps working as before the package split. The
names load lazily, so importing ``cnnlab.train`` does not import torch.
"""

import importlib

# Each name from its one home (the curated spelling is cnnlab.fit, cnnlab.TrainConfig, ...).
_LAZY = {"fit": "cnnlab.train.loop", "evaluate_loss_accuracy": "cnnlab.train.validation"}
_LAZY.update({name: "cnnlab.train.history" for name in ("EpochEnd", "History", "TrainingError")})
_LAZY.update({name: "cnnlab.train.config" for name in
              ("Hyperparams", "RECIPES", "Runtime", "RunConfig", "TrainConfig", "get_recipe", "with_overrides")})
_LAZY.update({name: "cnnlab.train.callbacks" for name in ("Callback", "StopTraining")})
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cnnlab.train' has no attribute {name!r}")
