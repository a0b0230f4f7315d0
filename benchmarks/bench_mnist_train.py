"""Target 1 of the speed issue: the tutorials' mnist-cnn, same model, same result, faster.

Trains mnist-cnn (220,234 parameters, batch 256, Adam) with cnnlab and with the peers in
../shared/bench: plain PyTorch (a DataLoader loop) and Keras/TensorFlow (skipped with a
note when TensorFlow is not importable; point --keras-python at a virtual environment
made with `pip install tensorflow-cpu`). Each system runs as its own process, alternating
cnnlab, torch, keras, for --reps repetitions; the table shows the median seconds per
epoch, images per second, test accuracy after the same epochs, and cnnlab's speed-up.

    python benchmarks/bench_mnist_train.py --epochs 1 --reps 3
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("CNNLAB_SHARED", HERE.parent.parent / "shared"))
LINE = re.compile(r"epoch (\d+) train ([\d.]+)s\s+test acc ([\d.]+)")


def cnnlab_worker(mnist_dir: str, epochs: int, batch: int) -> None:
    """Run inside a child process: print lines in the peers' format."""
    import torch

    from cnnlab.data import load
    from cnnlab.data.transforms import to_tensor
    from cnnlab.fast.memory import keep_freed_memory
    from cnnlab.models import build
    from cnnlab.train.config import TrainConfig
    from cnnlab.train.loop import fit
    from cnnlab.train.validation import evaluate_loss_accuracy
    ds = load("mnist", root=mnist_dir, progress=False)
    x, y = to_tensor(ds.train.images), torch.as_tensor(ds.train.labels)
    xt, yt = to_tensor(ds.test.images), torch.as_tensor(ds.test.labels)
    torch.manual_seed(0)
    model = build("mnist-cnn")
    times = []

    def report(end) -> None:
        _, acc = evaluate_loss_accuracy(end.model, xt, yt, batch_size=2000)
        print(f"epoch {end.epoch} train {times[-1]:.1f}s  test acc {acc:.4f}", flush=True)

    def clock(end) -> None:
        times.append(end.logs["seconds"])

    # What `cnnlab train` does for every run (the library leaves malloc alone unless asked).
    keep_freed_memory()
    fit(model, x, y, config=TrainConfig(epochs=epochs, batch_size=batch, optimizer="adam", verbose=0),
        callbacks=[clock, report])


def run_one(cmd: list[str], env: dict | None = None) -> list[tuple[float, float]]:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed:\n{proc.stderr[-1500:]}")
    return [(float(m[2]), float(m[3])) for m in LINE.finditer(proc.stdout)]


def keras_python(arg: str | None) -> str | None:
    candidates = [arg] if arg else [sys.executable, str(Path.home() / "venvs" / "tf" / "bin" / "python")]
    for py in candidates:
        if py and Path(py).exists() and subprocess.run([py, "-c", "import tensorflow"], capture_output=True).returncode == 0:
            return py
    return None


def main(argv: list[str] | None = None) -> dict:
    """Print the table; return {system: {"seconds": median s/epoch, "accuracy": median test acc}}
    (the Keras peer absent when TensorFlow is not found) and "keras_python"."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--mnist", default=str(SHARED / "datasets" / "mnist"))
    ap.add_argument("--keras-python", help="a Python with TensorFlow installed (default: this one, then ~/venvs/tf)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        cnnlab_worker(args.mnist, args.epochs, args.batch)
        return {}
    common = [args.mnist, str(args.epochs), str(args.batch)]
    systems = {"cnnlab": [sys.executable, __file__, "--worker", "--mnist", args.mnist, "--epochs", str(args.epochs),
                          "--batch", str(args.batch)],
               "pytorch loop": [sys.executable, str(SHARED / "bench" / "peer_torch_mnist.py"), *common]}
    kp = keras_python(args.keras_python)
    if kp:
        systems["keras/tf"] = [kp, str(SHARED / "bench" / "peer_keras_mnist.py"), *common]
    else:
        print("note: TensorFlow not importable; Keras peer skipped (pip install tensorflow-cpu in a venv, "
              "then --keras-python VENV/bin/python)")
    results: dict[str, list[list[tuple[float, float]]]] = {k: [] for k in systems}
    for rep in range(args.reps):
        for name, cmd in systems.items():
            t0 = time.perf_counter()
            results[name].append(run_one(cmd, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")))
            print(f"rep {rep + 1} {name}: {time.perf_counter() - t0:.0f}s wall", file=sys.stderr, flush=True)
    print(f"\nmnist-cnn, batch {args.batch}, {args.epochs} epoch(s), median of {args.reps} runs")
    print(f"{'system':14} {'s/epoch':>8} {'img/s':>8} {'test acc':>9} {'cnnlab speed-up':>16}")
    ours = statistics.median(t for run in results["cnnlab"] for t, _ in run)
    figures: dict = {"keras_python": kp}
    for name, runs in results.items():
        sec = statistics.median(t for run in runs for t, _ in run)
        acc = statistics.median(run[-1][1] for run in runs)
        figures[name] = {"seconds": sec, "accuracy": acc}
        print(f"{name:14} {sec:8.1f} {60000 / sec:8.0f} {acc:9.4f} {sec / ours:15.2f}x")
    return figures


if __name__ == "__main__":
    main()
