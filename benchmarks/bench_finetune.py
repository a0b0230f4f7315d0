"""Fine-tuning SqueezeNet 1.1 on 5,000 CIFAR-10 photos vs training from scratch, same budget.

    python benchmarks/bench_finetune.py [--size 128] [--epochs 6] [--seeds 0 1 2]
                                        [--per-class 500] [--test 10000] [--budget 300]

Target (issue 15): >= 87% on the 10,000 official test images within 5 minutes of wall time,
evaluation included, on a 2-core CPU. Three runs side by side on the same 500 images per
class (the first 500 of each class in the official order):

- fine-tune: ImageNet SqueezeNet 1.1 (../shared/models/squeezenet1_1-imagenet.pth or
  --weights), a new 10-class head, ImageNet mean/std, cnnlab's fine-tune recipe
  (cnnlab.train.finetune.FINETUNE_DEFAULTS: one frozen epoch, then discriminative rates);
- scratch: the same network and recipe from random weights;
- cifar-fast: cnnlab's best from-scratch CIFAR-10 recipe (cnnlab.train.config.RECIPES) on
  the same 5,000 images at 32x32, its epochs cut to the time the fine-tune took.

The photos are upscaled inside the network (a bilinear ``nn.Upsample`` in front), so
augmentation runs at 32x32 and nothing 16x larger is held in memory. Prints accuracy and
wall seconds per run, the median over seeds, and whether the target was met.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cnnlab.data import load
from cnnlab.data.transforms import to_tensor
from cnnlab.models import build
from cnnlab.models.pretrained import IMAGENET_MEAN, IMAGENET_STD
from cnnlab.models.transfer import pretrained_model
from cnnlab.train.config import RECIPES, TrainConfig, with_overrides
from cnnlab.train.finetune import FINETUNE_DEFAULTS
from cnnlab.train.loop import fit
from cnnlab.train.validation import evaluate_loss_accuracy

SHARED = Path(os.environ.get("CNNLAB_SHARED") or Path(__file__).resolve().parents[2] / "shared")
SHARED_WEIGHTS = SHARED / "models" / "squeezenet1_1-imagenet.pth"


def subset(ds, per_class: int):
    idx = np.concatenate([np.flatnonzero(ds.train.labels == c)[:per_class] for c in range(10)])
    return ds.train.images[np.sort(idx)], ds.train.labels[np.sort(idx)]


def squeezenet(size: int, *, weights: str | None) -> tuple[nn.Module, nn.Module]:
    net = (pretrained_model("squeezenet1_1", num_classes=10, input_shape=(size, size, 3), weights=weights)
           if weights else build("squeezenet1_1", input_shape=(size, size, 3), num_classes=10))
    up = nn.Upsample(size=(size, size), mode="bilinear", align_corners=False)
    return nn.Sequential(up, net), net.classifier[1]


def run_squeezenet(x, y, xt, yt, *, size: int, epochs: int, seed: int, weights: str | None,
                   flip: bool = False) -> tuple[float, float]:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model, head = squeezenet(size, weights=weights)
    cfg = with_overrides(TrainConfig(verbose=0, batch_size=64, seed=seed), **{**FINETUNE_DEFAULTS, "epochs": epochs})
    fit(model, x, y, config=cfg, head=head)
    _, acc = evaluate_loss_accuracy(model, xt, yt, batch_size=256, flip=flip, precision=cfg.precision)
    return acc, time.perf_counter() - t0


def run_cifar_fast(images, labels, test, *, seconds: float, seed: int) -> tuple[float, float]:
    """cifar-fast's recipe on the same images, epochs cut so its training fits the time given."""
    from cnnlab.data import channel_stats

    t0 = time.perf_counter()
    mean, std = (list(map(float, v)) for v in channel_stats(images))
    x, xt = to_tensor(images, mean=mean, std=std), to_tensor(test.images, mean=mean, std=std)
    recipe = RECIPES["cifar-fast"].train
    torch.manual_seed(seed)
    model = build("cifar-fast", input_shape=(32, 32, 3), num_classes=10)
    probe = time.perf_counter()
    fit(model, x, labels, config=with_overrides(recipe, epochs=1, verbose=0, seed=seed))
    per_epoch = time.perf_counter() - probe
    epochs = max(1, int((seconds - (time.perf_counter() - t0)) / per_epoch))
    torch.manual_seed(seed)
    model = build("cifar-fast", input_shape=(32, 32, 3), num_classes=10)
    fit(model, x, labels, config=with_overrides(recipe, epochs=epochs, verbose=0, seed=seed))
    _, acc = evaluate_loss_accuracy(model, xt, torch.as_tensor(test.labels), flip=True)
    return acc, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128, help="input size the photos are upscaled to")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--per-class", type=int, default=500)
    p.add_argument("--test", type=int, default=10_000, help="test images (the first N of the official 10,000)")
    p.add_argument("--weights", default=str(SHARED_WEIGHTS))
    p.add_argument("--budget", type=float, default=300.0, help="seconds, evaluation included")
    p.add_argument("--runs", nargs="+", choices=("fine-tune", "scratch", "cifar-fast"),
                   default=["fine-tune", "scratch", "cifar-fast"], help="which of the three to run")
    p.add_argument("--flip", action="store_true", help="evaluate each test image with its mirror (TTA)")
    args = p.parse_args()
    ds = load("cifar10", progress=False)
    images, labels = subset(ds, args.per_class)
    test = type(ds.test)(ds.test.images[: args.test], ds.test.labels[: args.test])
    x = to_tensor(images, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    xt = to_tensor(test.images, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    yt = torch.as_tensor(test.labels)
    results = {name: [] for name in args.runs}
    for seed in args.seeds:
        tuned = None
        for name in args.runs:
            if name == "cifar-fast":  # the same wall time as the fine-tune took (or the budget)
                r = run_cifar_fast(images, labels, test, seconds=tuned[1] if tuned else args.budget, seed=seed)
            else:
                r = run_squeezenet(x, labels, xt, yt, size=args.size, epochs=args.epochs, seed=seed, flip=args.flip,
                                   weights=args.weights if name == "fine-tune" else None)
                tuned = r if name == "fine-tune" else tuned
            results[name].append(r)
            print(f"seed {seed} {name:>10}: {r[0]:.2%} in {r[1]:.0f} s", flush=True)
    print(f"{len(images)} training images, {len(test)} test images, {args.size}x{args.size}, {args.epochs} epochs")
    for name, rs in results.items():
        acc, sec = statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)
        print(f"median {name:>10}: {acc:.2%} in {sec:.0f} s")
    if "fine-tune" not in results:
        return
    acc, sec = (statistics.median(r[i] for r in results["fine-tune"]) for i in (0, 1))
    print(f"target >= 87% in <= {args.budget:.0f} s: {'met' if acc >= 0.87 and sec <= args.budget else 'NOT met'}")


if __name__ == "__main__":
    main()
