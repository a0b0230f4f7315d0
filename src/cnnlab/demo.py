"""The tutorials' whole story in one call: filters, a trained CNN, its evaluation, the report.

1. Classic kernels on the Grace Hopper portrait: random filters (which find nothing)
   beside edge detectors and the tutorials' brown colour filter.
2. A CNN (the tutorials' mnist-cnn) trained on MNIST, found through the dataset search
   order; with no MNIST on disk and no network, scikit-learn's bundled 8×8 digits stand in.
3. Its evaluation, learned filters and activations, all in the run's HTML report.

Offline, in well under 3 minutes on 2 CPU cores. ``log`` receives one line per step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.files import save_figure
from cnnlab.runs.experiment import RunConfig
from cnnlab.train.config import TrainConfig

EDGE_KERNELS = ("sobel-x", "sobel-y", "laplacian-8", "edge-horizontal", "edge-vertical", "brown")

# mnist-cnn as the tutorial trains it (Adam, batch 256), for 2 epochs: ~98.5% on MNIST.
MNIST_RUN = RunConfig(data="mnist", model="mnist-cnn", train=TrainConfig(epochs=2, batch_size=256))
# The fallback is 1,438 training images of 8×8: more, smaller epochs.
DIGITS_RUN = RunConfig(data="digits", model="mnist-cnn", train=TrainConfig(epochs=30, batch_size=64))


@dataclass(frozen=True)
class DemoResult:
    random_gallery: Path
    edge_gallery: Path
    run_dir: Path
    report: Path
    data: str
    test_accuracy: float


def filter_tour(out: Path, *, seed: int = 0) -> tuple[Path, Path]:
    """Save two galleries of the Grace Hopper portrait: 9 random kernels, then edge kernels."""
    from cnnlab.scratch.images import apply_kernel, gallery, grace_hopper
    from cnnlab.scratch.kernels import get_kernel, random_kernels

    image = grace_hopper()  # (600, 512, 3) in [0, 1]
    randoms = {f"random {i + 1}": apply_kernel(image, k) for i, k in enumerate(random_kernels(9, channels=3, seed=seed))}
    edges = {name: apply_kernel(image, get_kernel(name)) for name in EDGE_KERNELS}
    paths = (out / "filters-random.png", out / "filters-edges.png")
    for path, maps in zip(paths, (randoms, edges), strict=True):
        fig = gallery(image, maps, image_title="Grace Hopper", panel_inches=2.2)
        save_figure(fig, path, dpi=70)
    return paths


def choose_data(log: Callable[[str], None]) -> RunConfig:
    """MNIST when it can be found (or downloaded); else the bundled digits, said plainly."""
    from cnnlab.data import load

    try:
        load("mnist", progress=False)
        return MNIST_RUN
    except CnnlabError as exc:
        log(f"MNIST is not available ({str(exc).split(';')[0]}); using scikit-learn's bundled 8x8 digits instead")
        return DIGITS_RUN


def run_demo(out="runs/demo", *, epochs: int | None = None, log: Callable[[str], None] = lambda line: None,
             verbose: int = 1, device: str = "auto") -> DemoResult:
    """Run the whole story into ``out`` (replacing an earlier demo there) and return its paths."""
    from cnnlab.reporting import report_run
    from cnnlab.runs.directory import load_run
    from cnnlab.runs.experiment import train_run

    cfg = choose_data(log)
    train = replace(cfg.train, verbose=verbose, device=device, **({"epochs": epochs} if epochs is not None else {}))
    cfg = replace(cfg, train=train)  # validated before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log("1/3 filters: random kernels vs edge detectors on the Grace Hopper portrait")
    random_gallery, edge_gallery = filter_tour(out)
    log(f"    wrote {random_gallery} and {edge_gallery}")
    log(f"2/3 training {cfg.model} on {cfg.data} for {train.epochs} epochs (batch {train.batch_size}, {train.optimizer})")
    run_dir, _ = train_run(cfg, out / "run", overwrite=True)
    log("3/3 evaluating: metrics, confusion, top losses, learned filters, activations -> report")
    report = report_run(run_dir)
    accuracy = load_run(run_dir).metrics["test_accuracy"]
    return DemoResult(random_gallery, edge_gallery, run_dir, report, cfg.data, float(accuracy))
