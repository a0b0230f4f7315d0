"""Shared fixtures: where ../shared is, and skips that say why when it is absent."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shared() -> Path | None:
    env = os.environ.get("CNNLAB_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared")
    for path in candidates:
        if (path / "README.md").is_file():
            return path
    return None


SHARED = _shared()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if SHARED is None:
        pytest.skip("../shared is absent (set CNNLAB_SHARED to the shared data folder)")
    return SHARED


@pytest.fixture(scope="session")
def mnist_dir(shared_dir: Path) -> Path:
    path = shared_dir / "datasets" / "mnist"
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found in {path}")
    return path


@pytest.fixture(scope="session")
def cifar10_dir(shared_dir: Path) -> Path:
    path = shared_dir / "datasets" / "cifar10"
    if not (path / "cifar-10-batches-bin" / "test_batch.bin").is_file():
        pytest.skip(f"real CIFAR-10 not found in {path}")
    return path


@pytest.fixture(scope="session")
def squeeze_weights(shared_dir: Path) -> Path:
    """torchvision's ImageNet SqueezeNet 1.1 state dict, from shared/models."""
    path = shared_dir / "models" / "squeezenet1_1-imagenet.pth"
    if not path.is_file():
        pytest.skip(f"SqueezeNet weights not found at {path}")
    return path


@pytest.fixture(scope="session")
def datasets_root(shared_dir: Path) -> Path:
    return shared_dir / "datasets"


@pytest.fixture
def offline_data_env(tmp_path, monkeypatch):
    """A private user cache and system folder, no $CNNLAB_DATA, and no network."""
    from cnnlab.data import sources

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    monkeypatch.setattr(sources, "SYSTEM_DIR", tmp_path / "system")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known (network disabled in tests)")

    monkeypatch.setattr("urllib.request.urlopen", offline)


def _full_and_resumed(model_fn, x, y, cfg, *, validation=None, interrupt_at: int = 2):
    """Train ``cfg`` straight through, and again interrupted after epoch ``interrupt_at`` and
    resumed from its saved state; returns (full model, resumed model, resumed history)."""
    import torch

    from cnnlab.train.loop import fit

    torch.manual_seed(0)
    full = model_fn()
    fit(full, x, y, config=cfg, validation=validation)
    saved = {}

    def interrupt(end) -> None:
        if end.epoch == interrupt_at:
            saved.update(end.state())
            raise KeyboardInterrupt

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(model_fn(), x, y, config=cfg, validation=validation, callbacks=[interrupt])
    torch.manual_seed(123)  # a fresh process would not share the RNG state; resume restores it
    resumed = model_fn()
    history = fit(resumed, x, y, config=cfg, validation=validation, resume=saved)
    return full, resumed, history


@pytest.fixture
def full_and_resumed():
    """The interrupt-and-resume experiment, shared by the CPU and CUDA training tests."""
    return _full_and_resumed


@pytest.fixture(scope="session")
def tiny_mnist_run(tmp_path_factory, datasets_root):
    """A real run directory: mnist-cnn trained by train_run for 1 epoch on 300 MNIST images
    (50 held out for validation). Shared by the lab's API and browser tests."""
    from cnnlab.runs.experiment import RunConfig, train_run
    from cnnlab.train.config import TrainConfig

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_DATA", str(datasets_root))
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
        cfg = RunConfig(data="mnist", model="mnist-cnn", train_size=300, val_size=50,
                        train=TrainConfig(epochs=1, batch_size=64, verbose=0, seed=0))
        path, _ = train_run(cfg, tmp_path_factory.mktemp("runs") / "tiny", download=False)
    return path


def _shapes_images(root: Path) -> Path:
    """A folder dataset of 10x10 grey PNGs in three classes: vertical bars, dots and rings."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(["bar", "dot", "ring"]):
        (root / name).mkdir(parents=True)
        for i in range(15):
            img = rng.integers(0, 60, (10, 10), dtype=np.uint8)
            if c == 0:
                img[:, 4:6] = 255
            elif c == 1:
                img[4:6, 4:6] = 255
            else:
                img[2, 2:8] = img[7, 2:8] = img[2:8, 2] = img[2:8, 7] = 255
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def tiny_run_env(tmp_path_factory) -> dict[str, Path]:
    """{"run": a run directory, "data": its folder dataset}: trained for two epochs by `cnnlab
    train` on 45 10x10 images in three classes (conv, pool, conv, dense), the way a user makes
    one. Trained once per session for every test of the commands that read a run; tests may
    add files to the run but must not break it."""
    from cnnlab.cli import main

    base = tmp_path_factory.mktemp("tiny-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(base / "cache"))
        data = _shapes_images(base / "shapes")
        run = base / "run"
        spec = "conv4k3-relu,maxpool2,conv6k3-relu,flatten,dense8-relu,dense3"
        rc = main(["train", "--data", f"folder:{data}", "--model", spec, "--epochs", "2", "--batch-size", "8",
                   "--out", str(run), "--quiet", "--offline", "--no-report"])
        assert rc == 0
    return {"run": run, "data": data}


@pytest.fixture(scope="module")
def run_env(tiny_run_env, tmp_path_factory):
    """``tiny_run_env`` plus "base", a scratch folder per test module, with the user cache
    (XDG_CACHE_HOME) pointed inside it for the whole module."""
    base = tmp_path_factory.mktemp("run-env")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(base / "cache"))
        yield {"base": base, **tiny_run_env}


@pytest.fixture(scope="session")
def tiny_run(tiny_run_env) -> Path:
    """The run directory of ``tiny_run_env``."""
    return tiny_run_env["run"]


@pytest.fixture
def mount_tmpfs(tmp_path):
    """``mount_tmpfs(kib)``: a new folder on a tmpfs of that size, unmounted after the test.

    For full-disk tests; needs root on Linux (CI runs as root) and skips with the reason elsewhere.
    """
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root on Linux (CI runs as root)")
    mounted = []

    def mount(kib: int) -> Path:
        where = tmp_path / f"tmpfs-{len(mounted)}"
        where.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", f"tmpfs-{uuid.uuid4().hex[:8]}",
                               str(where)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=True)


def make_photos(root):
    """An image folder at ``root``: 3 classes (cat, dog, owl) x 10 random RGB 12x12 PNGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "owl"):
        (root / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def make_colour_folder(root):
    """An image folder at ``root``: classes k0, k1, k2 x 12 random 10x10 PNGs, each class
    brighter in its own colour channel (so a tiny net learns it in an epoch)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(3):
        (root / f"k{c}").mkdir(parents=True)
        for i in range(12):
            img = rng.integers(0, 120, (10, 10, 3), dtype=np.uint8)
            img[..., c] += 120
            Image.fromarray(img).save(root / f"k{c}" / f"{i}.png")
    return root


@pytest.fixture()
def colour_folder(tmp_path):
    """``make_colour_folder`` in a fresh folder."""
    return make_colour_folder(tmp_path / "shapes")


@pytest.fixture(scope="module")
def module_colour_folder(tmp_path_factory):
    """``make_colour_folder``, made once for a test module."""
    return make_colour_folder(tmp_path_factory.mktemp("colours") / "shapes")


@pytest.fixture()
def photos(tmp_path):
    """An image folder: 3 classes (cat, dog, owl) x 10 random RGB 12x12 PNGs."""
    return make_photos(tmp_path / "photos")


@pytest.fixture(scope="module")
def module_photos(tmp_path_factory):
    """The ``photos`` folder, made once for a test module (for a run trained once and only read)."""
    return make_photos(tmp_path_factory.mktemp("module") / "photos")


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A command run in-process may set torch's thread count for its process (`cnnlab lab --threads`,
    default 1): later tests must not inherit it (a different thread count changes float sums'
    order, and slows everything after it)."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)
