"""One training run from names to a finished run directory: what `cnnlab train` does.

``train_run`` loads the data, builds the model, writes config.json, trains with a
checkpoint after every epoch and records the test metrics; ``resume_run`` picks an
interrupted run up from its last checkpoint. Notebooks call these directly.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from cnnlab import fast, files
from cnnlab.errors import CnnlabError
from cnnlab.runs import directory as runs
from cnnlab.runs import lock as runlock
from cnnlab.runs.program import PROGRAM, export_program, save_program
from cnnlab.train import distributed as dist
from cnnlab.train.config import RunConfig, TrainConfig, resume_config, settings, with_overrides
from cnnlab.train.device import resolve_device
from cnnlab.train.history import History
from cnnlab.train.loop import fit
from cnnlab.train.session import score


def keras_batch_size(n: int, steps: int) -> int:
    """Keras' batch size for ``fit(x, y, steps_per_epoch=steps)`` without one: ``ceil(n / steps)``.

    Keras then splits the ``n`` training arrays into ``steps`` batches per epoch (the
    CIFAR-10 tutorial trains on batches of 500 this way: 50,000 images, 100 steps).
    """
    if steps < 1:
        raise CnnlabError(f"steps_per_epoch must be at least 1, got {steps}")
    return max(1, math.ceil(n / steps))


def folder_options(cfg: RunConfig) -> dict:
    """How a folder dataset is decoded for this run (``load``'s image_size and mode)."""
    if not cfg.data.startswith("folder:"):
        return {}
    return {"image_size": cfg.image_size, "mode": "RGB" if cfg.pretrained else None}


def small_data_batch_size(n: int, default: int) -> int:
    """A batch for fine-tuning on ``n`` training images: the largest power of two (8 at least, ``default`` at
    most) that still gives 10 steps an epoch. A small folder otherwise trains in two or three steps an
    epoch: 210 photos at batch 128 reached 65.7% where batch 16 reached 82.3% (squeezenet, 5 epochs)."""
    if n < 1:
        return default
    size = 8
    while size * 2 <= default and n / (size * 2) >= 10:
        size *= 2
    return min(size, default)


def _prepare(cfg: RunConfig, download: bool, batch_from_steps: bool = False, notify=None, user_model=None,
             batch_from_size: bool = False):
    from cnnlab.data import channel_stats, load
    from cnnlab.models import build

    data = _streamed(cfg)
    if data is None:
        data = load(cfg.data, download=download, train_size=cfg.train_size, val_size=cfg.val_size,
                    seed=cfg.train.seed, progress=dist.is_main(), **folder_options(cfg))
    if batch_from_size and not batch_from_steps and cfg.pretrained:
        n = len(data.train)
        size = small_data_batch_size(n, cfg.train.batch_size)
        if size != cfg.train.batch_size:
            cfg = with_overrides(cfg, batch_size=size)
            if notify is not None:
                notify(f"--pretrained on {n} training images: batches of {size} (10 steps an epoch at least; "
                       f"--batch-size sets it)")
    if batch_from_steps and cfg.train.steps_per_epoch:
        n, steps = len(data.train), cfg.train.steps_per_epoch
        cfg = with_overrides(cfg, batch_size=keras_batch_size(n, steps))
        if notify is not None:
            notify(f"steps_per_epoch {steps} without a batch size: batches of ceil({n} / {steps}) = "
                   f"{cfg.train.batch_size} images, as Keras' fit does")
    mean = std = None
    if cfg.normalize == "featurewise":
        if not hasattr(data.train, "images"):
            raise CnnlabError("--normalize featurewise needs the images in memory; leave it out when streaming")
        mean, std = (list(map(float, v)) for v in channel_stats(data.train.images))
    torch.manual_seed(cfg.train.seed)  # same seed, same initial weights (and the same new head)
    if user_model is not None:
        if cfg.pretrained:
            raise CnnlabError("pretrained=True builds a zoo network; with your own model object leave it out")
        model = user_model
    elif cfg.pretrained:
        from cnnlab.models.pretrained import IMAGENET_MEAN, IMAGENET_STD
        from cnnlab.models.transfer import pretrained_model

        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
        model = pretrained_model(cfg.model, num_classes=data.num_classes, input_shape=data.input_shape,
                                 weights=cfg.weights, progress=dist.is_main())
    else:
        model = build(cfg.model, input_shape=data.input_shape, num_classes=data.num_classes,
                      init=None if cfg.init == "model" else cfg.init)
    meta = {
        "data": cfg.data, "model": cfg.model if user_model is None else f"{type(user_model).__name__} ({PROGRAM})",
        **({"program": PROGRAM} if user_model is not None else {}), "init": cfg.init, "input_shape": list(data.input_shape),
        "num_classes": data.num_classes, "classes": list(data.classes),
        "train_size": cfg.train_size, "val_size": cfg.val_size, "normalize": cfg.normalize,
        "mean": mean, "std": std, "validation": "val split" if data.val is not None else "test set",
        "pretrained": cfg.pretrained, "weights": cfg.weights, "image_size": cfg.image_size,
        **({"mode": folder_options(cfg)["mode"]} if folder_options(cfg) else {}),
        "streamed": not hasattr(data.train, "images"), "stream": cfg.stream, "max_memory": cfg.max_memory,
        "skip_bad": cfg.skip_bad, "workers": cfg.workers,
        "world_size": dist.world_size(), "train": cfg.train.to_dict(),
        # Which fast paths this run takes and why the others not (cnnlab.fast.status).
        "fast_paths": fast.status(resolve_device(cfg.train.device), cfg.train.fast, model,
                                  cuda_graphs=cfg.train.cuda_graphs),
    }
    if notify is not None and cfg.train.verbose:
        notify("fast paths: " + fast.summary(meta["fast_paths"]))
    for part in (data.train, data.val, data.test):  # streams normalise on the device, batched
        if part is not None and not hasattr(part, "images"):
            part.mean, part.std = mean, std
    return data, model, meta, cfg


def _streamed(cfg: RunConfig):
    """The folder as streams (cnnlab.data.stream) when --stream, --skip-bad or its size asks for it."""
    if not cfg.data.startswith("folder:"):
        return None
    from cnnlab.data.folder import _parse_size
    from cnnlab.data.stream import check_batch_memory, should_stream, stream_folder

    size = _parse_size(cfg.image_size)
    if size is not None:  # before the folder is scanned: a grey batch (the least) must fit
        check_batch_memory(cfg.train.batch_size, size, 3 if cfg.pretrained else 1)
    data = stream_folder(cfg.data, seed=cfg.train.seed, train_size=cfg.train_size, val_size=cfg.val_size,
                         skip_bad=cfg.skip_bad, workers=cfg.workers, **folder_options(cfg))
    h, w, c = data.input_shape
    check_batch_memory(cfg.train.batch_size, (h, w), c)
    big = should_stream(len(data.train) + len(data.test) + (len(data.val) if data.val else 0), (h, w), c,
                        max_memory_gib=cfg.max_memory)
    return data if cfg.stream or big or data.skipped else None


def _train(data, model, meta: dict, cfg: TrainConfig, out: Path, resume: dict | None,
           tensorboard=None) -> History:
    from cnnlab.data.transforms import to_tensor

    def tensor(split):
        return to_tensor(split.images, mean=meta["mean"], std=meta["std"])

    if meta.get("streamed"):
        return _train_streamed(data, model, meta, cfg, out, resume)
    x, x_test = tensor(data.train), tensor(data.test)
    val = (tensor(data.val), data.val.labels) if data.val is not None else (x_test, data.test.labels)
    log = tensorboard(out / "tensorboard", classes=data.classes) if tensorboard and dist.is_main() else None
    head = None
    if meta.get("pretrained"):
        from cnnlab.models.transfer import head_of

        head = head_of(model)  # discriminative learning rates, and freezing when freeze_epochs > 0
    try:
        history = fit(model, x, data.train.labels, config=cfg, validation=val,
                      callbacks=[runs.checkpointer(out), *([log] if log is not None else [])], resume=resume, head=head)
        if log is not None and hasattr(log, "write_embedding"):  # the projector's points: the validation images
            log.write_embedding(model, val[0][: log.max_points], val[1][: log.max_points])
    finally:
        if log is not None and hasattr(log, "close"):
            log.close()
    device = next(model.parameters()).device
    # The test metrics go through the one evaluation path fit's validation takes (its precision,
    # test-time views and fast setting), not a second call that could drift from it.
    loss, acc = score(model, (x_test.to(device), torch.as_tensor(data.test.labels).to(device)), cfg)
    if dist.is_main():
        runs.save_metrics(out, {"test_loss": loss, "test_accuracy": acc, "epochs": len(history),
                                "seconds": sum(e["seconds"] for e in history.epochs)})
    dist.barrier()
    return history


def _train_streamed(data, model, meta: dict, cfg: TrainConfig, out: Path, resume: dict | None) -> History:
    from cnnlab.train.feed import LoaderFeed

    head = None
    if meta.get("pretrained"):
        from cnnlab.models.transfer import head_of

        head = head_of(model)
    history = fit(model, data.train, config=cfg, validation_data=data.val if data.val is not None else data.test,
                  callbacks=[runs.checkpointer(out)], resume=resume, head=head)
    device = next(model.parameters()).device
    test = LoaderFeed(data.test, batch_size=cfg.eval_batch_size, seed=cfg.seed, device=device, shuffle=False)
    loss, acc = score(model, test, cfg)
    if dist.is_main():
        runs.save_metrics(out, {"test_loss": loss, "test_accuracy": acc, "epochs": len(history),
                                "seconds": sum(e["seconds"] for e in history.epochs),
                                "skipped_files": len(data.skipped)})
    dist.barrier()
    return history


def _on_main(action):
    """Run ``action`` on rank 0 only and raise its error on every rank (no rank left waiting)."""
    error = None
    if dist.is_main():
        try:
            action()
        except CnnlabError as exc:
            error = str(exc)
    error = dist.broadcast_object(error)
    if error:
        raise CnnlabError(error)


def train_run(cfg: RunConfig, out, *, model: torch.nn.Module | None = None, overwrite: bool = False,
              download: bool = True, tensorboard=None, batch_from_steps: bool = False,
              notify=None, batch_from_size: bool = False) -> tuple[Path, History]:
    """Train ``cfg`` into the run directory ``out``; returns (out, history).

    ``model``: your own ``nn.Module`` object (defined in a notebook or ``__main__``, where no
    import path rebuilds it) instead of ``cfg.model``; it is trained in place (``fit``'s
    rules) and saved as a ``torch.export`` program, ``out/model.pt2``, which evaluate, report,
    predict and the lab load (see ``cnnlab.runs.program``). Such a run resumes with
    ``resume_run(out, model=the_same_kind_of_object)``; a model that an import path rebuilds
    is better given as ``cfg.model = "package.module:function"``, which resumes anywhere.
    ``tensorboard``: the logger factory (``cnnlab.TensorBoardLog``) to also write TensorBoard logs
    into ``out/tensorboard`` with, as ``cnnlab train --tensorboard`` does.
    ``batch_from_steps``: ignore ``cfg.train.batch_size`` and, as Keras does for
    ``steps_per_epoch`` without a batch size, use ``ceil(N / steps_per_epoch)``
    (:func:`keras_batch_size`); ``notify(line)`` is told the size chosen. ``batch_from_size``: for a
    pretrained network, a batch that gives a small folder 10 steps an epoch (:func:`small_data_batch_size`)."""
    out = Path(out)
    _check_logger(tensorboard)  # before anything is written: a missing extra leaves no run folder behind
    data, model, meta, cfg = _prepare(cfg, download, batch_from_steps, notify, user_model=model,
                                      batch_from_size=batch_from_size)
    program = None

    def create() -> None:
        nonlocal program
        if "program" in meta:  # exported first: a model torch.export cannot take leaves no run behind
            program = export_program(model, data.input_shape)
        runs.create_run(out, meta, overwrite=overwrite)
        if program is not None:
            save_program(program, out / meta["program"])

    try:
        _on_main(create)  # takes the writer's lock
        return out, _train(data, model, meta, cfg.train, out, resume=None, tensorboard=tensorboard)
    finally:
        runlock.release(out)


def _check_logger(tensorboard) -> None:
    """``tensorboard`` is None/False, or a factory ``(logdir, classes=...) -> callback`` such as
    ``cnnlab.TensorBoardLog`` (the run directory does not import the exporters: the caller hands
    the logger in); its ``check()``, where it has one, runs before anything is written."""
    if tensorboard is None or tensorboard is False:
        return
    if tensorboard is True or not callable(tensorboard):
        raise CnnlabError(f"tensorboard= takes the logger that writes the logs, e.g. tensorboard=cnnlab.TensorBoardLog "
                          f"(as `cnnlab train --tensorboard` does); got {tensorboard!r}")
    check = getattr(tensorboard, "check", None)
    if check is not None:
        check()


def config_of(run_path) -> RunConfig:
    """The RunConfig a run directory was trained with (from its config.json)."""
    c = runs.load_run(run_path).config
    fields = {f.name: c[f.name] for f in settings(RunConfig) if f.name in c}
    return with_overrides(RunConfig(), **fields, train=TrainConfig.from_dict(c.get("train", {})))


def resume_run(run_path, *, epochs: int | None = None, changes: dict | None = None, model=None,
               download: bool = True, tensorboard=None) -> tuple[Path, History]:
    """Continue an interrupted run from last.pt (from scratch if no epoch had finished).

    ``model``: for a run trained from a model object (``train_run(..., model=net)``), a new
    object of the same network to train on; its saved torch.export program cannot train.

    ``epochs`` may raise the total to train a finished run further. ``changes`` maps
    settings (``with_overrides`` names) to new values for the remaining epochs: those that
    decided the finished epochs (data, model, seed, optimizer, ...) are refused with a
    CnnlabError unless equal to the saved ones. The changed configuration is saved in
    config.json.
    """
    run_path = Path(run_path)
    if not run_path.is_dir():
        raise CnnlabError(f"run directory {run_path} does not exist")
    _check_logger(tensorboard)
    _on_main(lambda: runlock.acquire(run_path))  # one writer: a second --resume or --overwrite is refused
    try:
        if dist.is_main():
            files.remove_stale_temporaries(run_path)  # what a kill left behind
        return run_path, _resume(run_path, changes={**(changes or {}), **({"epochs": epochs} if epochs is not None else {})},
                                 download=download, tensorboard=tensorboard, user_model=model)
    finally:
        runlock.release(run_path)


def _resume(run_path: Path, *, changes: dict, download: bool, tensorboard=None, user_model=None) -> History:
    from cnnlab.models.weights import check_state_dict

    saved = runs.load_run(run_path).config
    if saved.get("program") and user_model is None:
        raise CnnlabError(f"{run_path} was trained from a model object kept only as a torch.export program "
                          f"({saved['program']}), which is fixed in eval mode and cannot train; resume it from "
                          "Python with resume_run(path, model=net), or train with --model package.module:function")
    if user_model is not None and not saved.get("program"):
        raise CnnlabError(f"{run_path} rebuilds its model from {saved.get('model')!r}; resume it without model=")
    cfg = resume_config(config_of(run_path), **changes)
    data, model, meta, cfg = _prepare(cfg, download, user_model=user_model)
    last = run_path / "last.pt"
    state = runs.load_checkpoint(last) if last.is_file() else None
    if state is not None:
        runs.check_training_state(state, last)
        check_state_dict(model, state["model"], source=str(last), name=cfg.model,
                         fix="delete it to resume from the start, or train again (--overwrite)")
    if state is not None and state["epoch"] >= cfg.train.epochs:
        raise CnnlabError(f"{run_path} already finished its {state['epoch']} epochs; "
                          "pass --epochs N with a larger N to train it further")
    if changes and dist.is_main():
        saved = runs.load_run(run_path).config
        runs.save_json(run_path / "config.json", {**saved, "train": cfg.train.to_dict()})
    return _train(data, model, meta, cfg.train, run_path, resume=state, tensorboard=tensorboard)
