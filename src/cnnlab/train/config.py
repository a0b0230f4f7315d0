"""The one home of training configuration: the dataclasses, the recipes, and overrides.

Three dataclasses, one per question:

- ``Hyperparams``: what decides the numbers a run produces (epochs, optimiser, schedule, ...);
- ``Runtime``: where and how it runs (device, precision, CUDA graphs, compile, verbosity),
  which changes the speed, not the result beyond floating-point rounding;
- ``RunConfig``: what to train on (dataset, model, subset, normalisation) plus a ``TrainConfig``.

``TrainConfig`` is the union of the first two, flat, as ``fit()`` and the README use it
(``TrainConfig(epochs=6, device="cpu")``); ``.hyperparams`` and ``.runtime`` split it again.

Each field carries its own help text, choices and resume policy in its metadata, so
adding a field is one edit here: ``with_overrides`` (and through it ``--config`` files),
the ``cnnlab train`` flags and ``--print-config`` are all driven by ``dataclasses.fields``.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from dataclasses import asdict, dataclass, field

from cnnlab.bounds import Bounds
from cnnlab.data.transforms import Augment
from cnnlab.errors import CnnlabError
from cnnlab.fast import SETTINGS as FAST_SETTINGS
from cnnlab.precision import PRECISIONS
from cnnlab.train.optim import DEFAULT_LR, SCHEDULES

# Resume policies: "apply" settings run the remaining epochs of a resumed run; "refuse"
# settings decided the finished epochs (their data, initial weights or optimiser state),
# so a resumed run may not change them.
APPLY, REFUSE = "apply", "refuse"
MONITORS = ("loss", "accuracy", "val_loss", "val_accuracy")


def setting(default=None, help: str = "", *, choices=None, resume: str = APPLY, factory=None, flag: bool = True,
            low=None, high=None, above=None, below=None):
    """A dataclass field with its help text, allowed values (``choices``, or a numeric range:
    ``low``/``high`` inclusive, ``above``/``below`` exclusive) and resume policy as metadata.
    ``__post_init__``, the ``cnnlab train`` flags and ``--config`` files all check the range."""
    bounds = Bounds(low, high, above, below) if (low, high, above, below) != (None,) * 4 else None
    meta = {"help": help, "choices": choices, "resume": resume, "flag": flag, "bounds": bounds}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True, kw_only=True)
class Hyperparams:
    """What decides the numbers a run produces."""

    epochs: int = setting(10, "epochs to train (with --resume: the new total)", low=1)
    batch_size: int = setting(128, "global batch size, split across processes under torchrun", low=1)
    steps_per_epoch: int | None = setting(None, "batches per epoch (default: one pass over the data); without "
                                                "a batch size, batches of ceil(N / steps) as in Keras", low=1)
    optimizer: str = setting("adam", "optimiser", choices=tuple(DEFAULT_LR), resume=REFUSE)
    lr: float | None = setting(None, "learning rate (default: the optimiser's usual one)", above=0)
    momentum: float = setting(0.0, "SGD momentum (e.g. 0.9)", low=0)
    nesterov: bool = setting(False, "Nesterov momentum (SGD)")
    decay: float = setting(0.0, "Keras time-based decay: lr / (1 + decay * iteration)", low=0)
    weight_decay: float = setting(0.0, "L2 weight decay", low=0)
    betas: tuple[float, float] = setting((0.9, 0.999), "Adam's betas", low=0, below=1)
    schedule: str = setting("constant", "learning-rate schedule", choices=SCHEDULES)
    step_epochs: int = setting(10, "'step' schedule: multiply the lr by gamma every this many epochs", low=1)
    gamma: float = setting(0.1, "'step' schedule: the factor", low=0)
    warmup: float = setting(0.25, "'onecycle' schedule: fraction of the run spent warming up", low=0)
    label_smoothing: float = setting(0.0, "label smoothing in [0, 1)", low=0, below=1)
    augment: Augment = setting(help="random augmentation, e.g. shift=0.1,flip-h,rotation=10,crop=4 (or none)",
                               factory=Augment)
    # The seed decided the initial weights, the shuffles and the validation split.
    seed: int = setting(0, "random seed", resume=REFUSE, low=0, high=2**32 - 1)
    early_stopping: int | None = setting(None, "stop after this many epochs without improvement of --monitor",
                                          low=0)
    monitor: str = setting("val_loss", "metric for early stopping and the best checkpoint", choices=MONITORS)
    restore_best: bool = setting(False, "end with the best epoch's weights (Keras' restore_best_weights)")
    # Test-time augmentation: average the logits of each image and its mirror image when
    # evaluating. Only for data whose mirror images keep their class (CIFAR-10 yes, digits
    # no); airbench gains ~0.5 points on CIFAR-10 this way.
    eval_flip: bool = setting(False, "evaluate on each image and its mirror, averaged (test-time augmentation)")
    # airbench94's second level: the image moved a pixel each way diagonally gets half the weight.
    eval_shift: bool = setting(False, "evaluate on each image and copies moved one pixel up-left and down-right, "
                                      "averaged (test-time augmentation; with --eval-flip, six views)")
    # Fine-tuning a pretrained network (cnnlab.train.finetune): the first freeze_epochs of the
    # epochs train only the new head; then the body trains at body_lr_mult times the head's
    # rate. 0.1: ImageNet features need far smaller steps than a freshly initialised head.
    freeze_epochs: int = setting(0, "fine-tuning: epochs (of --epochs) that train only the new head "
                                    "(1 with --pretrained)", low=0)
    body_lr_mult: float = setting(0.1, "fine-tuning: the pretrained body's learning rate as a fraction of the head's",
                                  above=0, high=1)


@dataclass(frozen=True, kw_only=True)
class Runtime:
    """Where and how a run runs: changes its speed, not its result (beyond rounding)."""

    device: str = setting("auto", "auto (CUDA when present), cpu, cuda, cuda:1")
    # auto: bf16 autocast (fp32 master weights) on CUDA and on CPUs with native bf16
    # (avx512_bf16/AMX: oneDNN's bf16 convolutions run ~2x fp32 there), else fp32. A run
    # records what auto resolved to in config.json (cnnlab.precision.resolve_precision).
    precision: str = setting("auto", "auto: bf16 mixed precision on CUDA and on CPUs with native bf16 "
                             "(avx512_bf16/AMX), else fp32", choices=PRECISIONS)
    # cnnlab.fast: the training view, native CPU kernels, CUDA graphs, malloc tuning. Each
    # proves itself on this machine and steps aside for a model it would bypass (hooks,
    # parametrizations, pruning); "off" trains the plain PyTorch layers only.
    fast: str = setting("auto", "auto: cnnlab's fast paths where they apply and prove themselves here "
                        "(CNNLAB_FAST=0 also turns them off); off: plain PyTorch only", choices=FAST_SETTINGS)
    # Record the training step once as a CUDA graph and replay it per batch (one process,
    # no compile); falls back to op by op if it cannot be recorded.
    cuda_graphs: bool = setting(True, "on CUDA, replay each training step as a CUDA graph")
    compile: bool = setting(False, "torch.compile the model (pays off on long runs)")
    eval_batch_size: int = setting(1024, "images per forward pass when evaluating", low=1)
    # The CLI spells it --quiet (0) / --verbose (2), as every other command does.
    verbose: int = setting(1, "0 silent, 1 a progress bar per epoch, 2 one line per epoch", choices=(0, 1, 2),
                           flag=False)


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Runtime, Hyperparams):
    """Everything ``fit()`` needs: the hyperparameters and the runtime, flat; saved as config.json."""

    def __post_init__(self) -> None:
        _check_choices(self)
        _check_bounds(self)
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise CnnlabError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    @property
    def hyperparams(self) -> Hyperparams:
        return Hyperparams(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Hyperparams)})

    @property
    def runtime(self) -> Runtime:
        return Runtime(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Runtime)})

    @classmethod
    def of(cls, hyperparams: Hyperparams, runtime: Runtime | None = None) -> TrainConfig:
        parts = (hyperparams, runtime or Runtime())
        return cls(**{f.name: getattr(part, f.name) for part in parts for f in dataclasses.fields(part)})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """From a saved config.json's "train" (keys of older versions that are gone are skipped)."""
        return with_overrides(cls(), **{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """What to train on and how; saved (with the data's shapes and classes) as config.json.

    Every field here decided the finished epochs, so none may change when resuming.
    """

    data: str = setting("mnist", "mnist, fashion-mnist, cifar10 or folder:PATH", resume=REFUSE)
    model: str = setting("mnist-cnn", "model name (see `cnnlab models`) or a one-line spec", resume=REFUSE)
    train_size: int | None = setting(None, "train on the first N training images", resume=REFUSE, low=1)
    val_size: float = setting(0, "hold out a fraction (or count) of the training data for validation "
                                 "(default: validate on the test set)", resume=REFUSE, low=0)
    normalize: str = setting("none", "featurewise: subtract the training set's per-channel mean, divide by its std",
                             choices=("none", "featurewise"), resume=REFUSE)
    # Keras initialises Conv2D/Dense kernels Glorot-uniform with zero biases, PyTorch not;
    # "model" keeps each model's own (Keras' for the seed models and specs: cnnlab.models.init).
    init: str = setting("model", "initial weights: keras (Glorot-uniform kernels, zero biases), torch "
                                 "(PyTorch's layer defaults) or model (the model's own: keras for the "
                                 "tutorial models and specs)", choices=("model", "keras", "torch"), resume=REFUSE)
    # Transfer learning (cnnlab.models.transfer): ImageNet weights with a new head; inputs get
    # ImageNet's mean/std, folder images RGB.
    pretrained: bool = setting(False, "start from ImageNet weights with a new head (squeezenet1_1, vgg16, resnet18, "
                                      "mobilenet_v3_small); settings not given take fastai's fine_tune recipe "
                                      "(cnnlab.train.finetune.FINETUNE_DEFAULTS)", resume=REFUSE)
    weights: str | None = setting(None, "with --pretrained: the ImageNet weights file (default: torch hub's cache, "
                                        "else torchvision's download)", resume=REFUSE)
    image_size: int | None = setting(None, "folder datasets: resize every image to SIZE x SIZE (e.g. 224)",
                                     resume=REFUSE, low=8)
    # Folders larger than memory (cnnlab.data.stream): decoded per batch in worker processes.
    stream: bool = setting(False, "folder datasets: decode images per batch in DataLoader workers instead of "
                                  "holding them in memory (chosen by itself past --max-memory)")
    max_memory: float | None = setting(None, "folder datasets: stream when the decoded images would take more "
                                             "GiB than this (default: half the memory available)", above=0)
    skip_bad: bool = setting(False, "folder datasets: leave out files that are not readable images (and say "
                                    "how many) instead of stopping", resume=REFUSE)
    workers: int = setting(2, "streamed folders: DataLoader worker processes decoding images", low=0)
    train: TrainConfig = setting(factory=TrainConfig, flag=False)

    def __post_init__(self) -> None:
        _check_choices(self)
        _check_bounds(self)
        if self.pretrained and self.normalize != "none":
            raise CnnlabError("--pretrained normalises with ImageNet's mean/std; leave out --normalize")

    def to_dict(self) -> dict:
        return {**{f.name: getattr(self, f.name) for f in settings(RunConfig)}, "train": self.train.to_dict()}


def _check_choices(config) -> None:
    for f in dataclasses.fields(config):
        choices, value = f.metadata.get("choices"), getattr(config, f.name)
        if choices is not None and value not in choices:
            raise CnnlabError(f"{f.name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def _check_bounds(config) -> None:
    """Every numeric setting within the range its metadata states (``setting(low=...)``)."""
    for f in dataclasses.fields(config):
        bounds, value = f.metadata.get("bounds"), getattr(config, f.name)
        if bounds is None or value is None:
            continue
        if not all(bounds.ok(v) for v in (value if isinstance(value, tuple) else (value,))):
            raise CnnlabError(bounds.message(f.name, value))


def settings(cls) -> list[dataclasses.Field]:
    """The user-facing settings of a config class (RunConfig's own, not its nested ``train``)."""
    return [f for f in dataclasses.fields(cls) if f.name != "train"]


def all_settings() -> dict[str, dataclasses.Field]:
    """Every setting of a run by name: RunConfig's, then the hyperparameters, then the runtime."""
    return {f.name: f for cls in (RunConfig, Hyperparams, Runtime) for f in settings(cls)}


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def with_overrides(config, **fields):
    """A copy of ``config`` (a RunConfig, TrainConfig, Hyperparams or Runtime) with ``fields`` replaced.

    Every value is checked against its field's type (ints for int fields, "shift=0.1" or an
    Augment for augment, ...). On a RunConfig, TrainConfig field names reach its ``train``.
    """
    own = {f.name for f in dataclasses.fields(config)}
    mine = {k: v for k, v in fields.items() if k in own}
    rest = {k: v for k, v in fields.items() if k not in own}
    if rest and isinstance(config, RunConfig):
        mine["train"] = with_overrides(mine.get("train", config.train), **rest)
    elif rest:
        name = next(iter(rest))
        raise CnnlabError(f"unknown setting {name!r}; known settings: {', '.join(sorted(own))}")
    hints = _hints(type(config))
    return dataclasses.replace(config, **{k: coerce(k, hints[k], v) for k, v in mine.items()})


def coerce(name: str, hint, value):
    """``value`` as field ``name`` of type ``hint`` holds it, or a one-line CnnlabError."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if hint is Augment:
        if isinstance(value, dict):  # a [hyperparams.augment] table: each key checked, by name
            fields = {f.name: f for f in dataclasses.fields(Augment)}
            hints = typing.get_type_hints(Augment)
            for key in value:
                if key not in fields:
                    raise CnnlabError(f"{name}.{key} is not an augmentation setting; allowed: {', '.join(fields)}")
            return Augment(**{k: coerce(f"{name}.{k}", hints[k], v) for k, v in value.items()})
        if isinstance(value, str):
            return Augment.parse(value)
    if typing.get_origin(hint) is tuple and isinstance(value, (list, tuple)) and len(value) == len(typing.get_args(hint)):
        return tuple(coerce(name, h, v) for h, v in zip(typing.get_args(hint), value, strict=True))
    if isinstance(hint, type) and isinstance(value, hint) and (hint is bool or not isinstance(value, bool)):
        return value  # (True is an int to Python, not to a config file)
    if hint is float and type(value) is int:
        return value  # kept an int: val_size 5000 is a count, 0.1 a fraction
    raise CnnlabError(f"{name} must be {_kind(hint)}, got {value!r}")


def _kind(hint) -> str:
    if typing.get_origin(hint) is tuple:
        return f"a list of {len(typing.get_args(hint))} numbers"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
             Augment: "an augmentation string such as 'crop=2,flip-h'"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def get(config: RunConfig, name: str):
    """Setting ``name`` of a RunConfig, whether it lives on it or on its ``train``."""
    return getattr(config, name) if name in RunConfig.__dataclass_fields__ else getattr(config.train, name)


def resume_config(saved: RunConfig, **fields) -> RunConfig:
    """``saved`` with ``fields`` applied to the remaining epochs of a resumed run.

    Settings that decided the finished epochs (data, model, seed, optimiser, ...) may be
    given only with their saved value; anything else is a one-line error.
    """
    new = with_overrides(saved, **fields)
    known = all_settings()
    for name in fields:
        if known[name].metadata["resume"] == REFUSE and get(new, name) != get(saved, name):
            raise CnnlabError(f"cannot change {name} of a run being resumed: its finished epochs used "
                              f"{get(saved, name)!r}, not {get(new, name)!r}; start a new run instead")
    return new


RECIPES: dict[str, RunConfig] = {
    # The Keras tutorials, as they train (accuracy targets from their notebooks).
    "tutorial-mnist-cnn": RunConfig(
        data="mnist", model="mnist-cnn", train=TrainConfig(epochs=10, batch_size=256, optimizer="adam")),
    "tutorial-intro-cnn": RunConfig(
        data="mnist", model="intro-cnn", train_size=20_000, train=TrainConfig(epochs=6, batch_size=128)),
    # 99.0% on MNIST in two thirds of an epoch: the published fast-MNIST recipe's widths
    # and optimiser (Adam, betas (0.7, 0.9): a short memory suits a short run) with batch
    # norm after pooling, a one-cycle schedule peaking at 20% of the run, and label
    # smoothing 0.1. 160 steps of 256 at lr 0.015 cleared 99.0% on every seed tried, where
    # shorter runs without smoothing did not (the sweep is in BENCHMARKS.md).
    "mnist-fast": RunConfig(
        data="mnist", model="mnist-fast",
        train=TrainConfig(epochs=1, steps_per_epoch=160, batch_size=256, optimizer="adam", lr=0.015,
                          betas=(0.7, 0.9), schedule="onecycle", warmup=0.2, label_smoothing=0.1)),
    # 99.5% on MNIST: mnist-fast plus a 128-unit hidden layer, the same optimiser for 6
    # epochs, random ±2-pixel translations (a digit's position carries no class) and a
    # little label smoothing. Without the hidden layer it stopped just short of 99.5%; 6 epochs
    # keep a margin over 99.5% on every seed tried (accuracies and times: BENCHMARKS.md).
    "mnist-995": RunConfig(
        data="mnist", model="mnist-fast-plus",
        train=TrainConfig(epochs=6, batch_size=256, optimizer="adam", lr=0.01, betas=(0.7, 0.9),
                          schedule="onecycle", warmup=0.2, label_smoothing=0.1, augment=Augment(crop=2))),
    # 90% on CIFAR-10 in under 15 minutes of 2 CPU cores: an airbench-style net at half
    # width, SGD with Nesterov momentum and a one-cycle schedule (peak lr 0.2 at batch 256:
    # DAWNBench ResNet-9's 0.4 at batch 512, scaled linearly), label smoothing 0.2 and
    # flip + crop augmentation as airbench; evaluation averages each image with its mirror.
    "cifar-fast": RunConfig(
        data="cifar10", model="cifar-fast", normalize="featurewise",
        train=TrainConfig(epochs=8, batch_size=256, optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True,
                          weight_decay=5e-4, schedule="onecycle", warmup=0.2, label_smoothing=0.2,
                          augment=Augment(flip_h=True, crop=2), eval_flip=True)),
    # 94% on CIFAR-10: airbench94_muon (Keller Jordan's record recipe) on the CPU. Its net
    # (a fitted whitening layer, groups of 64/256/256), Muon on the filters and SGD on the
    # rest (cnnlab.train.muon), batch 2000, a straight linear decay, label smoothing 0.2,
    # flips and 2-pixel crops, six test views. EPOCHS: see BENCHMARKS.md.
    "cifar-94": RunConfig(
        data="cifar10", model="cifar-94", normalize="featurewise",
        train=TrainConfig(epochs=10, batch_size=2000, optimizer="muon", lr=0.24, momentum=0.6, nesterov=True,
                          weight_decay=2e-6, schedule="linear", label_smoothing=0.2,
                          augment=Augment(flip_h=True, crop=2), eval_flip=True, eval_shift=True)),
}


def get_recipe(name: str) -> RunConfig:
    if name not in RECIPES:
        raise CnnlabError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}")
    return RECIPES[name]
