"""What the lab looks at: a run directory or a pretrained ImageNet network.

A target holds its model (loaded once, reloaded only when a training run writes new
weights), its class names, its input shape, and for runs the test set and the test-set
predictions (computed once per set of weights). Every model call goes through the target's
lock: overview hooks and gradients must not interleave between two requests.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from cnnlab.errors import CnnlabError
from cnnlab.lab.imaging import LabError, fit_to_input


@dataclass(frozen=True)
class Input:
    """One input image: ``image`` uint8 (H, W, C) as shown, ``x`` float (1, C, H, W) as the model sees it."""

    image: np.ndarray
    x: torch.Tensor
    label: int | None = None  # the true class, for test images
    note: str = ""


class Target(Protocol):
    """Anything the lab serves: a network, its classes and input shape, and how an image becomes
    its input. ``kind`` is "run" (a run directory) or "pretrained" (an ImageNet network)."""

    name: str
    kind: str
    model_name: str
    classes: list[str]
    input_shape: tuple[int, int, int]
    lock: threading.RLock

    @property
    def model(self) -> torch.nn.Module: ...

    def preprocess(self, image: np.ndarray) -> torch.Tensor: ...

    def from_pil(self, img) -> Input: ...

    def history(self) -> dict: ...


class EvaluatedTarget(Target, Protocol):
    """A target with a test set the lab has evaluated (a run): errors, confusion, test images."""

    def evaluated_labels(self) -> np.ndarray: ...

    def probs(self) -> np.ndarray: ...

    def test_input(self, index: int) -> Input: ...


def evaluated(target: Target) -> EvaluatedTarget:
    """``target`` where it has a test set; a 409 saying why not (a pretrained network) otherwise."""
    # The class is asked, not the object: a run's properties load its weights and test set.
    if not all(callable(getattr(type(target), m, None)) for m in ("evaluated_labels", "probs", "test_input")):
        raise LabError(409, f"{target.name} is a pretrained ImageNet network: the lab has no test set for it; "
                            "upload photos instead")
    return target


def discover_runs(root: Path, *, depth: int = 3) -> list[Path]:
    """Run directories (holding config.json) under ``root``, sorted, at most ``depth`` levels down."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    level = [root]
    for _ in range(depth):
        nxt = []
        for folder in level:
            for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                (found if (child / "config.json").is_file() else nxt).append(child)
        level = nxt
    return sorted(found)


class RunTarget:
    """A run directory made by ``cnnlab train``; the model follows its best weights."""

    kind = "run"

    def __init__(self, path: Path, *, max_test: int | None = None, device: str = "cpu") -> None:
        from cnnlab.runs.directory import load_run
        from cnnlab.train.device import resolve_device

        self.device = resolve_device(device)  # where the model runs; inputs and results stay on the CPU
        self.path = Path(path).resolve()
        self.run = load_run(self.path)
        self.name = f"{self.path.parent.name}/{self.path.name}"
        self.max_test = max_test
        self.lock = threading.RLock()
        self._model: torch.nn.Module | None = None
        self._stamp: tuple | None = None
        self._test = None
        self._probs: tuple | None = None  # (weights stamp, (N, K) probabilities)
        self.eval_lock = threading.Lock()  # one test-set evaluation at a time
        self.featurevis_cache: dict = {}  # (layer, first channel, weights) -> images: optimising takes seconds
        self.slow_lock = threading.Lock()  # one embedding or feature visualisation at a time

    @property
    def classes(self) -> list[str]:
        return self.run.classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.run.input_shape

    @property
    def model_name(self) -> str:
        return str(self.run.config.get("model"))

    def _weights_stamp(self) -> tuple:
        try:
            path = self.run.weights_path()
        except CnnlabError as exc:
            raise LabError(409, str(exc)) from exc
        stat = path.stat()
        return (str(path), stat.st_mtime_ns, stat.st_size)

    @property
    def model(self) -> torch.nn.Module:
        """The trained network; reloaded when `cnnlab train` has written newer weights."""
        with self.lock:
            stamp = self._weights_stamp()
            if stamp != self._stamp:
                self._model = self.run.build_model().to(self.device)
                self._stamp = stamp
            return self._model

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return self.run.preprocess(image[None])  # (1, C, H, W)

    def from_pil(self, img) -> Input:
        image, note = fit_to_input(img, self.input_shape)
        return Input(image, self.preprocess(image), note=note)

    @property
    def test(self):
        """The run's test split (images, labels), loaded once; any image can be the input. A streamed
        run's images are a ``StreamImages``: each decoded when it is shown, never the whole split."""
        from cnnlab.insight.stream_images import load_test_images

        with self.lock:
            if self._test is None:
                try:
                    data = self.run.load_stream() if self.run.streamed else self.run.load_data(download=False)
                    self._test = load_test_images(self.run, data)
                except (CnnlabError, OSError) as exc:
                    raise LabError(409, f"the test set of {self.name} is not available here ({exc})") from exc
            return self._test

    def evaluated_labels(self) -> np.ndarray:
        """Labels of the test images the errors panel evaluates: the first ``max_test`` (default all)."""
        labels = self.test[1]
        return labels if self.max_test is None else labels[:self.max_test]

    def test_input(self, index: int) -> Input:
        images, labels = self.test
        if not 0 <= index < len(labels):
            raise LabError(404, f"test image {index} does not exist; pick 0..{len(labels) - 1}")
        image = images[index]  # one decode for a streamed split
        return Input(image, self.preprocess(image), label=int(labels[index]))

    def probs(self) -> np.ndarray:
        """Test-set probabilities (N, K), computed once per set of weights.

        The evaluation (seconds for 10,000 images) runs on a copy of the network outside
        ``lock``, so the overview and the other panels keep answering meanwhile.
        """
        from cnnlab.insight.predictions import predict
        from cnnlab.insight.stream_images import image_batches, take

        with self.lock:
            model = self.model  # reloads newer weights first
            stamp = self._stamp
            if self._probs is not None and self._probs[0] == stamp:
                return self._probs[1]
            model = copy.deepcopy(model)  # forward hooks of an overview must not see this evaluation
            images = take(self.test[0], slice(0, len(self.evaluated_labels())))  # streamed: nothing decoded yet
        with self.eval_lock:
            # fp32, not predict's bf16 default: a cell's images must show the probabilities and
            # top class that the overview computes (in fp32) once one becomes the input.
            if self._probs is None or self._probs[0] != stamp:  # not computed by a request meanwhile
                chunks = [predict(model, self.run.preprocess(batch), 1000, precision="fp32")
                          for batch in image_batches(images, 1000)]  # a streamed split: one batch decoded at a time
                self._probs = (stamp, np.concatenate(chunks))
            return self._probs[1]

    def history(self) -> dict:
        from cnnlab.lab.runstate import run_state
        from cnnlab.runs.directory import read_history

        rows = read_history(self.path / "history.csv")
        clean = [{k: (None if v != v else v) for k, v in row.items()} for row in rows]  # NaN -> null
        total = self.run.config.get("train", {}).get("epochs")
        state = run_state(self.path, len(clean), total)
        return {"epochs": clean, "total_epochs": total, "finished": state["state"] == "finished", **state}

    def waiting(self) -> str | None:
        """Why there is no network to look at yet (None when there is one): the run's state in words."""
        from cnnlab.lab.runstate import run_state

        try:
            self.run.weights_path()
            return None
        except CnnlabError:
            return run_state(self.path, 0, self.run.config.get("train", {}).get("epochs"))["message"]


class PretrainedTarget:
    """An ImageNet network (squeezenet1_1 or vgg16) with its weights; photos as input."""

    kind = "pretrained"
    input_shape = (224, 224, 3)
    max_test = None

    def __init__(self, name: str, *, weights=None, download: bool = True, device: str = "cpu") -> None:
        from cnnlab.models.pretrained import imagenet_classes, load_pretrained
        from cnnlab.train.device import resolve_device

        self.name = name
        self.model_name = name
        self.model = load_pretrained(name, weights=weights, progress=False, download=download).to(resolve_device(device))
        self.classes = imagenet_classes()
        self.lock = threading.RLock()
        self.featurevis_cache: dict = {}
        self.slow_lock = threading.Lock()

    def from_pil(self, img) -> Input:
        from cnnlab.models.pretrained import IMAGENET_MEAN, IMAGENET_STD, preprocess

        x = preprocess(img)  # (3, 224, 224): the resize, crop and normalisation of `cnnlab classify`
        mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
        shown = ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        return Input(shown, x[None].contiguous(), note="resized to 256 on the short side, centre 224x224 cropped")

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        from cnnlab.models.pretrained import IMAGENET_MEAN, IMAGENET_STD

        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255  # (3, H, W)
        return ((x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1))[None]

    def history(self) -> dict:
        return {"epochs": [], "total_epochs": None, "finished": True, "state": "pretrained", "writer": None,
                "message": "",
                "note": f"{self.name} was trained elsewhere (ImageNet); the lab has no training curves for it"}
