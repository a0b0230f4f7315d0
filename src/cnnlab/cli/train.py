"""`cnnlab train`: train a model on a dataset into a run directory (also under torchrun).

The settings' flags are made from the configuration's fields (``cnnlab.train.config``):
each flag defaults to None, meaning "not typed", so whatever a user types wins over the
recipe and the config file, even when it equals the built-in default.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

from cnnlab.cli import options
from cnnlab.errors import CnnlabError

EPILOG = """precedence: built-in defaults < --recipe < --config FILE < options typed here.
with --resume: data, model, train size, validation size, normalisation, init, seed and optimizer
are those of the finished epochs (typing another value is an error); every other option
applies to the remaining epochs and is recorded in the run's config.json.
examples:
  cnnlab train --recipe mnist-fast --batch-size 128
  cnnlab train --recipe mnist-fast --print-config > fast.toml
  cnnlab train --config fast.toml --epochs 2 --out runs/fast2"""


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a model on a dataset into a run directory",
        description="Train a model (a name from `cnnlab models` or a one-line spec) on a dataset and write "
        "runs/NAME/ (config.json, history.csv, last.pt, best.pt, metrics.json, report.html). "
        "Under `torchrun --nproc-per-node=N -m cnnlab train ...` it trains data-parallel.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--recipe", help="start from a named preset: " + ", ".join(_recipe_names()))
    p.add_argument("--config", type=Path, metavar="FILE", help="settings from a TOML file (as --print-config writes)")
    p.add_argument("--print-config", action="store_true",
                   help="print the fully resolved configuration as TOML and exit (feed it back with --config)")
    p.add_argument("--out", type=Path, help="run directory (default runs/DATA-MODEL)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard logs into RUN_DIR/tensorboard (pip install 'cnnlab[tensorboard]')")
    p.add_argument("--lr-scale-batch", type=int, metavar="B0",
                   help="linear scaling rule: multiply the learning rate by batch-size/B0 (explicit, never silent)")
    add_setting_flags(p)
    options.add_verbosity(p, quiet="no output while training", default=None, levels=True,
                          verbose="one line per epoch instead of a progress bar")
    options.add_offline(p)
    p.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    p.set_defaults(func=run)


def _recipe_names() -> list[str]:
    from cnnlab.train.config import RECIPES

    return list(RECIPES)



def add_setting_flags(p: argparse.ArgumentParser) -> None:
    """One flag per configuration setting (--batch-size for batch_size, ...), default None."""
    from cnnlab.train.config import Hyperparams, RunConfig, Runtime, all_settings

    hints = {**typing.get_type_hints(RunConfig), **typing.get_type_hints(Hyperparams),
             **typing.get_type_hints(Runtime)}
    for name, f in all_settings().items():
        if not f.metadata["flag"]:
            continue
        hint = hints[name]
        if type(None) in typing.get_args(hint):  # X | None: the flag gives an X
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        text = f.metadata["help"]
        kwargs = {"dest": name, "default": None, "choices": f.metadata["choices"],
                  "help": text if "default" in text else f"{text} (default {_shown(f)})"}
        bounds = f.metadata.get("bounds") or options.Bounds()  # the setting's own range, checked at parse time
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            kwargs.update(nargs=len(typing.get_args(hint)), type=options.bounded(float, bounds), metavar=("B1", "B2"))
        elif hint in (int, float):
            kwargs.update(type=options.bounded(int if hint is int else options.number, bounds),
                          metavar="N" if hint is int else "X")
        else:
            kwargs.update(type=str, metavar=None if kwargs["choices"] else name.upper())
        p.add_argument("--" + name.replace("_", "-"), **kwargs)


def _shown(f: dataclasses.Field) -> str:
    from cnnlab.runs.config_file import augment_text

    value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if value is None:
        return "unset"
    if isinstance(value, (bool, tuple)):
        return str(value).lower() if isinstance(value, bool) else " ".join(map(str, value))
    return str(value) if not hasattr(value, "active") else augment_text(value)


# Options of this command that are not settings, and may not come with --resume.
_NEW_RUN_ONLY = {"recipe": "--recipe", "out": "--out", "overwrite": "--overwrite"}


def typed_settings(args: argparse.Namespace) -> dict:
    """The settings typed on the command line (a flag left at None was not typed)."""
    from cnnlab.train.config import all_settings

    given = {name: getattr(args, name) for name in all_settings() if getattr(args, name, None) is not None}
    if args.verbosity is not None:
        given["verbose"] = args.verbosity
    return given


def resolve(args: argparse.Namespace):
    """(the RunConfig to train, the changes for --resume): defaults < recipe < file < typed options."""
    from cnnlab.runs.config_file import read_config
    from cnnlab.runs.experiment import config_of
    from cnnlab.train.config import RunConfig, get, get_recipe, resume_config, with_overrides

    changes = {**(read_config(args.config) if args.config else {}), **typed_settings(args)}
    if args.resume:
        for dest, flag in _NEW_RUN_ONLY.items():
            if getattr(args, dest):
                raise CnnlabError(f"{flag} cannot be used with --resume: a resumed run keeps its directory "
                                  "and configuration (options typed with --resume change the remaining epochs)")
        base = config_of(args.resume)
        cfg = resume_config(base, **changes)
    else:
        base = get_recipe(args.recipe) if args.recipe else RunConfig()
        if changes.get("pretrained") and not args.recipe:
            from cnnlab.train.finetune import FINETUNE_DEFAULTS

            base = with_overrides(base, **FINETUNE_DEFAULTS)  # fastai's fine_tune recipe, under what was typed
        cfg = with_overrides(base, **changes)
    if args.lr_scale_batch:
        cfg = with_overrides(cfg, lr=_scaled_lr(cfg, args.lr_scale_batch))
        changes["lr"] = cfg.train.lr
    return cfg, {name: get(cfg, name) for name in changes}  # as the config holds them (a tuple, not a list)


def _scaled_lr(cfg, b0: int) -> float:
    from cnnlab.train.optim import DEFAULT_LR

    if b0 < 1:
        raise CnnlabError(f"--lr-scale-batch must be at least 1, got {b0}")
    return (cfg.train.lr or DEFAULT_LR[cfg.train.optimizer]) * cfg.train.batch_size / b0


def run(args: argparse.Namespace) -> int:
    from cnnlab.precision import bf16_note, resolve_precision
    from cnnlab.runs.config_file import to_toml
    from cnnlab.runs.experiment import resume_run, train_run
    from cnnlab.train import distributed as dist
    from cnnlab.train.config import with_overrides
    from cnnlab.train.device import resolve_device
    cfg, changes = resolve(args)
    # Keras: steps_per_epoch and no batch size means batches of ceil(N / steps).
    from_steps = cfg.train.steps_per_epoch is not None and "batch_size" not in changes and not args.recipe
    if args.print_config:  # a batch size known only once the data is loaded stays out of the file
        derived = {"batch_size": "ceil(N / steps_per_epoch), as in Keras"} if from_steps and not args.resume else {}
        print(to_toml(cfg, header=_HEADER, derived=derived), end="")
        return 0
    if not args.resume:
        _check_data(cfg.data)  # a misspelt dataset is refused before the banner, not after it
    if args.tensorboard:
        from cnnlab.extras import require

        require("torch.utils.tensorboard", extra="tensorboard", package="tensorboard", purpose="--tensorboard")
    device = dist.setup(cfg.train.device)
    main = dist.is_main()  # remembered: after teardown every process looks like rank 0
    out = args.resume or args.out or "RUN_DIR"
    if not args.resume and dist.restarted():
        # torchrun --max-restarts restarted the group after a worker died: continue from the
        # last checkpoint as --resume would (never --overwrite the finished epochs).
        out = args.out or _default_out(cfg)
        if (Path(out) / "config.json").is_file():
            args.resume = Path(out)
    failed = False
    try:
        if args.resume:
            changes.update({"device": device} if device != cfg.train.device else {})
            path, history = resume_run(args.resume, changes=changes, download=not args.offline,
                                       tensorboard=_logger(args))
        else:
            where = resolve_device(device)
            cfg = with_overrides(cfg, device=device, precision=resolve_precision(cfg.train.precision, where))
            if main and cfg.train.verbose:
                print(f"training {cfg.model} on {cfg.data}: device {where}, precision {cfg.train.precision}"
                      + (" (auto)" if args.precision in (None, "auto") else ""))
            warning = bf16_note(cfg.train.precision, where)
            if main and warning:
                print(f"cnnlab train: warning: {warning}", file=sys.stderr)
            out = args.out or _default_out(cfg)
            path, history = train_run(cfg, out, overwrite=args.overwrite, download=not args.offline,
                                      tensorboard=_logger(args), batch_from_steps=from_steps,
                                      batch_from_size="batch_size" not in changes and not args.recipe,
                                      notify=(lambda line: print(f"cnnlab train: {line}")) if main else None)
    except KeyboardInterrupt:
        failed = True
        if main:
            print(f"cnnlab train: interrupted; finished epochs are saved, continue with "
                  f"`cnnlab train --resume {out}`", file=sys.stderr)
        return 130
    except Exception as exc:
        failed = True
        lost = dist.peer_failure(exc)  # a rank that stalled or died: one line, not a gloo traceback
        if lost is None:
            raise
        raise CnnlabError(f"{lost}; finished epochs are saved in {out}, continue with "
                          f"`cnnlab train --resume {out}` (or run under torchrun --max-restarts=N)") from None
    finally:
        dist.teardown(failed=failed)
    if not main:
        return 0
    last = history.epochs[-1] if history.epochs else {}
    print(f"trained {len(history)} epochs: " + ", ".join(f"{k} {last[k]:.4f}" for k in
                                                         ("loss", "accuracy", "val_loss", "val_accuracy") if k in last))
    if not args.no_report:
        _report(path)
    print(f"run directory: {path}")
    return 0


def _check_data(name: str) -> None:
    """The one-line error ``load`` would give for an unknown dataset or a missing folder, before any output."""
    from cnnlab.data.registry import get_spec

    if name.startswith("folder:"):
        folder = Path(name[len("folder:"):]).expanduser()
        if not folder.is_dir():
            raise CnnlabError(f"--data {name}: folder {folder} does not exist; give folder:PATH with one "
                              "sub-folder of images per class")
    elif name != "digits":
        get_spec(name)


def _logger(args):
    """The TensorBoard callback's factory for --tensorboard (the run directory never imports the exporters)."""
    if not args.tensorboard:
        return None
    from cnnlab.export.tensorboard import TensorBoardLog

    return TensorBoardLog


def _default_out(cfg) -> Path:
    return Path("runs") / f"{cfg.data.replace(':', '-').replace('/', '-')}-{cfg.model}"


_HEADER = """cnnlab train configuration: `cnnlab train --config FILE` repeats this run.
Precedence: built-in defaults < --recipe < this file < options typed on the command line."""


def _report(path: Path) -> None:
    from cnnlab.reporting import report_run

    try:
        report = report_run(path)
    except CnnlabError as exc:
        print(f"cnnlab train: report skipped: {exc}", file=sys.stderr)
        return
    print(f"report: {report}")
