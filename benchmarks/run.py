"""Run cnnlab's benchmarks one after another and print each table.

    python benchmarks/run.py                 # all of them (about 15 minutes on 2 cores)
    python benchmarks/run.py conv mnist_train

Each benchmark is benchmarks/bench_NAME.py with a main(argv) that measures cnnlab and its
peer side by side in the same run and prints the ratio. Never part of the test suite.
Run them on an otherwise idle machine: the figures are wall-clock times.
"""

from __future__ import annotations

import importlib.util
import inspect
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The default set, cheapest first; cifar time-to-accuracy (~15 min a seed) and tutorials (every
# tutorial's full training, three seeds each) run only by name.
DEFAULT = ["conv", "data", "mnist_train", "time_to_accuracy", "pretrained", "explain"]


def load(name: str):
    path = HERE / f"bench_{name}.py"
    if not path.is_file():
        known = sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
        raise SystemExit(f"no benchmark {name!r}; known: {', '.join(known)}")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as importlib's recipe does: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    import numpy
    import torch

    names = argv or DEFAULT
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"python {platform.python_version()}, torch {torch.__version__}, numpy {numpy.__version__}, "
          f"{time.strftime('%Y-%m-%d')}")
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        module = load(name)
        saved, sys.argv = sys.argv, [str(HERE / f"bench_{name}.py")]  # each benchmark's defaults
        try:
            if inspect.signature(module.main).parameters:
                module.main([])
            else:
                module.main()
        finally:
            sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
