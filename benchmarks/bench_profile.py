"""Where a bf16 training step spends its time, beside its compute floor (issue 18, part 1).

Profiles ``fit``'s own steps (training_view, channels_last, autocast, Adam; freed memory kept
as the CLI keeps it) with ``torch.profiler`` and prints each op by input shape, its
milliseconds per step, and the step's floor: its counted FLOPs at the bf16 convolution rate
measured in the same run (bench_floor).

    python benchmarks/bench_profile.py [--model mnist-cnn] [--batch 256] [--steps 20] [--rows 15]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("CNNLAB_SHARED", HERE.parent.parent / "shared"))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mnist-cnn", help="a model trained on MNIST (mnist-cnn, mnist-fast, ...)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rows", type=int, default=15)
    ap.add_argument("--root", default=str(SHARED / "datasets"))
    args = ap.parse_args(argv)

    import bench_floor
    from torch.profiler import ProfilerActivity, profile

    from cnnlab.data import load
    from cnnlab.data.transforms import to_tensor
    from cnnlab.models import build
    from cnnlab.train.loop import fit
    from cnnlab.train.memory import keep_freed_memory

    keep_freed_memory()
    ds = load("mnist", root=args.root, progress=False)
    n = args.batch * args.steps
    x, y = to_tensor(ds.train.images[:n]), torch.as_tensor(ds.train.labels[:n])
    torch.manual_seed(0)
    model = build(args.model)
    settings = {"epochs": 1, "batch_size": args.batch, "optimizer": "adam", "verbose": 0}
    fit(model, x, y, **settings)  # warm-up: oneDNN primitives, allocator, optimiser state
    t0 = time.perf_counter()
    fit(model, x, y, **settings)
    per_step = (time.perf_counter() - t0) / args.steps
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fit(model, x, y, **settings)
    rate = bench_floor.measure_rates()["conv bf16"]
    flops = bench_floor.step_flops(build(args.model), x[: args.batch], 10)
    print(f"{args.model}, batch {args.batch}: {per_step * 1e3:.1f} ms per step unprofiled; "
          f"{flops / 1e9:.2f} GFLOP per step, floor {flops / rate * 1e3:.1f} ms at {rate / 1e9:.0f} GFLOP/s (bf16 conv)")
    rows = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    print(f"{'op':<42} {'ms/step':>8} {'share':>6}  input shapes")
    for e in rows[: args.rows]:
        shapes = ", ".join(str(s) for s in e.input_shapes if s)[:70]
        print(f"{e.key[:42]:<42} {e.self_cpu_time_total / 1e3 / args.steps:>8.2f} "
              f"{e.self_cpu_time_total / total:>6.1%}  {shapes}")
    return {"ms_per_step": per_step * 1e3, "floor_ms": flops / rate * 1e3}


if __name__ == "__main__":
    main()
