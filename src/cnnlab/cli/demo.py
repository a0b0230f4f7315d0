"""`cnnlab demo`: the main job, the tutorials' whole story in one command."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from cnnlab.cli import options


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole story offline: filters, a CNN trained on MNIST, its evaluation and report",
        description="Filters on the Grace Hopper portrait (random vs edge kernels), the tutorials' mnist-cnn "
        "trained on MNIST (found locally; without it, scikit-learn's bundled 8x8 digits), its evaluation, "
        "learned filters and activations, and one HTML report. Offline, a few minutes on 2 CPU cores.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="where to write (default runs/demo)")
    p.add_argument("--epochs", type=int, help="training epochs (default 2 on MNIST, 30 on the digits fallback)")
    options.add_verbosity(p, quiet="no progress bars", verbose="one line per training epoch instead of a progress bar")
    options.add_device(p)
    options.add_examples(p, "cnnlab demo", "cnnlab demo --out runs/demo2 --epochs 1 --quiet")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.demo import run_demo

    result = run_demo(args.out, epochs=args.epochs, log=print, verbose=args.verbosity, device=args.device)
    print(f"test accuracy on {result.data}: {result.test_accuracy:.2%}")
    print(f"filter galleries: {result.random_gallery}, {result.edge_gallery}")
    print(f"open the report: {result.report}")
    print(f"look inside the network, live: cnnlab lab {shlex.quote(str(result.run_dir))}")
    return 0
