"""`cnnlab train`: train a model on a dataset into a run directory (also under torchrun)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnlab.errors import CnnlabError


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a dataset into a run directory",
        description="Train a model (a name from `cnnlab models` or a one-line spec) on a dataset and write "
        "runs/NAME/ (config.json, history.csv, last.pt, best.pt, metrics.json, report.html). "
        "Under `torchrun --nproc-per-node=N -m cnnlab train ...` it trains data-parallel.",
    )
    p.add_argument("--recipe", help="start from a named preset (cnnlab.train.recipes): mnist-fast, tutorial-mnist-cnn, ...; "
                   "options given explicitly override it")
    p.add_argument("--data", default="mnist", help="mnist, fashion-mnist, cifar10 or folder:PATH (default mnist)")
    p.add_argument("--model", default="mnist-cnn", help="model name or spec (default mnist-cnn)")
    p.add_argument("--out", type=Path, help="run directory (default runs/DATA-MODEL)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 10; with --resume: the new total)")
    p.add_argument("--batch-size", type=int, default=128, help="global batch size (default 128)")
    p.add_argument("--steps-per-epoch", type=int, help="batches per epoch (default: one pass over the data)")
    p.add_argument("--train-size", type=int, help="train on the first N training images")
    p.add_argument("--val-size", type=float, default=0,
                   help="hold out a fraction (or count) of training data for validation (default: validate on test)")
    p.add_argument("--optimizer", default="adam", choices=["adam", "adamw", "sgd", "adadelta"])
    p.add_argument("--lr", type=float, help="learning rate (default: the optimizer's usual one)")
    p.add_argument("--lr-scale-batch", type=int, metavar="B0",
                   help="linear scaling rule: multiply --lr by batch-size/B0 (explicit, never silent)")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (e.g. 0.9)")
    p.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    p.add_argument("--decay", type=float, default=0.0, help="Keras time-based decay: lr / (1 + decay * iteration)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="constant", choices=["constant", "step", "cosine", "onecycle"])
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--augment", help="e.g. shift=0.1,flip-h,rotation=10,crop=4")
    p.add_argument("--eval-flip", action="store_true",
                   help="evaluate on each image and its mirror, averaged (test-time augmentation, e.g. CIFAR-10)")
    p.add_argument("--normalize", default="none", choices=["none", "featurewise"],
                   help="featurewise: subtract the training set's per-channel mean, divide by its std")
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="stop after PATIENCE epochs without improvement")
    p.add_argument("--monitor", default="val_loss", choices=["loss", "accuracy", "val_loss", "val_accuracy"])
    p.add_argument("--restore-best", action="store_true", help="end with the best epoch's weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (pays off on long runs)")
    p.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                   help="on CUDA, run each step op by op instead of replaying it as a CUDA graph")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: bf16 mixed precision on CUDA, fp32 on the CPU")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2], help="0 silent, 1 progress bars, 2 a line per epoch")
    p.add_argument("--offline", action="store_true", help="never download data")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    p.set_defaults(func=run)
    p.set_defaults(parser_defaults={a.dest: a.default for a in p._actions})


# Options a --recipe may be overridden by, as (argparse dest, TrainConfig or RunConfig field).
_TRAIN_OVERRIDES = {"epochs": "epochs", "batch_size": "batch_size", "steps_per_epoch": "steps_per_epoch",
                    "optimizer": "optimizer", "lr": "lr", "schedule": "schedule", "seed": "seed",
                    "compile": "compile", "precision": "precision", "cuda_graphs": "cuda_graphs", "verbose": "verbose",
                    "label_smoothing": "label_smoothing"}
_RUN_OVERRIDES = ("data", "model", "train_size", "val_size", "normalize")


def _from_recipe(args: argparse.Namespace, device: str):
    from dataclasses import replace

    from cnnlab.train.recipes import get_recipe

    recipe = get_recipe(args.recipe)
    defaults = args.parser_defaults
    changed = {dest for dest in (*_TRAIN_OVERRIDES, *_RUN_OVERRIDES) if getattr(args, dest) != defaults[dest]}
    train = replace(recipe.train, device=device,
                    **{field: getattr(args, dest) for dest, field in _TRAIN_OVERRIDES.items() if dest in changed})
    return replace(recipe, train=train, **{dest: getattr(args, dest) for dest in _RUN_OVERRIDES if dest in changed})


def _configs(args: argparse.Namespace, device: str):
    from cnnlab.data.transforms import Augment
    from cnnlab.train.experiment import RunConfig
    from cnnlab.train.loop import TrainConfig

    if args.recipe:
        return _from_recipe(args, device)
    lr = args.lr
    if args.lr_scale_batch:
        from cnnlab.train.optim import DEFAULT_LR

        lr = (lr or DEFAULT_LR[args.optimizer]) * args.batch_size / args.lr_scale_batch
    train = TrainConfig(
        epochs=args.epochs or 10, batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch,
        optimizer=args.optimizer, lr=lr, momentum=args.momentum, nesterov=args.nesterov, decay=args.decay,
        weight_decay=args.weight_decay, schedule=args.schedule, label_smoothing=args.label_smoothing,
        augment=Augment.parse(args.augment), seed=args.seed, early_stopping=args.early_stopping,
        monitor=args.monitor, restore_best=args.restore_best, device=device, compile=args.compile,
        precision=args.precision, cuda_graphs=args.cuda_graphs,
        eval_flip=args.eval_flip,
        verbose=args.verbose,
    )
    return RunConfig(data=args.data, model=args.model, train_size=args.train_size, val_size=args.val_size,
                     normalize=args.normalize, train=train)


def run(args: argparse.Namespace) -> int:
    from cnnlab.train import distributed as dist
    from cnnlab.train.experiment import resume_run, train_run

    device = dist.setup(args.device)
    main = dist.is_main()  # remembered: after teardown every process looks like rank 0
    out = args.resume or args.out or "RUN_DIR"
    try:
        if args.resume:
            path, history = resume_run(args.resume, epochs=args.epochs, download=not args.offline)
        else:
            cfg = _configs(args, device)
            out = args.out or Path("runs") / f"{cfg.data.replace(':', '-').replace('/', '-')}-{cfg.model}"
            path, history = train_run(cfg, out, overwrite=args.overwrite, download=not args.offline)
    except KeyboardInterrupt:
        if main:
            print(f"cnnlab train: interrupted; finished epochs are saved, continue with "
                  f"`cnnlab train --resume {out}`", file=sys.stderr)
        return 130
    finally:
        dist.teardown()
    if not main:
        return 0
    last = history.epochs[-1] if history.epochs else {}
    print(f"trained {len(history)} epochs: " + ", ".join(f"{k} {last[k]:.4f}" for k in
                                                         ("loss", "accuracy", "val_loss", "val_accuracy") if k in last))
    if not args.no_report:
        _report(path)
    print(f"run directory: {path}")
    return 0


def _report(path: Path) -> None:
    from cnnlab.report.html import write_report

    try:
        report = write_report(path)
    except CnnlabError as exc:
        print(f"cnnlab train: report skipped: {exc}", file=sys.stderr)
        return
    print(f"report: {report}")
