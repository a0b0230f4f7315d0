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

import logging
import math
import time
from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.data.transforms import augment
from cnnlab.errors import CnnlabError
from cnnlab.train import distributed as dist
from cnnlab.train import losses, session
from cnnlab.train.callbacks import CallbackList
from cnnlab.train.config import TrainConfig
from cnnlab.train.device import resolve_device
from cnnlab.train.habits import split_validation, user_optimizer
from cnnlab.train.history import EpochEnd, History, TrainingError, track_best

# Each epoch's line, for a caller who keeps logs rather than a console (verbose decides the console).
log = logging.getLogger(__name__)

__all__ = ["fit"]  # the loop's vocabulary has one home each: history, config, validation, batches


def fit(
    model: nn.Module,
    x,
    y=None,
    *,
    config: TrainConfig | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    validation_data=None,
    validation: tuple | None = None,
    callbacks: Sequence = (),
    resume: dict | None = None,
    head: nn.Module | None = None,
    optimizer=None,
    loss=None,
    validation_split: float | None = None,
    shuffle: bool = True,
    **settings,
) -> History:
    """Train ``model`` and return its History (Keras' ``model.fit`` in function form).

    Training data, as Keras takes it:
      - ``fit(model, x, y)`` or ``fit(model, (x, y))``: arrays or tensors, ``x`` (N, C, H, W)
        float or (N, H, W, C) uint8 (scaled to [0, 1]); copied to the device as one tensor;
      - ``fit(model, dataset)``: a ``torch.utils.data.Dataset`` of (image, label) pairs,
        loaded by a seeded DataLoader made here (``cnnlab.train.feed``);
      - ``fit(model, loader)``: a ``DataLoader``, used exactly as given.
    Labels are class indices (N,) or one-hot rows (N, K); a Dataset may yield uint8 (H, W, C)
    images as ``load_dataset`` gives them.
    ``validation_data`` (or ``validation``): the same kinds, evaluated after every epoch; or
    Keras' ``validation_split=0.1``: the last tenth of the arrays, held out before shuffling.
    ``shuffle``: reshuffle the arrays or Dataset every epoch (True, as Keras); False keeps their
    order (a DataLoader keeps its own sampler, as Keras ignores shuffle for generators).
    Settings: ``config`` (a TrainConfig), then ``epochs``, ``batch_size`` and any other
    TrainConfig field as a keyword (``lr=0.01, optimizer="sgd"``) override it.
    ``optimizer``: a name, or as PyTorch users write it a ``torch.optim.Optimizer`` on the
    model's parameters or a factory of the parameters (``torch.optim.SGD``); ``loss``: a
    ``torch.nn`` loss module or a function of (logits, targets) instead of the cross-entropy
    (``cnnlab.train.habits``, ``cnnlab.train.losses``).
    ``callbacks``: Keras-style objects (on_epoch_begin/on_batch_end/on_epoch_end...; stop
    with ``self.model.stop_training = True`` or ``raise StopTraining``), functions of
    ``(epoch, logs)`` as Keras' LambdaCallback calls them, or functions of an ``EpochEnd``
    (see ``cnnlab.train.callbacks``). ``resume``: a state from
    ``EpochEnd.state()`` (a run's last.pt): training continues from it exactly.
    ``head``: the new classifier of a pretrained model; with it (or ``freeze_epochs``)
    training follows ``cnnlab.train.finetune`` (frozen body, then discriminative rates).
    Layers that ask for it (``adapt_before_fit``: cifar-94's whitening layer) are fitted to
    the first 5,000 training images before a new run's first step (``session.adapt_layers``).

    The model is trained in place: moved to the training device and to the
    ``channels_last`` memory format (same values, faster convolutions; not on a CPU for
    networks with depthwise convolutions, see ``memory_format``); nothing else about it
    changes. Process-wide settings are left alone: the CLI, not fit, applies the malloc
    tuning (call ``cnnlab.fast.keep_freed_memory()`` yourself for it).
    fit knows only callbacks: TensorBoard logs come from the callback
    ``cnnlab.TensorBoardLog(DIR)``, or from ``cnnlab.fit(..., tensorboard=DIR)``, the public
    spelling of this function, which attaches that callback (``cnnlab.export.tensorboard.fit``).

    What it shows, as Keras: ``verbose=1`` (the default) a progress bar on stderr (when it is
    a terminal, or in Jupyter) and one line per epoch on stdout, ``verbose=2`` the lines only,
    ``verbose=0`` nothing. Each epoch's line also goes to the ``cnnlab.train.loop`` logger at
    INFO, and fallbacks (a CUDA graph that could not be recorded) to ``cnnlab`` loggers at
    WARNING; like every ``cnnlab`` logger they are silent until the caller configures logging.
    """
    if validation_split is not None:
        if validation_data is not None or validation is not None:
            raise CnnlabError("pass validation_data or validation_split, not both")
        (x, y), validation_data = split_validation(x, y, validation_split)
    if "tensorboard" in settings:
        raise CnnlabError("cnnlab.train.loop.fit knows only callbacks: pass callbacks=[cnnlab.TensorBoardLog(DIR)], "
                          "or call cnnlab.fit(..., tensorboard=DIR)")
    if isinstance(shuffle, str) or not isinstance(shuffle, bool):
        raise CnnlabError(f"shuffle must be True or False; got {shuffle!r}")
    loss_fn = losses.resolve(loss)
    if loss_fn is not None and settings.get("label_smoothing"):
        raise CnnlabError("label_smoothing applies to cnnlab's cross-entropy; with your own loss= set it there, "
                          "e.g. torch.nn.CrossEntropyLoss(label_smoothing=0.1)")
    own_opt = user_optimizer(optimizer, model, settings)
    if own_opt is not None and head is not None:
        raise CnnlabError("head= builds its own optimiser for the fine-tuning phases; pass optimizer= a name such "
                          "as 'adam' with it")
    if optimizer is not None and own_opt is None:
        settings["optimizer"] = optimizer
    cfg = session.settings(config, epochs=epochs, batch_size=batch_size, **settings)
    device = resolve_device(cfg.device)
    world = dist.world_size()
    if cfg.batch_size % world:
        raise CnnlabError(
            f"batch size {cfg.batch_size} is not divisible by the world size {world}; "
            "the batch size is global, use a multiple of the number of processes"
        )
    torch.manual_seed(cfg.seed)
    fmt = session.memory_format(model, device)
    data = session.training_data(x, y, cfg, device, fmt, shuffle)
    val = validation_data if validation_data is not None else validation
    val = session.validation_data(val, cfg, device, fmt)
    model.to(device, memory_format=fmt)
    if resume is None:  # a resumed run's adapted layers come back with its weights
        session.adapt_layers(model, data)
    phases = session.phases_for(model, head, cfg)
    if own_opt is not None and phases is not None:
        raise CnnlabError("freeze_epochs builds its own optimiser for the frozen and unfrozen phases; pass "
                          "optimizer= a name such as 'adam' with it")
    state = session.Session(model, cfg, device, data, phases, optimizer=own_opt, loss=loss_fn, shuffle=shuffle)
    if resume is not None:
        state.restore(resume)
    events = CallbackList(callbacks, model)
    try:
        _run_epochs(state, val, events, loss_fn)
    finally:
        if phases is not None:
            phases.release()
    if cfg.restore_best and state.best["weights"] is not None:
        model.load_state_dict(state.best["weights"])
    return state.history


def _run_epochs(state: session.Session, val, events: CallbackList, loss_fn=None) -> None:
    cfg = state.cfg
    state.maybe_graph()
    if events.call("on_train_begin", {}):
        return
    for epoch in range(state.start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        state.begin_epoch(epoch)
        if events.call("on_epoch_begin", epoch, {}):
            break
        logs = _train_epoch(state, epoch, events)
        if val is not None:
            logs["val_loss"], logs["val_accuracy"] = session.score(state.model, val, cfg, loss_fn)
        logs["lr"] = state.opt.param_groups[-1]["lr"]
        logs["seconds"] = time.perf_counter() - t0
        state.history.epochs.append({"epoch": epoch + 1, **logs})
        improved = track_best(logs, state.model, cfg, state.best, epoch + 1)
        _report_epoch(cfg, epoch, logs)
        if events.epoch_end(EpochEnd(epoch + 1, dict(logs), state.model, improved, state.snapshot)):
            break
        if cfg.early_stopping is not None and state.best["wait"] >= cfg.early_stopping:  # as Keras: patience epochs
            break
    events.call("on_train_end", state.history.epochs[-1] if state.history.epochs else {})


def _train_epoch(state: session.Session, epoch: int, events: CallbackList) -> dict:
    step, cfg = state.step, state.cfg
    sums = step.sums  # loss sum, correct: on the device, added to by every step
    sums.zero_()
    count = 0
    step.model.train()
    total = state.steps
    bar = _bar(cfg, epoch, total)
    # Reading a GPU value (.tolist()) makes the host wait for the queued steps; nothing else
    # in a step does, so on CUDA the host runs ahead and looks at the loss every 50 steps
    # (every step when a callback wants each batch's logs).
    check_every = 1 if sums.device.type == "cpu" or events.wants_batches else 50
    for i, n in enumerate(_steps(state, cfg)):
        state.sched.step()
        count += n
        if (i + 1) % check_every == 0 or i + 1 == total:
            loss_so_far, correct_so_far = sums.tolist()
            _check_finite(loss_so_far, epoch, i)
            if bar is not None:
                bar.update(i + 1 - bar.n)
                bar.set_postfix(loss=f"{loss_so_far / count:.4f}", accuracy=f"{correct_so_far / count:.4f}",
                                refresh=False)
            if events.wants_batches and events.call("on_batch_end", i, {"loss": loss_so_far / count,
                                                                        "accuracy": correct_so_far / count}):
                break
    if bar is not None:
        bar.close()
    totals = torch.cat([sums, torch.tensor([float(count)], dtype=torch.float64, device=sums.device)])
    loss_sum, correct, count = dist.all_reduce_sum(totals).tolist()
    return {"loss": loss_sum / max(count, 1), "accuracy": correct / max(count, 1)}


def _steps(state: session.Session, cfg: TrainConfig):
    """Run one epoch's training steps, yielding after each the number of examples it took."""
    step, world = state.step, dist.world_size()
    if state.feed is not None:
        for xb, yb in state.feed.batches(cfg.steps_per_epoch):
            xb = augment(xb, cfg.augment, state.aug_gen)
            state.opt.zero_grad(set_to_none=True)
            step.forward_backward_update(xb, yb, 1.0 / len(xb))
            yield len(xb)
        return
    rank = dist.rank()
    for batch in state.batches.epoch(cfg.steps_per_epoch):
        if len(batch) < world:  # a last partial batch too small to give every process an example
            continue
        idx = batch[rank::world]  # this process's disjoint slice of the global batch, on the device
        step(idx, len(batch))
        yield len(idx)


def _check_finite(loss_sum: float, epoch: int, step: int) -> None:
    if not math.isfinite(loss_sum):
        raise TrainingError(
            f"loss became {loss_sum} in epoch {epoch + 1}, step {step + 1}; "
            "lower the learning rate (--lr) or check the inputs for NaN"
        )


def _bar(cfg: TrainConfig, epoch: int, total: int):
    if cfg.verbose != 1 or dist.rank() != 0 or not _interactive():
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"Epoch {epoch + 1}/{cfg.epochs}", unit="step", leave=False, mininterval=0.2)


def _interactive() -> bool:
    """A progress bar has somewhere to go: a terminal, or a Jupyter kernel (tqdm.auto draws a widget there).
    Redirected into a file, a bar was 24 KB of carriage returns for 3 epochs; the epoch lines stay."""
    import sys

    stream = sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def _report_epoch(cfg: TrainConfig, epoch: int, logs: dict) -> None:
    """The epoch's line: on stdout unless verbose=0 (as Keras prints it), and always to the
    ``cnnlab.train.loop`` logger at INFO, silent unless the caller attaches a handler."""
    if dist.rank() != 0:
        return
    parts = [f"{k}: {v:.4f}" for k, v in logs.items() if k not in ("lr", "seconds")]
    line = f"Epoch {epoch + 1}/{cfg.epochs} - {logs['seconds']:.1f}s - " + " - ".join(parts) + f" - lr: {logs['lr']:.3g}"
    log.info("%s", line)
    if cfg.verbose:
        from tqdm.auto import tqdm

        tqdm.write(line)
