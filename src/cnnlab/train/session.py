"""What one ``fit`` call sets up before its first epoch: the settings, the data (tensors on
the device or a LoaderFeed), the memory layout, the optimiser and schedule (with the
fine-tuning phases when a head is named), the step, and the resumable state.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from cnnlab import fast
from cnnlab.errors import CnnlabError
from cnnlab.precision import autocast, bf16_note
from cnnlab.train import distributed as dist
from cnnlab.train.batches import Batches, as_inputs
from cnnlab.train.config import TrainConfig, with_overrides
from cnnlab.train.feed import LoaderFeed, eval_sums, is_loader_data, steps_of
from cnnlab.train.finetune import Phases
from cnnlab.train.history import History, rescore
from cnnlab.train.optim import lr_factor, make_optimizer
from cnnlab.train.state import restore, snapshot
from cnnlab.train.step import EagerStep
from cnnlab.train.validation import evaluate_loss_accuracy

# A fallback the caller may want to see (or silence): logging.getLogger("cnnlab").
log = logging.getLogger(__name__)


def memory_format(model: nn.Module, device: torch.device) -> torch.memory_format:
    """channels_last, except for grouped (depthwise) convolutions on a CPU: there oneDNN's
    channels_last backward ran MobileNetV3-Small's training step an order of magnitude slower
    than the default layout (BENCHMARKS.md has the measurement)."""
    grouped = any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())
    return torch.contiguous_format if grouped and device.type == "cpu" else torch.channels_last


def settings(config: TrainConfig | None, **overrides) -> TrainConfig:
    cfg = config or TrainConfig()
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return with_overrides(cfg, **overrides) if overrides else cfg


def training_data(x, y, cfg: TrainConfig, device: torch.device, fmt: torch.memory_format, shuffle: bool = True):
    """Tensors on the device ``(x, y)``, or a LoaderFeed for a Dataset/DataLoader (``shuffle``: a Dataset's
    order each epoch; a DataLoader keeps its own sampler)."""
    if y is None and isinstance(x, (tuple, list)) and len(x) == 2:
        x, y = x
    if is_loader_data(x):
        if y is not None:
            raise CnnlabError("a Dataset or DataLoader carries its labels; call fit(model, data) without y")
        return LoaderFeed(x, batch_size=cfg.batch_size, seed=cfg.seed, device=device, memory_format=fmt,
                          shuffle=shuffle)
    if y is None:
        raise CnnlabError(f"training data of type {type(x).__name__} needs labels: fit(model, x, y), "
                          "fit(model, (x, y)), or pass a torch Dataset/DataLoader")
    x, y = as_inputs(x, y, device)
    return x.contiguous(memory_format=fmt), y


def validation_data(val, cfg: TrainConfig, device: torch.device, fmt: torch.memory_format):
    if val is None:
        return None
    if is_loader_data(val):
        return LoaderFeed(val, batch_size=cfg.eval_batch_size, seed=cfg.seed, device=device, shuffle=False,
                          memory_format=fmt)
    if not isinstance(val, (tuple, list)) or len(val) != 2:
        raise CnnlabError(f"validation data must be (x, y), a Dataset or a DataLoader, got {type(val).__name__}")
    x, y = as_inputs(*val, device)
    return x.contiguous(memory_format=fmt), y


# How many training images a layer that asks to be adapted (cnnlab.models.speedrun.Whiten) is
# fitted to at the start of a new run: airbench's 5,000 estimate a 12x12 patch covariance well.
ADAPT_IMAGES = 5000


def adapt_layers(model: nn.Module, data) -> None:
    """Fit every layer that asks for it (``adapt_before_fit = True`` and an ``adapt(images)``
    method, as Keras adapts preprocessing layers: cnnlab.models.speedrun.Whiten) to the first
    ADAPT_IMAGES training images, each seeing what reaches it: the layers before it run on
    the images first. Only for tensors; a Dataset or DataLoader's model is adapted by the
    caller (``layer.adapt(images)``) and a warning says so."""
    layers = [m for m in model.modules() if getattr(m, "adapt_before_fit", False) is True]
    if not layers:
        return
    if isinstance(data, LoaderFeed):
        log.warning("%s not adapted to the data (fit adapts them from tensors only); call .adapt(images) on them "
                    "before fit", ", ".join(type(m).__name__ for m in layers))
        return
    images = data[0][:ADAPT_IMAGES]
    was_training = model.training
    model.eval()  # batch norm before an adapted layer must not learn from this pass
    for layer in layers:
        handle = layer.register_forward_pre_hook(_stop)
        try:
            with torch.no_grad():
                model(images)
        except _Reached as reached:
            layer.adapt(reached.args[0])
        finally:
            handle.remove()
    model.train(was_training)


class _Reached(Exception):
    """Raised by the hook that captured an adaptable layer's input: the rest of the forward is not needed."""


def _stop(module: nn.Module, args: tuple) -> None:
    raise _Reached(args[0])


def phases_for(model: nn.Module, head, cfg: TrainConfig):
    if head is None and cfg.freeze_epochs == 0:
        return None
    if head is None:
        from cnnlab.models.transfer import head_of

        head = head_of(model)
    if dist.world_size() > 1 and cfg.freeze_epochs:
        raise CnnlabError("freeze_epochs is for one process (DistributedDataParallel cannot change which "
                          "parameters train); use --freeze-epochs 0 under torchrun")
    return Phases(model, head, freeze_epochs=cfg.freeze_epochs, body_lr_mult=cfg.body_lr_mult)


class Session:
    """Everything fit() carries from epoch to epoch, and its resumable snapshot."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device, data, phases, *,
                 optimizer: torch.optim.Optimizer | None = None, loss=None, shuffle: bool = True) -> None:
        self.model, self.cfg, self.device, self.phases = model, cfg, device, phases
        warning = bf16_note(cfg.precision, device)
        if warning:
            log.warning(warning)
        if log.isEnabledFor(logging.INFO):
            log.info("fast paths: %s", fast.summary(fast.status(device, cfg.fast, model, cuda_graphs=cfg.cuda_graphs)))
        self.run_model = _wrap(fast.training_model(model, device, cfg.fast), cfg, device)
        params = phases.param_groups(cfg.optimizer, cfg.lr) if phases else model.parameters()
        lr = None if phases else cfg.lr
        self.opt = optimizer or make_optimizer(cfg.optimizer, params, lr=lr, momentum=cfg.momentum,
                                               nesterov=cfg.nesterov, weight_decay=cfg.weight_decay, betas=cfg.betas,
                                               batch_size=cfg.batch_size)
        if isinstance(data, LoaderFeed):
            self.feed, self.batches = data, data
            self.steps = steps_of(data, cfg.steps_per_epoch)
            x, y = torch.empty(0, device=device), torch.empty(0, dtype=torch.long, device=device)
        else:
            x, y = data
            self.feed, self.batches = None, Batches(len(x), cfg.batch_size, cfg.seed, device, shuffle=shuffle)
            self.steps = cfg.steps_per_epoch or math.ceil(len(x) / cfg.batch_size)
        kw = {"decay": cfg.decay, "step_epochs": cfg.step_epochs, "gamma": cfg.gamma, "warmup": cfg.warmup}
        factor = (phases.lr_lambdas(cfg.schedule, epochs=cfg.epochs, steps_per_epoch=self.steps, **kw) if phases
                  else lr_factor(cfg.schedule, total_steps=self.steps * cfg.epochs, steps_per_epoch=self.steps, **kw))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, factor)
        self.history, self.best = History(), {"value": math.inf, "epoch": 0, "weights": None, "wait": 0}
        self.aug_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.start_epoch = 0
        self.step = EagerStep(self.run_model, self.opt, x, y, aug=cfg.augment, aug_gen=self.aug_gen,
                              label_smoothing=cfg.label_smoothing, precision=cfg.precision, world=dist.world_size(),
                              loss=loss)

    def restore(self, resume: dict) -> None:
        self.start_epoch = restore(resume, self.model, self.opt, self.sched, self.batches, self.aug_gen,
                                    self.history, self.best)
        if resume.get("config", {}).get("monitor", self.cfg.monitor) != self.cfg.monitor:
            rescore(self.history, self.cfg, self.best)

    def snapshot(self) -> dict:
        return snapshot(self.model, self.opt, self.sched, self.batches, self.aug_gen, self.history, self.best,
                         self.cfg)

    def begin_epoch(self, epoch: int) -> None:
        if self.phases is not None and self.phases.begin_epoch(epoch) and dist.world_size() > 1:
            self.run_model = self.step.model = _wrap(fast.training_model(self.model, self.device, self.cfg.fast),
                                                   self.cfg, self.device)

    def maybe_graph(self) -> None:
        cfg, step = self.cfg, self.step
        if (self.device.type == "cuda" and cfg.cuda_graphs and dist.world_size() == 1 and not cfg.compile
                and self.feed is None and self.phases is None and len(step.x) >= cfg.batch_size
                and self.start_epoch < cfg.epochs):
            graphed, why = fast.graph_step(step, cfg.batch_size, cfg.fast)
            if graphed is None and fast.enabled(cfg.fast):  # off by the user's choice: nothing to warn about
                # Logged, not warnings.warn: training goes on correctly; nothing in the caller's code is wrong.
                log.warning("could not record the training step as a CUDA graph (%s); training op by op instead "
                            "(cuda_graphs=False skips the attempt)", why)
            self.step = graphed or step


def score(model: nn.Module, val, cfg: TrainConfig, loss=None) -> tuple[float, float]:
    """(mean loss, accuracy) of ``model`` on ``val`` (tensors or a LoaderFeed) with the run's own
    evaluation settings: its precision, test-time views, fast setting and loss. The one evaluation
    path: fit's val_loss after each epoch and a run's test metrics both come from here."""
    if isinstance(val, LoaderFeed):
        was_training = model.training
        model.eval()
        sums = eval_sums(fast.training_model(model, val.device, cfg.fast), val, cfg.eval_flip,
                         autocast(val.device, cfg.precision), shift=cfg.eval_shift, loss=loss)
        model.train(was_training)
        loss_sum, correct, count = dist.all_reduce_sum(sums).tolist()
        return loss_sum / max(count, 1), correct / max(count, 1)
    return evaluate_loss_accuracy(model, *val, batch_size=cfg.eval_batch_size, flip=cfg.eval_flip,
                                  shift=cfg.eval_shift, precision=cfg.precision, fast=cfg.fast, loss=loss)


def _wrap(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    if cfg.compile:
        model = torch.compile(model)
    if dist.world_size() > 1:
        ids = [device.index or 0] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model
