"""What fit() remembers and tells: the History of epoch logs, the EpochEnd that callbacks
receive, TrainingError, and the tracking of the best epoch (monitor, early stopping,
restore_best)."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.train.config import TrainConfig


class TrainingError(CnnlabError):
    """Training cannot go on (a NaN/inf loss); the last finished epoch is kept."""


@dataclass
class History:
    """Per-epoch logs: loss, accuracy, val_loss, val_accuracy, lr, seconds."""

    epochs: list[dict] = field(default_factory=list)

    @property
    def history(self) -> dict[str, list[float]]:
        """Keras' layout: one list per metric."""
        keys = self.epochs[0].keys() if self.epochs else []
        return {k: [e.get(k, math.nan) for e in self.epochs] for k in keys}

    def __len__(self) -> int:
        return len(self.epochs)


@dataclass
class EpochEnd:
    """What a callback sees after each epoch; ``state()`` is the resumable snapshot."""

    epoch: int  # 1-based, epochs finished so far
    logs: dict
    model: nn.Module
    improved: bool  # the monitored metric reached a new best this epoch
    state: Callable[[], dict]


def monitor_value(logs: dict, key: str) -> float:
    value = logs.get(key)
    if value is None or math.isnan(value):
        raise CnnlabError(f"cannot monitor {key!r}: this run has no such metric (give validation data)")
    return -value if "accuracy" in key else value  # lower is better


def track_best(logs: dict, model: nn.Module, cfg: TrainConfig, best: dict, epoch: int) -> bool:
    key = cfg.monitor if (cfg.monitor in logs) else "loss"
    value = monitor_value(logs, key)
    if value < best["value"]:
        best.update(value=value, epoch=epoch, wait=0)
        if cfg.restore_best:
            best["weights"] = copy.deepcopy(model.state_dict())
        return True
    best["wait"] += 1
    return False


def rescore(history: History, cfg: TrainConfig, best: dict) -> None:
    """Rebuild the best-epoch tracking from the history, for a run resumed with a new monitor."""
    best.update(value=math.inf, epoch=0, wait=0)
    for logs in history.epochs:
        key = cfg.monitor if cfg.monitor in logs else "loss"
        value = monitor_value(logs, key)
        if value < best["value"]:
            best.update(value=value, epoch=logs["epoch"], wait=0)
        else:
            best["wait"] += 1
