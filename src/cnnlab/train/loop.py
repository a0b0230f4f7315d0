"""fit(): the training loop, with the feedback Keras users know.

Data lives on the training device as one tensor; each step indexes a batch out of it
(no DataLoader, no per-sample Python). The same loop runs one process or many: under
``torchrun`` every process takes a disjoint slice of each global batch, the model is
wrapped in DistributedDataParallel, and epoch metrics are all-reduced, so the history
equals what one process computes on the same data (see ``cnnlab.train.distributed``).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.transforms import to_tensor
from cnnlab.errors import CnnlabError
from cnnlab.train import distributed as dist
from cnnlab.train.config import TrainConfig
from cnnlab.train.device import resolve_device
from cnnlab.train.memory import keep_freed_memory
from cnnlab.train.optim import lr_factor, make_optimizer
from cnnlab.train.step import EagerStep, GraphStep, autocast


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


def as_inputs(x, y, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Accept uint8 NHWC arrays (scaled to [0, 1]) or float NCHW tensors, and int labels."""
    if isinstance(x, np.ndarray):
        x = to_tensor(x) if x.dtype == np.uint8 else torch.from_numpy(x)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long()
    if x.ndim != 4:
        raise CnnlabError(f"expected inputs of shape (N, C, H, W), got {tuple(x.shape)}")
    if len(x) != len(y):
        raise CnnlabError(f"{len(x)} inputs but {len(y)} labels; they must match")
    if len(x) == 0:
        raise CnnlabError("no training examples (the dataset or subset is empty)")
    return x.to(device, torch.float32), y.to(device)


class _Batches:
    """Seeded shuffling over N examples, yielding index tensors of one global batch.

    With ``steps_per_epoch`` set, epochs draw that many batches and continue where the
    last one stopped (reshuffling each time the data runs out), as Keras' generators do.
    Under torchrun each rank keeps its own slice ``batch[rank::world]`` of every batch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device | str = "cpu") -> None:
        self.n, self.batch_size, self.device = n, batch_size, torch.device(device)
        self.gen = torch.Generator().manual_seed(seed)  # on the CPU: the same order on any device
        self._set_perm(torch.randperm(n, generator=self.gen))
        self.cursor = 0

    def _set_perm(self, perm: torch.Tensor) -> None:
        # One copy per shuffle to the training device, so no step waits on a host-to-GPU copy.
        self.perm = perm
        self.perm_on_device = perm.to(self.device)

    def epoch(self, steps: int | None):
        if steps is None:  # one full pass, starting from a fresh shuffle
            if self.cursor:
                self._reshuffle()
            steps = math.ceil(self.n / self.batch_size)
        for _ in range(steps):
            if self.cursor >= self.n:
                self._reshuffle()
            batch = self.perm_on_device[self.cursor : self.cursor + self.batch_size]
            self.cursor += len(batch)
            yield batch
        if self.cursor >= self.n:
            self.cursor = self.n  # the next epoch reshuffles first

    def _reshuffle(self) -> None:
        self._set_perm(torch.randperm(self.n, generator=self.gen))
        self.cursor = 0

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "perm": self.perm, "cursor": self.cursor}

    def load_state_dict(self, s: dict) -> None:
        self.gen.set_state(s["gen"])
        self._set_perm(s["perm"].cpu())
        self.cursor = int(s["cursor"])


def training_view(model: nn.Module) -> nn.Module:
    """The same layers (shared parameters), with ReLU → MaxPool2d pairs run as MaxPool → ReLU.

    max and ReLU commute (both are monotone), so the outputs are identical, but ReLU then
    runs on a quarter of the elements and its backward no longer sits on the full-size
    map. Profiling mnist-cnn on a 2-core CPU showed ReLU + max-pool backward taking about
    a third of each step in the tutorial's order. The user's model is left untouched.
    """
    if not isinstance(model, nn.Sequential):
        return model
    layers = [training_view(m) for m in model]
    i = 0
    while i < len(layers) - 1:
        if isinstance(layers[i], nn.ReLU) and isinstance(layers[i + 1], nn.MaxPool2d):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
            i += 1
        i += 1
    return nn.Sequential(*layers)


def evaluate_loss_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1024, flip: bool = False,
    precision: str = "auto",
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over (x, y), in large batches, summed over all ranks.

    ``flip`` averages each image's logits with its mirror image's (see TrainConfig.eval_flip).
    """
    if batch_size < 1:
        raise CnnlabError(f"batch_size must be at least 1, got {batch_size}")
    if len(x) != len(y):
        raise CnnlabError(f"{len(x)} inputs but {len(y)} labels; they must match")
    sums = _eval_sums(model, x, y, batch_size, flip, precision)
    loss_sum, correct, count = dist.all_reduce_sum(sums).tolist()
    return loss_sum / max(count, 1), correct / max(count, 1)


def _eval_sums(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, flip: bool,
               precision: str) -> torch.Tensor:
    rank, world = dist.rank(), dist.world_size()
    sums = torch.zeros(3, dtype=torch.float64, device=x.device)
    was_training = model.training
    model.eval()
    fast = training_view(model)  # same outputs, ReLU on the pooled map
    with torch.inference_mode(), autocast(x.device, precision):
        for start in range(rank * batch_size, len(x), batch_size * world):  # rank's disjoint shard
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            logits = fast(xb).float()
            if flip:
                logits = (logits + fast(xb.flip(3)).float()) / 2
            sums[0] += F.cross_entropy(logits, yb, reduction="sum").double()
            sums[1] += (logits.argmax(1) == yb).sum()
            sums[2] += len(yb)
    model.train(was_training)
    return sums


def _monitor_value(logs: dict, key: str) -> float:
    value = logs.get(key)
    if value is None or math.isnan(value):
        raise CnnlabError(f"cannot monitor {key!r}: this run has no such metric (give validation data)")
    return -value if "accuracy" in key else value  # lower is better


def fit(
    model: nn.Module,
    x,
    y,
    *,
    config: TrainConfig | None = None,
    validation: tuple | None = None,
    callbacks: Sequence[Callable[[EpochEnd], None]] = (),
    resume: dict | None = None,
    tensorboard=None,
) -> History:
    """Train ``model`` on (x, y) and return its History; ``x`` is (N, C, H, W) float or NHWC uint8.

    ``validation`` is an (x_val, y_val) pair evaluated after every epoch. ``resume`` is a
    state from ``EpochEnd.state()`` (as saved in a run's last.pt): training continues from
    it exactly, optimiser, schedule and random streams included. ``tensorboard``: a folder
    (or a ``cnnlab.export.tensorboard.TensorBoardLog``) to write TensorBoard logs into.
    """
    if tensorboard is not None:
        return _fit_logged(model, x, y, config=config, validation=validation, callbacks=callbacks, resume=resume,
                           tensorboard=tensorboard)
    cfg = config or TrainConfig()
    device = resolve_device(cfg.device)
    world = dist.world_size()
    if cfg.batch_size % world:
        raise CnnlabError(
            f"batch size {cfg.batch_size} is not divisible by the world size {world}; "
            "the batch size is global, use a multiple of the number of processes"
        )
    if device.type == "cpu":
        keep_freed_memory()  # a step reallocates every activation: keep them off the page-fault path
    torch.manual_seed(cfg.seed)
    x, y = as_inputs(x, y, device)
    val = as_inputs(*validation, device) if validation is not None else None
    model.to(device, memory_format=torch.channels_last)
    run_model = _wrap(training_view(model), cfg, device)
    opt = make_optimizer(
        cfg.optimizer, model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay, betas=cfg.betas,
    )
    batches = _Batches(len(x), cfg.batch_size, cfg.seed, device)
    steps = cfg.steps_per_epoch or math.ceil(len(x) / cfg.batch_size)
    factor = lr_factor(cfg.schedule, total_steps=steps * cfg.epochs, steps_per_epoch=steps, decay=cfg.decay,
                       step_epochs=cfg.step_epochs, gamma=cfg.gamma, warmup=cfg.warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    history, best = History(), {"value": math.inf, "epoch": 0, "weights": None, "wait": 0}
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
    start_epoch = 0
    if resume is not None:
        start_epoch = _restore(resume, model, opt, sched, batches, aug_gen, history, best)
        if resume.get("config", {}).get("monitor", cfg.monitor) != cfg.monitor:
            _rescore(history, cfg, best)

    def snapshot() -> dict:
        return _snapshot(model, opt, sched, batches, aug_gen, history, best, cfg)

    step = EagerStep(run_model, opt, x, y, aug=cfg.augment, aug_gen=aug_gen, label_smoothing=cfg.label_smoothing,
                     precision=cfg.precision, world=world)
    if (device.type == "cuda" and cfg.cuda_graphs and world == 1 and not cfg.compile and len(x) >= cfg.batch_size
            and start_epoch < cfg.epochs):
        graphed, why = GraphStep.capture(step, cfg.batch_size)
        if graphed is None:
            warnings.warn(f"cnnlab: could not record the training step as a CUDA graph ({why}); "
                          "training op by op instead (cuda_graphs=False skips the attempt)", stacklevel=2)
        step = graphed or step

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        logs = _train_epoch(step, sched, batches, cfg, epoch)
        if val is not None:
            logs["val_loss"], logs["val_accuracy"] = evaluate_loss_accuracy(
                model, *val, batch_size=cfg.eval_batch_size, flip=cfg.eval_flip, precision=cfg.precision)
        logs["lr"] = opt.param_groups[0]["lr"]
        logs["seconds"] = time.perf_counter() - t0
        history.epochs.append({"epoch": epoch + 1, **logs})
        improved = _track_best(logs, model, cfg, best, epoch + 1)
        _report_epoch(cfg, epoch, logs)
        for callback in callbacks:
            callback(EpochEnd(epoch + 1, dict(logs), model, improved, snapshot))
        if cfg.early_stopping is not None and best["wait"] >= cfg.early_stopping:  # as Keras: patience epochs
            break
    if cfg.restore_best and best["weights"] is not None:
        model.load_state_dict(best["weights"])
    return history


def _fit_logged(model, x, y, *, tensorboard, callbacks, **kwargs) -> History:
    """fit() with a TensorBoard callback, and the embedding projector written at the end."""
    from cnnlab.export.tensorboard import TensorBoardLog  # optional extra: imported only when asked for

    if not dist.is_main():  # under torchrun rank 0 alone writes the logs
        return fit(model, x, y, callbacks=callbacks, **kwargs)
    log = tensorboard if isinstance(tensorboard, TensorBoardLog) else TensorBoardLog(tensorboard)
    try:
        history = fit(model, x, y, callbacks=[*callbacks, log], **kwargs)
        xe, ye = kwargs["validation"] if kwargs.get("validation") is not None else (x, y)
        log.write_embedding(model, *as_inputs(xe[: log.max_points], ye[: log.max_points], torch.device("cpu")))
    finally:
        log.close()
    return history


def _wrap(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    if cfg.compile:
        model = torch.compile(model)
    if dist.world_size() > 1:
        ids = [device.index or 0] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


def _train_epoch(step: EagerStep | GraphStep, sched, batches: _Batches, cfg: TrainConfig, epoch: int) -> dict:
    rank, world = dist.rank(), dist.world_size()
    sums = step.sums  # loss sum, correct: on the device, added to by every step
    sums.zero_()
    count = 0
    step.model.train()
    total = cfg.steps_per_epoch or math.ceil(batches.n / cfg.batch_size)
    bar = _bar(cfg, epoch, total)
    # Reading a GPU value (.tolist()) makes the host wait for the queued steps; nothing else
    # in a step does, so on CUDA the host runs ahead and looks at the loss every 50 steps.
    check_every = 1 if sums.device.type == "cpu" else 50
    for i, batch in enumerate(batches.epoch(cfg.steps_per_epoch)):
        if len(batch) < world:  # a last partial batch too small to give every process an example
            continue
        idx = batch[rank::world]  # this process's disjoint slice of the global batch, on the device
        step(idx, len(batch))
        sched.step()
        count += len(idx)
        if (i + 1) % check_every == 0 or i + 1 == total:
            loss_so_far, correct_so_far = sums.tolist()
            _check_finite(loss_so_far, epoch, i)
            if bar is not None:
                bar.update(i + 1 - bar.n)
                bar.set_postfix(loss=f"{loss_so_far / count:.4f}", accuracy=f"{correct_so_far / count:.4f}",
                                refresh=False)
    if bar is not None:
        bar.close()
    totals = torch.cat([sums, torch.tensor([float(count)], dtype=torch.float64, device=sums.device)])
    loss_sum, correct, count = dist.all_reduce_sum(totals).tolist()
    return {"loss": loss_sum / count, "accuracy": correct / count}


def _check_finite(loss_sum: float, epoch: int, step: int) -> None:
    if not math.isfinite(loss_sum):
        raise TrainingError(
            f"loss became {loss_sum} in epoch {epoch + 1}, step {step + 1}; "
            "lower the learning rate (--lr) or check the inputs for NaN"
        )


def _bar(cfg: TrainConfig, epoch: int, total: int):
    if cfg.verbose != 1 or dist.rank() != 0:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"Epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False, mininterval=0.2)


def _report_epoch(cfg: TrainConfig, epoch: int, logs: dict) -> None:
    if cfg.verbose == 0 or dist.rank() != 0:
        return
    from tqdm.auto import tqdm

    parts = [f"{k}: {v:.4f}" for k, v in logs.items() if k not in ("lr", "seconds")]
    tqdm.write(f"Epoch {epoch + 1}/{cfg.epochs} - {logs['seconds']:.1f}s - " + " - ".join(parts)
               + f" - lr: {logs['lr']:.3g}")


def _track_best(logs: dict, model: nn.Module, cfg: TrainConfig, best: dict, epoch: int) -> bool:
    key = cfg.monitor if (cfg.monitor in logs) else "loss"
    value = _monitor_value(logs, key)
    if value < best["value"]:
        best.update(value=value, epoch=epoch, wait=0)
        if cfg.restore_best:
            best["weights"] = copy.deepcopy(model.state_dict())
        return True
    best["wait"] += 1
    return False


def _snapshot(model, opt, sched, batches, aug_gen, history, best, cfg) -> dict:
    state = {
        "epoch": len(history.epochs),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "batches": batches.state_dict(),
        "aug_rng": aug_gen.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": [dict(e) for e in history.epochs],
        "best": {k: v for k, v in best.items() if k != "weights"},
        "config": cfg.to_dict(),
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


_FRESH = ("foreach", "fused", "capturable", "initial_lr", "momentum", "nesterov", "weight_decay", "betas")


def _rescore(history: History, cfg: TrainConfig, best: dict) -> None:
    """Rebuild the best-epoch tracking from the history, for a run resumed with a new monitor."""
    best.update(value=math.inf, epoch=0, wait=0)
    for logs in history.epochs:
        key = cfg.monitor if cfg.monitor in logs else "loss"
        value = _monitor_value(logs, key)
        if value < best["value"]:
            best.update(value=value, epoch=logs["epoch"], wait=0)
        else:
            best["wait"] += 1


def _restore(state: dict, model, opt, sched, batches, aug_gen, history, best) -> int:
    model.load_state_dict(state["model"])
    # How the update runs (fused on CUDA, capturable for CUDA graphs, foreach on a CPU) is
    # this machine's choice, not the checkpoint's: a run saved on a GPU may resume on a CPU.
    # The hyperparameters are the config's: a resumed run may change them for the epochs left.
    kernels = [{k: g[k] for k in _FRESH if k in g} for g in opt.param_groups]
    opt.load_state_dict(state["optimizer"])
    for group, kernel in zip(opt.param_groups, kernels, strict=True):
        group.update(kernel)
        for p in group["params"]:  # fused/capturable kernels keep the step count beside the parameter
            step = opt.state.get(p, {}).get("step")
            want = p.device if group.get("fused") or group.get("capturable") else torch.device("cpu")
            if torch.is_tensor(step) and step.device != want:
                opt.state[p]["step"] = step.to(want, torch.float32)
    sched.load_state_dict(state["scheduler"])
    sched.base_lrs = [g["initial_lr"] for g in opt.param_groups]
    for group, base, factor in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas, strict=True):
        group["lr"] = base * factor(sched.last_epoch)  # what LambdaLR computes: the same value if nothing changed
    batches.load_state_dict(state["batches"])
    aug_gen.set_state(state["aug_rng"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    history.epochs[:] = [dict(e) for e in state["history"]]
    best.update(state["best"])
    return int(state["epoch"])
