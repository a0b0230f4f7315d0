"""Inference throughput of the pretrained ImageNet nets on CPU, beside Keras' VGG16.

Measures images/s of cnnlab's VGG-16 and SqueezeNet 1.1 at batch 1 and 8, in the default
(NCHW contiguous) and channels_last memory layouts, and channels_last with the wide 3×3
convolutions computed by Winograd F(4×4, 3×3) (``cnnlab.models.winograd``), under torch.inference_mode. When
TensorFlow/Keras is importable, Keras' VGG16 (weights=None: same FLOPs as ImageNet
weights, as in shared/bench/peer_keras_vgg16.py) runs in the same rounds. Variants are
timed alternately, round after round, and the median is reported; weights are random
(speed does not depend on them).

Usage: python benchmarks/bench_pretrained.py [--rounds 5] [--batches 1 8] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from cnnlab.models import build
from cnnlab.models.winograd import winograd_inference
from cnnlab.train.memory import keep_freed_memory


def torch_runner(model, batch: int, channels_last: bool, winograd: bool = False):
    x = torch.rand(batch, 3, 224, 224)
    if winograd:
        model = winograd_inference(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        model = model.to(memory_format=torch.contiguous_format)

    def run():
        with torch.inference_mode():
            model(x)
    return run


def keras_runner(batch: int):
    try:
        import keras
    except ImportError:
        return None
    model = keras.applications.VGG16(weights=None)
    x = np.random.rand(batch, 224, 224, 3).astype("float32") * 255

    def run():
        model.predict(x, verbose=0)
    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--models", nargs="+", default=["vgg16", "squeezenet1_1"])
    args = p.parse_args()
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
    variants = {}  # (model, batch, layout) -> run()
    for batch in args.batches:
        for name, model in models.items():
            for layout in ("nchw", "channels_last", "cl+winograd"):
                variants[(name, batch, layout)] = torch_runner(model, batch, layout != "nchw", layout == "cl+winograd")
        if "vgg16" in models:
            keras_run = keras_runner(batch)
            if keras_run is None:
                print(f"keras: not importable, Keras VGG16 skipped (batch {batch})")
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
    print(f"{'model':<16}{'batch':>6}  {'layout':<14}{'img/s':>9}  {'vs keras':>8}")
    for (name, batch, layout), ts in times.items():
        rate = batch / statistics.median(ts)
        keras_ts = times.get(("keras vgg16", batch, "nhwc"))
        ratio = f"{rate / (batch / statistics.median(keras_ts)):.2f}x" if keras_ts and name == "vgg16" else ""
        print(f"{name:<16}{batch:>6}  {layout:<14}{rate:>9.2f}  {ratio:>8}")


if __name__ == "__main__":
    main()
