"""Compute floors for the speed targets: measured rates of this CPU, and counted FLOPs.

Rates are measured here, now: a oneDNN convolution (3×3, 256 → 256 channels, 56×56,
batch 8, channels_last) and ``torch.mm`` on 4096² matrices, each in fp32 and bf16. FLOPs
are counted, not guessed: ``torch.utils.flop_counter.FlopCounterMode`` records one training
step (forward, loss, backward) of a recipe's model at its batch size, and one forward
pass for inference; an epoch is that times its steps, plus the test set's evaluation.
The floor is FLOPs / the best measured rate of the arithmetic ``--precision auto`` picks here
(bf16 where the CPU has native bf16, fp32 elsewhere: emulated bf16 runs at 0.3-2.4 GFLOP/s on an
AVX2 CPU and is never timed): no run can be faster on this CPU.

    python benchmarks/bench_floor.py                       # rates, and the floors of the recipes
    python benchmarks/bench_floor.py --recipe mnist-fast --quick
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode


def _rate(fn, flops: float, reps: int) -> float:
    fn()  # warm-up: oneDNN primitive creation, page faults
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return flops / statistics.median(times)


def floor_precision() -> str:
    """The arithmetic the floors count in: what ``--precision auto`` picks on this CPU."""
    from cnnlab.precision import resolve_precision

    return resolve_precision("auto", "cpu")


def measure_rates(reps: int = 5, quick: bool = False) -> dict[str, float]:
    """FLOP/s of a 3×3 convolution and of a square matmul, in fp32 and (where the CPU computes
    it natively) bf16."""
    n, c, hw, m = (2, 64, 28, 1024) if quick else (8, 256, 56, 4096)
    rates = {}
    kinds = (("fp32", torch.float32), ("bf16", torch.bfloat16))
    for name, dtype in kinds if floor_precision() == "bf16" else kinds[:1]:
        x = torch.randn(n, c, hw, hw).to(dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(c, c, 3, 3).to(dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            rates[f"conv {name}"] = _rate(lambda x=x, w=w: F.conv2d(x, w, padding=1), 2 * n * c * c * 9 * hw * hw, reps)
        a, b = torch.randn(m, m).to(dtype), torch.randn(m, m).to(dtype)
        rates[f"mm {name}"] = _rate(lambda a=a, b=b: torch.mm(a, b), 2 * m**3, reps)
    return rates


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def step_flops(model: torch.nn.Module, x: torch.Tensor, num_classes: int) -> int:
    """FLOPs of one training step: forward, cross-entropy, backward (the optimiser's few
    element-wise FLOPs per parameter are not matmuls or convolutions and are left out)."""
    y = torch.arange(len(x)) % num_classes

    def step():
        F.cross_entropy(model(x), y).backward()
    return count_flops(step)


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return count_flops(lambda: model(x))


def recipe_flops(name: str) -> dict[str, float]:
    """Counted FLOPs of a whole recipe run: its epochs of training plus its test evaluation."""
    from cnnlab.data.registry import get_spec
    from cnnlab.models import build
    from cnnlab.train.config import get_recipe

    recipe = get_recipe(name)
    spec = get_spec(recipe.data)
    shape, classes, (train_n, test_n) = spec.shape, len(spec.classes), spec.counts
    train_n = min(train_n, recipe.train_size or train_n)
    cfg = recipe.train
    model = build(recipe.model, input_shape=shape, num_classes=classes)
    h, w, c = shape
    batch = torch.zeros(cfg.batch_size, c, h, w)
    steps = cfg.steps_per_epoch or math.ceil(train_n / cfg.batch_size)
    train = step_flops(model, batch, classes) * steps * cfg.epochs
    model.eval()
    per_image = forward_flops(model, batch[:1])
    evaluation = per_image * test_n * (2 if cfg.eval_flip else 1) * (3 if cfg.eval_shift else 1)
    return {"train": train, "eval": evaluation, "total": train + evaluation, "epochs": cfg.epochs}


def inference_split(name: str = "vgg16", batch: int = 8) -> dict[str, float]:
    """A forward pass's FLOPs in convolutions and in the rest (the classifier's GEMMs)."""
    from cnnlab.models import build

    with torch.device("meta"):
        model = build(name).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(batch, 3, 224, 224, device="meta"))
    ops = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    conv = sum(n for op, n in ops.items() if "convolution" in op)
    return {"conv": conv, "gemm": sum(ops.values()) - conv}


def classifier_rate(name: str = "vgg16", batch: int = 8, reps: int = 5, quick: bool = False,
                    dtype: torch.dtype = torch.bfloat16) -> float:
    """Measured FLOP/s of the net's own Linear layers in ``dtype`` at this batch: at batch 8 these
    GEMMs read every weight once for few rows, so their rate is the memory's, far below a
    square GEMM's (VGG-16's 124 M classifier weights are 248 MB in bf16)."""
    from torch import nn

    from cnnlab.models import build

    layers = [m for m in build(name).modules() if isinstance(m, nn.Linear)]
    if quick:
        layers = [nn.Linear(m.in_features // 64, m.out_features // 64) for m in layers]
    layers = [m.to(dtype) for m in layers]
    xs = [torch.randn(batch, m.in_features).to(dtype) for m in layers]
    flops = sum(2 * batch * m.in_features * m.out_features for m in layers)

    def run():
        with torch.inference_mode():
            for m, x in zip(layers, xs, strict=True):
                m(x)
    return _rate(run, flops, reps)


def inference_floor(split: dict[str, float], conv_rate: float, gemm_rate: float) -> float:
    """Seconds a forward pass needs at least: its convolutions at the best bf16 rate, its
    classifier at the rate measured for the classifier's own shapes."""
    return split["conv"] / conv_rate + split["gemm"] / gemm_rate


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", action="append", help="recipe (repeatable; default: the speed targets' recipes)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small probe shapes: a smoke test, not a measurement")
    args = ap.parse_args(argv)
    from cnnlab.precision import cpu_has_native_bf16
    from cnnlab.train.config import RECIPES

    rates = measure_rates(args.reps, args.quick)
    precision = floor_precision()
    best_bf16 = max(rates[f"conv {precision}"], rates[f"mm {precision}"])  # the best rate of that arithmetic
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native bf16: {cpu_has_native_bf16()}, "
          f"floors in {precision}" + (" (quick probe shapes)" if args.quick else ""))
    for key, rate in rates.items():
        print(f"  {key:<10} {rate / 1e9:8.1f} GFLOP/s")
    names = args.recipe or [r for r in ("mnist-fast", "mnist-995", "cifar-fast", "cifar-94", "tutorial-mnist-cnn")
                            if r in RECIPES]
    out = {"rates": rates, "best_bf16": best_bf16, "precision": precision, "recipes": {}, "inference": {}}
    for name in names:
        flops = recipe_flops(name)
        out["recipes"][name] = flops
        print(f"  {name:<20} {flops['total'] / 1e12:8.2f} TFLOP ({flops['epochs']} epoch(s) + test), "
              f"{precision} floor {flops['total'] / best_bf16:7.2f} s")
    split = inference_split("vgg16", 8)
    split["gemm rate"] = classifier_rate("vgg16", 8, args.reps, args.quick,
                                         torch.bfloat16 if precision == "bf16" else torch.float32)
    out["inference"]["vgg16 batch 8"] = split
    floor = inference_floor(split, best_bf16, split["gemm rate"])
    print(f"  {'vgg16 batch 8':<20} {split['conv'] / 1e9:8.1f} GFLOP in convolutions, {split['gemm'] / 1e9:.1f} in "
          f"the classifier at {split['gemm rate'] / 1e9:.0f} GFLOP/s (measured, {precision}, batch 8); "
          f"{precision} floor {8 / floor:7.1f} img/s")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
