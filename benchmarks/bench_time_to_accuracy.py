"""Target 2 of the speed issue: time to a test accuracy with cnnlab's recipes.

For each recipe (cnnlab.train.config) and seed: the data is loaded first (not timed), then the
clock runs from the start of training to the end of the final evaluation on the 10,000
official test images. Prints each run, then the median time and the worst accuracy.

    python benchmarks/bench_time_to_accuracy.py --recipe mnist-fast --seeds 0 1 2
    python benchmarks/bench_time_to_accuracy.py --recipe cifar-fast --seeds 0
    python benchmarks/bench_time_to_accuracy.py --device cuda --set batch_size=512 --set precision=fp32

On a GPU, one short untimed run first creates the CUDA context and cuDNN handles and
loads the kernels (as the GPU speed records do); the timed runs follow in the same process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("CNNLAB_SHARED", HERE.parent.parent / "shared"))
# Issue 18's CPU targets (benchmarks/targets.py prints them beside the measured floors).
TARGETS = {"mnist-fast": (0.990, 2.5), "mnist-995": (0.995, 20.0), "cifar-fast": (0.90, 240.0), "cifar-94": (0.94, 1800.0)}


def parse_overrides(pairs: list[str]) -> dict:
    """``["batch_size=512", "precision=fp32", "betas=[0.8, 0.9]"]`` -> TrainConfig overrides.

    Values are read as TOML values (bare words as strings) and checked by ``with_overrides``.
    """
    from cnnlab.errors import CnnlabError
    from cnnlab.runs.config_file import tomllib  # tomli on Python 3.10
    from cnnlab.train.config import TrainConfig, with_overrides

    out = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        try:
            out[key] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = text
    try:
        with_overrides(TrainConfig(), **out)
    except CnnlabError as exc:
        raise SystemExit(f"--set: {exc}") from None
    return out


def time_recipe(name: str, seed: int, root: str, device: str, overrides: dict | None = None) -> tuple[float, float]:
    import torch

    from cnnlab.data import channel_stats, load
    from cnnlab.data.transforms import to_tensor
    from cnnlab.models import build
    from cnnlab.train.config import get_recipe, with_overrides
    from cnnlab.train.loop import fit
    from cnnlab.train.validation import evaluate_loss_accuracy
    recipe = get_recipe(name)
    ds = load(recipe.data, root=root, progress=False)
    mean = std = None
    if recipe.normalize == "featurewise":
        mean, std = channel_stats(ds.train.images)
    x, y = to_tensor(ds.train.images, mean=mean, std=std), torch.as_tensor(ds.train.labels)
    xt, yt = to_tensor(ds.test.images, mean=mean, std=std), torch.as_tensor(ds.test.labels)
    torch.manual_seed(seed)
    model = build(recipe.model, input_shape=ds.input_shape, num_classes=ds.num_classes)
    cfg = with_overrides(recipe.train, seed=seed, verbose=0, device=device, **(overrides or {}))
    # Untimed: torch.optim imports its compiler stack on first use (~2 s once per process).
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    if device != "cpu":
        x, y, xt, yt = (t.to(device) for t in (x, y, xt, yt))
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fit(model, x, y, config=cfg)
    _, acc = evaluate_loss_accuracy(model, xt, yt, batch_size=2000 if device == "cpu" else 10_000,
                                    flip=cfg.eval_flip, shift=cfg.eval_shift, precision=cfg.precision)
    if device != "cpu":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, acc


def main(argv: list[str] | None = None) -> dict:
    """Print each run and each recipe's summary; return {recipe: {"runs": [(s, acc)], "median_s",
    "median_acc", "worst_acc"}}."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", action="append", help="recipe name (repeatable; default mnist-fast)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--root", default=str(SHARED / "datasets"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a TrainConfig field of the recipe (repeatable), e.g. batch_size=512")
    ap.add_argument("--steps", type=int, default=None, help="steps per epoch (a smoke test: --steps 2)")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time its algorithms per shape")
    args = ap.parse_args(argv)
    import torch

    from cnnlab.fast.memory import keep_freed_memory

    keep_freed_memory()  # as `cnnlab train` does; the library leaves malloc alone unless asked

    overrides = parse_overrides(args.set)
    if args.steps:
        overrides["steps_per_epoch"] = args.steps
    where = args.device if args.device == "cpu" else torch.cuda.get_device_name(args.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {where}"
          + (f", overrides {overrides}" if overrides else ""))
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    figures = {}
    for name in args.recipe or ["mnist-fast"]:
        if args.device != "cpu":  # untimed: CUDA context, cuDNN handles, kernel loading
            time_recipe(name, 0, args.root, args.device, {**overrides, "steps_per_epoch": 20, "epochs": 1})
        runs = []
        for seed in args.seeds:
            seconds, acc = time_recipe(name, seed, args.root, args.device, overrides)
            runs.append((seconds, acc))
            print(f"{name} seed {seed}: {seconds:.2f}s, test accuracy {acc:.4f}", flush=True)
        med = statistics.median(s for s, _ in runs)
        worst = min(a for _, a in runs)
        target = TARGETS.get(name)
        verdict = ""
        if target:
            ok = statistics.median(a for _, a in runs) >= target[0] and med <= target[1]
            verdict = f"  target {target[0]:.1%} in <= {target[1]:g} s: {'met' if ok else 'NOT met'}"
        print(f"{name}: median {med:.2f}s, median accuracy {statistics.median(a for _, a in runs):.4f}, "
              f"worst {worst:.4f}{verdict}")
        figures[name] = {"runs": runs, "median_s": med, "median_acc": statistics.median(a for _, a in runs),
                         "worst_acc": worst}
    return figures


if __name__ == "__main__":
    main()
