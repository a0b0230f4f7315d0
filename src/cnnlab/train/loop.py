"""fit(): the training loop, with the feedback Keras users know.

The loop itself; what it works with has a module each: ``batches`` (inputs on the device,
shuffled batches), ``history`` (History, EpochEnd for callbacks, best-epoch tracking),
``state`` (the resumable snapshot) and ``validation`` (val_loss and val_accuracy).

Data lives on the training device as one tensor; each step indexes a batch out of it
(no DataLoader, no per-sample Python). The same loop runs one process or many: under
``torchrun`` every process takes a disjoint slice of each global batch, the model is
wrapped in DistributedDataParallel, and epoch metrics are all-reduced, so the history
equals what one process computes on the same data (see ``cnnlab.train.distributed``).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.train import distributed as dist
from cnnlab.train.batches import Batches, as_inputs, training_view
from cnnlab.train.config import TrainConfig
from cnnlab.train.device import resolve_device
from cnnlab.train.history import EpochEnd, History, TrainingError, rescore, track_best
from cnnlab.train.memory import keep_freed_memory
from cnnlab.train.optim import lr_factor, make_optimizer
from cnnlab.train.state import restore, snapshot
from cnnlab.train.step import EagerStep, GraphStep
from cnnlab.train.validation import evaluate_loss_accuracy

# Importable from here as before the split: the loop's vocabulary lives in its own modules.
__all__ = ["EpochEnd", "History", "TrainConfig", "TrainingError", "as_inputs", "evaluate_loss_accuracy", "fit",
           "training_view"]


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
    batches = Batches(len(x), cfg.batch_size, cfg.seed, device)
    steps = cfg.steps_per_epoch or math.ceil(len(x) / cfg.batch_size)
    factor = lr_factor(cfg.schedule, total_steps=steps * cfg.epochs, steps_per_epoch=steps, decay=cfg.decay,
                       step_epochs=cfg.step_epochs, gamma=cfg.gamma, warmup=cfg.warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    history, best = History(), {"value": math.inf, "epoch": 0, "weights": None, "wait": 0}
    aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
    start_epoch = 0
    if resume is not None:
        start_epoch = restore(resume, model, opt, sched, batches, aug_gen, history, best)
        if resume.get("config", {}).get("monitor", cfg.monitor) != cfg.monitor:
            rescore(history, cfg, best)

    def state() -> dict:
        return snapshot(model, opt, sched, batches, aug_gen, history, best, cfg)

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
        improved = track_best(logs, model, cfg, best, epoch + 1)
        _report_epoch(cfg, epoch, logs)
        for callback in callbacks:
            callback(EpochEnd(epoch + 1, dict(logs), model, improved, state))
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


def _train_epoch(step: EagerStep | GraphStep, sched, batches: Batches, cfg: TrainConfig, epoch: int) -> dict:
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
