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
from cnnlab.runs import lock as runlock
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


def _text(path: Path, fix: str) -> str:
    try:
        return Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CnnlabError(f"{path} is not UTF-8 text (bad byte at {exc.start}); it is damaged; {fix}") from None


def read_json(path: Path, kind: type, fix: str):
    """A JSON file that must hold a ``kind`` (dict or list), or a one-line CnnlabError naming it."""
    try:
        value = json.loads(_text(path, fix))
    except json.JSONDecodeError as exc:
        raise CnnlabError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}); it is truncated or "
                          f"damaged; {fix}") from None
    if not isinstance(value, kind):
        raise CnnlabError(f"{path} holds a JSON {type(value).__name__}, not an {kind.__name__}; it is damaged; {fix}")
    return value


_HISTORY_FIX = "delete it: `cnnlab train --resume` writes it again from last.pt"


def read_history(path: Path) -> list[dict]:
    """history.csv as one dict per epoch; [] when absent, a one-line CnnlabError when damaged."""
    if not Path(path).is_file():
        return []
    rows = list(csv.DictReader(_text(path, _HISTORY_FIX).splitlines()))
    out = []
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        if None in row or "epoch" not in row:  # extra fields, or not our header
            raise CnnlabError(f"{path}, line {i}: not the columns {','.join(HISTORY_FIELDS)}; {_HISTORY_FIX}")
        try:
            out.append({k: (float(v) if v not in ("", None) else math.nan) for k, v in row.items()})
        except ValueError:
            bad = next(f"{k}={v!r}" for k, v in row.items() if v not in ("", None) and not _is_number(v))
            raise CnnlabError(f"{path}, line {i}: {bad} is not a number; {_HISTORY_FIX}") from None
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _contents(path: Path) -> list[Path]:
    """A run folder's entries, less lock files and the temporary files of writers."""
    if not path.is_dir():
        return []
    return [p for p in path.iterdir() if p.name not in runlock.BOOKKEEPING
            and not (p.name.startswith(".") and p.name.endswith(files.TMP_SUFFIX))]


def create_run(path: Path, config: dict, *, overwrite: bool = False) -> Path:
    """Make the run directory, take its writer's lock and write config.json.

    Refuses an existing run unless overwriting, and a folder that is not a run. A folder
    holding only what a killed ``train`` left (a lock file, temporary files) counts as
    empty. The lock stays held by this process (see ``cnnlab.runs.lock``).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CnnlabError(f"--out {path} is a file, not a folder; choose another --out")
    if _contents(path):
        if not overwrite:
            raise CnnlabError(f"output directory {path} already exists; use --overwrite to replace it "
                              f"or --resume {path} to continue it")
        if not (path / "config.json").is_file():
            raise CnnlabError(f"{path} exists and is not a cnnlab run; refusing to overwrite it, choose another --out")
    runlock.acquire(path)  # from here on no other cnnlab process writes here
    files.remove_stale_temporaries(path)
    for entry in _contents(path):  # overwrite: empty the folder, keeping the lock we hold
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
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
            # Ctrl-C between two files would leave them disagreeing; readers wait for all three.
            with interrupts_deferred(), runlock.snapshot(run_path, write=True):
                if end.improved or not (run_path / "best.pt").exists():
                    save_checkpoint(run_path / "best.pt", state["model"])
                save_checkpoint(run_path / "last.pt", state)
                write_history(run_path / "history.csv", state["history"])
        dist.barrier()

    return on_epoch_end


class SavedModelInfo:
    """What a run's config.json and an exported file's metadata both say about the network: its
    class names and input shape (from ``self.config``)."""

    config: dict

    @property
    def classes(self) -> list[str]:
        return list(self.config.get("classes") or [str(i) for i in range(self.config["num_classes"])])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.config["input_shape"])


class Run(SavedModelInfo):
    """A run directory read back: config, history, metrics, and the trained model."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise CnnlabError(f"{self.path} has no config.json; is it a run directory made by `cnnlab train`?")
        with runlock.snapshot(self.path, write=False):  # the files of one epoch, not of two
            self.config: dict = check_config(read_json(self.path / "config.json", dict, _CONFIG_FIX),
                                             self.path / "config.json")
            # history.csv and metrics.json are read now but checked when used: a damaged
            # one stops only the commands that need it.
            self._history = self._later(lambda: read_history(self.path / "history.csv"))
            self._metrics = self._later(self._read_metrics)

    @staticmethod
    def _later(read):
        try:
            return read(), None
        except CnnlabError as exc:
            return None, exc

    def _read_metrics(self) -> dict | None:
        path = self.path / "metrics.json"
        fix = "delete it: `cnnlab evaluate` writes it again"
        return read_json(path, dict, fix) if path.is_file() else None

    @property
    def history(self) -> list[dict]:
        """history.csv, one dict per epoch; a one-line CnnlabError if it is damaged."""
        value, error = self._history
        if error is not None:
            raise error
        return value

    @property
    def metrics(self) -> dict | None:
        """metrics.json, None when absent; a one-line CnnlabError if it is damaged."""
        value, error = self._metrics
        if error is not None:
            raise error
        return value

    @property
    def readable_metrics(self) -> dict | None:
        """metrics.json, or None when it is absent or damaged (for commands that rewrite it)."""
        return self._metrics[0]

    def weights_path(self, weights: str = "best") -> Path:
        for name in (f"{weights}.pt", "best.pt", "last.pt"):
            if (self.path / name).is_file():
                return self.path / name
        raise CnnlabError(f"{self.path} has no weights (best.pt or last.pt): the run was interrupted before its "
                          f"first epoch finished; train it again with `cnnlab train --resume {self.path}`")

    def build_model(self, weights: str = "best") -> torch.nn.Module:
        """The trained network in eval mode, weights loaded safely: rebuilt from its name, spec or
        ``module:function`` path, or loaded from the run's torch.export program (``cnnlab.runs.program``)."""
        from cnnlab.models import build
        from cnnlab.models.weights import check_state_dict

        if self.config.get("program"):
            from cnnlab.runs.program import load_program

            model = load_program(self.path / Path(str(self.config["program"])).name)  # never outside the run
        else:
            model = build(self.config["model"], input_shape=self.input_shape, num_classes=self.config["num_classes"])

        path = self.weights_path(weights)
        with runlock.snapshot(self.path, write=False):
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

    @property
    def streamed(self) -> bool:
        """True when the run trained on a streamed folder (``cnnlab.data.stream``): its test
        split is evaluated batch by batch from the files, never decoded whole."""
        return bool(self.config.get("streamed")) and str(self.config.get("data", "")).startswith("folder:")

    def load_stream(self, workers: int | None = None):
        """The run's folder as streams (a ``cnnlab.data.stream.StreamedFolder``: the same splits
        as in training, nothing decoded yet), normalised as in training."""
        from cnnlab.data.stream import stream_folder

        cfg = self.config
        data = stream_folder(cfg["data"], image_size=cfg.get("image_size"), mode=cfg.get("mode"),
                             seed=cfg.get("train", {}).get("seed", 0), train_size=cfg.get("train_size"),
                             val_size=cfg.get("val_size") or 0, skip_bad=bool(cfg.get("skip_bad")),
                             mean=cfg.get("mean"), std=cfg.get("std"),
                             workers=cfg.get("workers", 2) if workers is None else workers)
        if list(data.input_shape) != list(self.input_shape):
            raise CnnlabError(f"{cfg['data']} now decodes to {data.input_shape}, not the run's input "
                              f"{tuple(self.input_shape)}; its images changed since training")
        return data

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, C) -> the float (N, C, H, W) tensor the model was trained on."""
        from cnnlab.data.transforms import to_tensor

        expected = tuple(self.input_shape)
        if tuple(images.shape[1:]) != expected:
            raise CnnlabError(f"images of shape {tuple(images.shape[1:])} do not match this run's input "
                              f"{expected} (H, W, C); resize/convert them first")
        return to_tensor(images, mean=self.config.get("mean"), std=self.config.get("std"))


_CONFIG_FIX = "the run cannot be used without it; train it again (--overwrite)"


def check_config(config: dict, path: Path) -> dict:
    """The keys every command reads from config.json, with the types they need."""
    def need(key, ok, what):
        if key not in config:
            raise CnnlabError(f"{path} has no {key!r}; it is damaged or not a cnnlab run's; {_CONFIG_FIX}")
        if not ok(config[key]):
            raise CnnlabError(f"{path}: {key!r} should be {what}, got {config[key]!r:.60}; {_CONFIG_FIX}")

    def count(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    need("model", lambda v: isinstance(v, str) and v.strip(), "a model name or spec")
    need("num_classes", count, "a positive integer")
    need("input_shape", lambda v: isinstance(v, list) and len(v) == 3 and all(map(count, v)), "[H, W, C]")
    if config.get("classes") is not None:
        need("classes", lambda v: isinstance(v, list) and len(v) == config["num_classes"]
             and all(isinstance(c, str) for c in v), f"a list of {config['num_classes']} names")
    for key, kind in (("data", str), ("train", dict)):
        if config.get(key) is not None:
            need(key, lambda v, kind=kind: isinstance(v, kind), f"a JSON {'string' if kind is str else 'object'}")
    return config


_STATE_KEYS = {"epoch": int, "model": dict, "optimizer": dict, "scheduler": dict, "batches": dict,
               "aug_rng": torch.Tensor, "torch_rng": torch.Tensor, "history": list, "best": dict}


def check_training_state(state, path: Path) -> dict:
    """A last.pt that loads is still checked to be cnnlab's training state before resuming from it."""
    fix = "delete it to resume from the start, or train again (--overwrite)"
    if not isinstance(state, dict):
        raise CnnlabError(f"{path} holds a {type(state).__name__}, not a cnnlab training checkpoint; {fix}")
    for key, kind in _STATE_KEYS.items():
        if key not in state:
            raise CnnlabError(f"{path} has no {key!r}: it is not a cnnlab training checkpoint; {fix}")
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            raise CnnlabError(f"{path}: {key!r} is a {type(state[key]).__name__}, not a {kind.__name__}; {fix}")
    if state["epoch"] < 0 or state["epoch"] != len(state["history"]):
        raise CnnlabError(f"{path}: epoch {state['epoch']} does not match its {len(state['history'])} "
                          f"epochs of history; {fix}")
    return state


def load_run(path) -> Run:
    path = Path(path)
    if not path.is_dir():
        raise CnnlabError(f"run directory {path} does not exist")
    return Run(path)
