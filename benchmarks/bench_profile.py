"""Where a bf16 training step spends its time, beside its floors (issue 18, part 1).

Runs ``fit``'s own step (training_view, channels_last, autocast, Adam; freed memory kept as
the CLI keeps it) and prints:

- the step by the clock alone, split into forward, backward and optimiser, and each layer's
  forward (``wall_split``);
- every ATen op by the clock (``op_clock``: a dispatch mode reads ``perf_counter`` around each
  op, which on the CPU runs synchronously), with its own floor: its counted FLOPs at the bf16
  convolution rate, or the bytes it reads and writes at the memory copy rate, whichever is
  larger, both measured in the same run. The sum of those floors is what this CPU could do
  with these kernels' work, op by op; the counted FLOPs alone give the step's compute floor.

    python benchmarks/bench_profile.py [--model mnist-cnn] [--batch 256] [--steps 20] [--rows 15]

``torch.profiler`` was used here before, but its per-op cost inflates small, frequent ops: it
put mnist-cnn's max-pools at ~40% of the step, while replacing them with a strided slice
saved only 1.5 ms of 17.4 (BENCHMARKS.md, third round). The clock around each op adds ~10 µs
of Python per op to the step, not to the op.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

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

    from cnnlab.data import load
    from cnnlab.data.transforms import to_tensor
    from cnnlab.fast.memory import keep_freed_memory
    from cnnlab.models import build

    keep_freed_memory()
    ds = load("mnist", root=args.root, progress=False)
    n = args.batch * args.steps
    x, y = to_tensor(ds.train.images[:n]), torch.as_tensor(ds.train.labels[:n])
    torch.manual_seed(0)
    split = wall_split(build(args.model), x[: args.batch], y[: args.batch], steps=args.steps)
    print(f"{args.model}, batch {args.batch}, no profiler: forward {split['forward']:.2f} ms, backward "
          f"{split['backward']:.2f} ms, optimiser {split['optimizer']:.2f} ms per step")
    print("forward by layer: " + ", ".join(f"{name} {ms:.2f}" for name, ms in split["layers"]))
    from cnnlab.fast import native
    print(f"native kernels: {native.status()} (the op clock below sees only PyTorch's ops, not theirs)")
    torch.manual_seed(0)
    rows, per_step = op_clock(build(args.model), x[: args.batch], y[: args.batch], steps=args.steps)
    rate = bench_floor.measure_rates()["conv bf16"]
    copies = copy_rates()
    flops = bench_floor.step_flops(build(args.model), x[: args.batch], 10)
    for r in rows:
        calls = r["calls"]  # each call's floor: its bytes at the rate of a copy of that size
        r["floor_ms"] = calls * max(r["flops"] / calls / rate, memory_floor(r["bytes"] / calls, copies)) * 1e3
    print(f"{args.model}, batch {args.batch}: {per_step:.1f} ms per step with the op clock; "
          f"{flops / 1e9:.2f} GFLOP per step, compute floor {flops / rate * 1e3:.1f} ms at {rate / 1e9:.0f} GFLOP/s "
          f"(bf16 conv); copies at {copies[1 << 20] / 1e9:.0f} GB/s (1 MiB) to {copies[256 << 20] / 1e9:.0f} (256 MiB)")
    print(f"{'op':<34} {'ms/step':>8} {'floor':>6} {'x floor':>8}  first input")
    for r in rows[: args.rows]:
        print(f"{r['op'][:34]:<34} {r['ms']:>8.2f} {r['floor_ms']:>6.2f} {r['ms'] / max(r['floor_ms'], 1e-6):>8.1f}  "
              f"{r['shape']}")
    total, floor = sum(r["ms"] for r in rows), sum(r["floor_ms"] for r in rows)
    print(f"{'all ops':<34} {total:>8.2f} {floor:>6.2f} {total / floor:>8.1f}")
    return {"ms_per_step": per_step, "floor_ms": flops / rate * 1e3, "op_floor_ms": floor, "ops": rows}


def copy_rates(reps: int = 5) -> dict[int, float]:
    """Bytes per second read plus written by copies of 1 MiB to 256 MiB: in cache, then not."""
    rates = {}
    for mib in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        a = torch.empty(mib << 20, dtype=torch.uint8).fill_(1)
        b = torch.empty_like(a)
        b.copy_(a)
        rates[mib << 20] = 2 * a.numel() / min(_timed(lambda a=a, b=b: b.copy_(a)) for _ in range(reps))
    return rates


def memory_floor(moved: float, rates: dict[int, float]) -> float:
    """Seconds to read and write ``moved`` bytes at the rate of a copy that moves as many."""
    size = next((s for s in sorted(rates) if 2 * s >= moved), max(rates))
    return moved / rates[size]


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class _OpClock(TorchDispatchMode):
    """Seconds, calls, counted FLOPs and bytes moved per (ATen op, first input's shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple[str, tuple], list] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        t = time.perf_counter()
        out = func(*args, **kwargs)
        seconds = time.perf_counter() - t
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        key = (str(func.overloadpacket), tuple(tensors[0].shape) if tensors else ())
        flop_fn = flop_registry.get(func.overloadpacket)
        flops = flop_fn(*args, **kwargs, out_val=out) if flop_fn else 0
        moved = 0 if func.is_view else sum(
            t.nbytes for t in tensors + [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)])
        row = self.rows.setdefault(key, [0.0, 0, 0, 0])
        row[0] += seconds
        row[1] += 1
        row[2] += flops
        row[3] += moved
        return out


def op_clock(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 20) -> tuple[list, float]:
    """Each ATen op of ``steps`` training steps as fit runs them (the same setup as
    ``wall_split``) by the clock: rows of op, first input shape, ms, FLOPs and bytes per step,
    slowest first; and the milliseconds per step with the clock on."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    step = _fit_step(model, x, y)
    for _ in range(3):
        step()
    clock = _OpClock()
    t = time.perf_counter()
    with clock:
        for _ in range(steps):
            step()
    per_step = (time.perf_counter() - t) / steps * 1e3
    rows = [{"op": op, "shape": shape, "ms": v[0] / steps * 1e3, "calls": v[1] / steps, "flops": v[2] / steps,
             "bytes": v[3] / steps} for (op, shape), v in clock.rows.items()]
    return sorted(rows, key=lambda r: r["ms"], reverse=True), per_step


def _fit_setup(model: torch.nn.Module, x: torch.Tensor):
    """The training view, optimiser and input as fit runs them: channels_last, Adam as
    make_optimizer builds it (autocast as --precision auto picks it is the caller's)."""
    from cnnlab.fast.view import training_view
    from cnnlab.train.optim import make_optimizer

    net = training_view(model.to(memory_format=torch.channels_last))
    # .to restrides a one-channel batch as channels_last (.contiguous keeps it NCHW), as fit's feed does
    return net, make_optimizer("adam", net.parameters()), x.to(memory_format=torch.channels_last)


def _fit_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    """One training step as fit takes it."""
    import torch.nn.functional as F

    from cnnlab.precision import autocast

    net, opt, x = _fit_setup(model, x)

    def step() -> None:
        with autocast(x.device):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def wall_split(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int = 20) -> dict:
    """Milliseconds per training step of ``x, y`` spent in forward, backward and the optimiser,
    and in each top-level layer's forward, by the clock alone (no profiler): fit's own setup
    (training_view, channels_last, autocast as --precision auto picks it, Adam as
    make_optimizer builds it), after three untimed steps."""
    import torch.nn.functional as F

    from cnnlab.precision import autocast

    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    net, opt, x = _fit_setup(model, x)
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
