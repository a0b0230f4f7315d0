"""Load times of cnnlab.data.load against a plain NumPy parse, for MNIST and CIFAR-10.

Usage: CNNLAB_DATA=../shared/datasets python benchmarks/bench_data.py [repetitions]

Rows, each the median of the repetitions, cnnlab and the peer alternating:
  first load  load() with an empty user cache: find, parse, verify (MNIST content MD5s, counts),
              write the .npy cache
  no cache    load(cache=False): find, parse, verify, every time
  cached      load() once the .npy cache exists (every load after the first)
  peer        MNIST: gzip + np.frombuffer as in ../shared/bench/peer_torch_mnist.py's idx();
              CIFAR-10: np.fromfile + reshape + transpose to channels-last + ascontiguousarray
The source files are in the OS page cache throughout (this measures parsing, not the disk).
"""

from __future__ import annotations

import gzip
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cnnlab import data


def idx(path):  # the peer: ../shared/bench/peer_torch_mnist.py, verbatim
    with gzip.open(path) as f:
        raw = f.read()
    ndim = raw[3]
    shape = np.frombuffer(raw, ">u4", ndim, 4)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def peer_mnist(folder: Path):
    return [idx(folder / f"{p}-{k}-ubyte.gz") for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]


def peer_cifar(folder: Path):
    def batch(name):
        records = np.fromfile(folder / name, np.uint8).reshape(-1, 3073)
        return records[:, 0], records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)

    train = [batch(f"data_batch_{i}.bin") for i in range(1, 6)]
    images = np.ascontiguousarray(np.concatenate([b[1] for b in train]))
    test = batch("test_batch.bin")
    return images, np.concatenate([b[0] for b in train]), np.ascontiguousarray(test[1]), test[0]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def with_cache_home(path: str, fn):
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = path
    try:
        return fn()
    finally:
        if old is None:
            del os.environ["XDG_CACHE_HOME"]
        else:
            os.environ["XDG_CACHE_HOME"] = old


def bench(name: str, peer, reps: int) -> dict[str, float]:
    times: dict[str, list[float]] = {"first load": [], "no cache": [], "cached": [], "peer": []}
    with tempfile.TemporaryDirectory() as warm:
        with_cache_home(warm, lambda: data.load(name, download=False, progress=False))
        for _ in range(reps):
            with tempfile.TemporaryDirectory() as cold:
                times["first load"].append(with_cache_home(
                    cold, lambda: timed(lambda: data.load(name, download=False, progress=False))))
            times["peer"].append(timed(peer))
            times["no cache"].append(timed(lambda: data.load(name, download=False, cache=False)))
            times["peer"].append(timed(peer))
            times["cached"].append(with_cache_home(
                warm, lambda: timed(lambda: data.load(name, download=False, progress=False))))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    if not os.environ.get("CNNLAB_DATA"):
        print("set CNNLAB_DATA to the folder holding mnist/ and cifar10/ (e.g. ../shared/datasets)")
        return 2
    mnist = data.locate("mnist")
    cifar = data.locate("cifar10")
    if mnist is None or cifar is None or cifar.suffix == ".gz":
        print(f"need MNIST .gz files and CIFAR-10's cifar-10-batches-bin under $CNNLAB_DATA; found {mnist}, {cifar}")
        return 2
    print(f"{reps} repetitions, median seconds; cpus={os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}")
    print(f"{'dataset':<9} {'cnnlab first':>12} {'no cache':>9} {'cached':>8} {'peer':>7} "
          f"{'peer/cached':>11} {'peer/no cache':>13}")
    for name, peer in (("mnist", lambda: peer_mnist(mnist)), ("cifar10", lambda: peer_cifar(cifar))):
        t = bench(name, peer, reps)
        print(f"{name:<9} {t['first load']:>12.3f} {t['no cache']:>9.3f} {t['cached']:>8.3f} {t['peer']:>7.3f} "
              f"{t['peer'] / t['cached']:>10.1f}x {t['peer'] / t['no cache']:>12.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
