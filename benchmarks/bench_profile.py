"""Where a bf16 training step spends its time, beside its compute floor (issue 18, part 1).

Profiles ``fit``'s own steps (training_view, channels_last, autocast, Adam; freed memory kept
as the CLI keeps it) with ``torch.profiler`` and prints each op by input shape, its
milliseconds per step, and the step's floor: its counted FLOPs at the bf16 convolution rate
measured in the same run (bench_floor).

    python benchmarks/bench_profile.py [--model mnist-cnn] [--batch 256] [--steps 20] [--rows 15]

The profiler adds its own cost to every op it records, which inflates small, frequent ops: it
put mnist-cnn's max-pools at ~40% of the step, but replacing them with a strided slice saved
only 1.5 ms of 17.4 (BENCHMARKS.md, third round). So the script first prints the step timed
without the profiler, split into forward, backward and optimiser, with each layer's forward.
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
    split = wall_split(build(args.model), x[: args.batch], y[: args.batch], steps=args.steps)
    print(f"{args.model}, batch {args.batch}, no profiler: forward {split['forward']:.2f} ms, backward "
          f"{split['backward']:.2f} ms, optimiser {split['optimizer']:.2f} ms per step")
    print("forward by layer: " + ", ".join(f"{name} {ms:.2f}" for name, ms in split["layers"]))
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


def wall_split(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 20) -> dict:
    """Milliseconds per training step of ``x, y`` spent in forward, backward and the optimiser,
    and in each top-level layer's forward, by the clock alone (no profiler): fit's own setup
    (training_view, channels_last, autocast as --precision auto picks it, Adam as
    make_optimizer builds it), after three untimed steps."""
    import torch.nn.functional as F

    from cnnlab.precision import autocast
    from cnnlab.train.optim import make_optimizer
    from cnnlab.train.view import training_view

    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    net = training_view(model).to(memory_format=torch.channels_last)
    opt = make_optimizer("adam", net.parameters())
    x = x.contiguous(memory_format=torch.channels_last)
    total = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    layers = list(net.named_children()) if isinstance(net, torch.nn.Sequential) else [("model", net)]
    per_layer = [0.0] * len(layers)
    for i in range(steps + 3):
        t0 = time.perf_counter()
        with autocast(x.device):
            h = x
            for k, (_, layer) in enumerate(layers):
                t = time.perf_counter()
                h = layer(h)
                per_layer[k] += (time.perf_counter() - t) * (i >= 3)
            loss = F.cross_entropy(h.float(), y)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i >= 3:
            for key, dt in zip(total, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                total[key] += dt
    out = {k: v / steps * 1e3 for k, v in total.items()}
    out["layers"] = [(f"{name}:{type(layer).__name__}", t / steps * 1e3)
                     for (name, layer), t in zip(layers, per_layer, strict=True)]
    return out


if __name__ == "__main__":
    main()
