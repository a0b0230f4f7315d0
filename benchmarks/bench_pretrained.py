"""Inference throughput of the pretrained ImageNet nets on CPU, beside Keras' VGG16.

Measures images/s of cnnlab's VGG-16 and SqueezeNet 1.1 at batch 1 and 8, in the default
(NCHW contiguous) and channels_last memory layouts, channels_last with the wide 3×3
convolutions computed by Winograd F(4×4, 3×3) (``cnnlab.fast.winograd``), and channels_last
under bf16 autocast, under torch.inference_mode. When TensorFlow/Keras is importable here or in
``--keras-python`` (default ~/venvs/tf/bin/python, run as a worker process), Keras' VGG16
(weights=None: same FLOPs as ImageNet weights, as in shared/bench/peer_keras_vgg16.py) runs in the same rounds. Variants are
timed alternately, round after round, and the median is reported; weights are random
(speed does not depend on them).

Usage: python benchmarks/bench_pretrained.py [--rounds 5] [--batches 1 8] [--threads N] [--keras-python PY]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cnnlab.fast.fused import for_inference
from cnnlab.fast.memory import keep_freed_memory
from cnnlab.fast.winograd import winograd_inference
from cnnlab.models import build

# cl+bf16+fused: what classify --precision auto runs where the CPU has native bf16 (conv + ReLU as one
# oneDNN call, bf16 weights cast once: cnnlab.fast.fused.for_inference); cl+fused: the same in fp32,
# what it runs elsewhere. bf16 layouts are timed only where bf16 is native: emulated bf16 (an AVX2
# CPU) runs 50-100x slower than fp32 and no cnnlab default picks it there.
LAYOUTS = ("nchw", "channels_last", "cl+winograd", "cl+fused", "cl+bf16", "cl+bf16+fused")


def layouts() -> tuple[str, ...]:
    from cnnlab.precision import cpu_has_native_bf16

    return LAYOUTS if cpu_has_native_bf16() else tuple(lay for lay in LAYOUTS if "bf16" not in lay)


def torch_runner(model, batch: int, channels_last: bool, winograd: bool = False, bf16: bool = False,
                 fused: bool = False):
    x = torch.rand(batch, 3, 224, 224)
    if winograd:
        model = winograd_inference(model)
    if fused:  # classify's own arrangement of a network it loaded (cnnlab.fast.fused)
        model = for_inference(copy.deepcopy(model), "bf16" if bf16 else "fp32", torch.device("cpu"))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        model = model.to(memory_format=torch.contiguous_format)

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x)
    return run


# Keras in another Python (a venv with tensorflow-cpu): it builds VGG16 once, then times one
# predict per line read and answers with nothing, so the parent's clock brackets each call.
KERAS_WORKER = """
import sys, numpy as np, keras
m = keras.applications.VGG16(weights=None)
x = np.random.rand(int(sys.argv[1]), 224, 224, 3).astype("float32") * 255
print("ready", flush=True)
for _ in sys.stdin:
    m.predict(x, verbose=0)
    print("done", flush=True)
"""


def keras_python(arg: str | None = None) -> str | None:
    """A Python that imports TensorFlow: ``arg``, else this one, else ~/venvs/tf/bin/python."""
    candidates = [arg] if arg else [sys.executable, str(Path.home() / "venvs" / "tf" / "bin" / "python")]
    for py in candidates:
        if py and Path(py).exists() and subprocess.run([py, "-c", "import tensorflow"], capture_output=True).returncode == 0:
            return py
    return None


def keras_runner(batch: int, python: str | None = None):
    try:
        import keras
    except ImportError:
        return _keras_process(batch, python) if python else None
    model = keras.applications.VGG16(weights=None)
    x = np.random.rand(batch, 224, 224, 3).astype("float32") * 255

    def run():
        model.predict(x, verbose=0)
    return run


def _keras_process(batch: int, python: str):
    import os

    proc = subprocess.Popen([python, "-c", KERAS_WORKER, str(batch)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"the Keras worker in {python} did not start")

    def run():
        proc.stdin.write("go\n")
        proc.stdin.flush()
        proc.stdout.readline()
    run.close = lambda: (proc.stdin.close(), proc.wait())
    return run


def main(argv: list[str] | None = None) -> dict:
    """Print the table; return {(model, batch, variant): images per second}."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--models", nargs="+", default=["vgg16", "squeezenet1_1"])
    p.add_argument("--keras-python", help="a Python with TensorFlow (default: this one, then ~/venvs/tf/bin/python)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # What the cnnlab command does for every subcommand (cnnlab.cli.main; the library leaves the
    # process-wide malloc settings alone). It is per process, so the Keras peer runs under it
    # too (TensorFlow has its own allocator).
    kept = keep_freed_memory()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds, median; "
          f"freed memory kept in the process: {kept}")
    models = {name: build(name).eval() for name in args.models}
    kp = None
    try:
        import keras  # noqa: F401
    except ImportError:
        kp = keras_python(args.keras_python)
    variants = {}  # (model, batch, layout) -> run()
    for batch in args.batches:
        for name, model in models.items():
            for layout in layouts():
                variants[(name, batch, layout)] = torch_runner(model, batch, layout != "nchw", "winograd" in layout,
                                                               "bf16" in layout, "fused" in layout)
        if "vgg16" in models:
            keras_run = keras_runner(batch, kp)
            if keras_run is None:
                print(f"keras: not importable here nor in --keras-python, Keras VGG16 skipped (batch {batch})")
            else:
                variants[("keras vgg16", batch, "nhwc")] = keras_run
    for run in variants.values():  # warm-up: allocator, oneDNN primitives, tf.function tracing
        run()
    times = {key: [] for key in variants}
    for _ in range(args.rounds):
        for key, run in variants.items():
            t = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - t)
    for run in variants.values():
        getattr(run, "close", lambda: None)()
    print(f"{'model':<16}{'batch':>6}  {'layout':<14}{'img/s':>9}  {'vs keras':>8}")
    figures = {}
    for (name, batch, layout), ts in times.items():
        rate = figures[(name, batch, layout)] = batch / statistics.median(ts)
        keras_ts = times.get(("keras vgg16", batch, "nhwc"))
        ratio = f"{rate / (batch / statistics.median(keras_ts)):.2f}x" if keras_ts and name == "vgg16" else ""
        print(f"{name:<16}{batch:>6}  {layout:<14}{rate:>9.2f}  {ratio:>8}")
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
