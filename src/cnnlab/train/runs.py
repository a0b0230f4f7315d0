"""The run directory: config, atomic checkpoints, history, metrics, and loading it back.

A run directory (``runs/<name>/``) holds::

    config.json    everything needed to repeat the run (data, model, shapes, classes,
                   normalisation, and the TrainConfig under "train")
    history.csv    epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds
    last.pt        the resumable state after the last finished epoch
    best.pt        the weights (a state_dict) of the best epoch so far
    metrics.json   test metrics, written by evaluation
    report.html    the report

Every file is written with :func:`cnnlab.files.atomic_open` (temporary name in the same
directory, fsync, rename, fsync of the folder), so an interruption (Ctrl-C, a killed
process, a power loss, a full disk) leaves the previous complete file, never half of a new one.
Checkpoints are loaded with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cnnlab import files
from cnnlab.errors import CnnlabError
from cnnlab.train import distributed as dist

HISTORY_FIELDS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")


def save_json(path: Path, obj) -> None:
    text = json.dumps(obj, indent=2, allow_nan=True) + "\n"
    files.write_text(path, text)


def save_checkpoint(path: Path, obj) -> None:
    files.write_with(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint written by cnnlab, safely (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, wrong format, disallowed global...
        raise CnnlabError(f"cannot read checkpoint {path} ({type(exc).__name__}); it is damaged or not a "
                          "cnnlab checkpoint, delete it to fall back to an earlier one") from exc


def write_history(path: Path, epochs: list[dict]) -> None:
    with files.atomic_open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        w.writeheader()
        for e in epochs:
            w.writerow({k: e.get(k, "") for k in HISTORY_FIELDS})


def read_history(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else math.nan) for k, v in row.items()}
                for row in csv.DictReader(f)]


def create_run(path: Path, config: dict, *, overwrite: bool = False) -> Path:
    """Make the run directory and write config.json; refuse an existing one unless overwriting."""
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise CnnlabError(f"output directory {path} already exists; use --overwrite to replace it "
                              f"or --resume {path} to continue it")
        if not (path / "config.json").is_file():
            raise CnnlabError(f"{path} exists and is not a cnnlab run; refusing to overwrite it, choose another --out")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    save_json(path / "config.json", config)
    return path


def save_metrics(run_path: Path, metrics: dict) -> None:
    save_json(Path(run_path) / "metrics.json", metrics)


@contextlib.contextmanager
def interrupts_deferred():
    """Hold a Ctrl-C (SIGINT) that arrives inside the block and raise it at the end.

    Outside the main thread, where Python cannot install signal handlers, it holds nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def checkpointer(run_path: Path) -> Callable:
    """A fit() callback: after every epoch write last.pt, history.csv and (if improved) best.pt.

    Only rank 0 writes under torchrun; the others wait at a barrier so no rank runs ahead
    of a checkpoint it may need to resume from.
    """
    run_path = Path(run_path)

    def on_epoch_end(end) -> None:
        if dist.is_main():
            state = end.state()
            with interrupts_deferred():  # Ctrl-C between two files would leave them disagreeing
                if end.improved or not (run_path / "best.pt").exists():
                    save_checkpoint(run_path / "best.pt", state["model"])
                save_checkpoint(run_path / "last.pt", state)
                write_history(run_path / "history.csv", state["history"])
        dist.barrier()

    return on_epoch_end


class Run:
    """A run directory read back: config, history, metrics, and the trained model."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise CnnlabError(f"{self.path} has no config.json; is it a run directory made by `cnnlab train`?")
        try:
            self.config: dict = json.loads((self.path / "config.json").read_text())
        except json.JSONDecodeError as exc:
            raise CnnlabError(f"{self.path / 'config.json'} is not valid JSON ({exc.msg}, line {exc.lineno})") from exc
        self.history = read_history(self.path / "history.csv")
        metrics_file = self.path / "metrics.json"
        self.metrics: dict | None = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None

    @property
    def classes(self) -> list[str]:
        return list(self.config.get("classes") or [str(i) for i in range(self.config["num_classes"])])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.config["input_shape"])

    def weights_path(self, weights: str = "best") -> Path:
        for name in (f"{weights}.pt", "best.pt", "last.pt"):
            if (self.path / name).is_file():
                return self.path / name
        raise CnnlabError(f"{self.path} has no weights (best.pt or last.pt): the run was interrupted before its "
                          f"first epoch finished; train it again with `cnnlab train --resume {self.path}`")

    def build_model(self, weights: str = "best") -> torch.nn.Module:
        """The trained network in eval mode, weights loaded safely."""
        from cnnlab.models import build

        model = build(self.config["model"], input_shape=self.input_shape, num_classes=self.config["num_classes"])
        from cnnlab.models.weights import check_state_dict

        path = self.weights_path(weights)
        state = load_checkpoint(path)
        if isinstance(state, dict) and "model" in state and "optimizer" in state:  # last.pt: the full state
            state = state["model"]
        check_state_dict(model, state, source=str(path), name=self.config["model"],
                         fix="delete it to fall back to the other checkpoint, or train the run again")
        model.load_state_dict(state)
        return model.eval()

    def load_data(self, download: bool = False):
        """The dataset this run was trained on, from wherever it is found now."""
        from cnnlab.data import load

        cfg = self.config
        folder = {"image_size": cfg.get("image_size"), "mode": cfg.get("mode")} if "mode" in cfg else {}
        return load(cfg["data"], download=download, train_size=cfg.get("train_size"),
                    val_size=cfg.get("val_size") or 0, seed=cfg.get("train", {}).get("seed", 0), progress=False,
                    **folder)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, C) -> the float (N, C, H, W) tensor the model was trained on."""
        from cnnlab.data.transforms import to_tensor

        expected = tuple(self.input_shape)
        if tuple(images.shape[1:]) != expected:
            raise CnnlabError(f"images of shape {tuple(images.shape[1:])} do not match this run's input "
                              f"{expected} (H, W, C); resize/convert them first")
        return to_tensor(images, mean=self.config.get("mean"), std=self.config.get("std"))


def load_run(path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise CnnlabError(f"run directory {path} does not exist")
    return Run(path)
