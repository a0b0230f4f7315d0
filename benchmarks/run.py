"""Run cnnlab's benchmarks and print the speed issue's CPU table (issue 18), or named ones.

    python benchmarks/run.py                 # the CPU targets' table (about 20 minutes on 2 cores)
    python benchmarks/run.py --quick         # tiny runs: checks the table is assembled, measures nothing
    python benchmarks/run.py --cifar94       # also CIFAR-10 to 94% (needs a cifar-94 recipe; up to 30 min)
    python benchmarks/run.py all             # every benchmark's own table, one after another
    python benchmarks/run.py conv mnist_train
    python benchmarks/run.py --isa avx2      # the table as on an AVX2+FMA CPU, cnnlab and Keras alike

``--isa avx2`` limits oneDNN (``ONEDNN_MAX_CPU_ISA=AVX2``, which TensorFlow's oneDNN obeys too),
ATen (``ATEN_CPU_CAPABILITY=avx2``) and cnnlab (``CNNLAB_CPU_FEATURES=avx2,fma``: fp32 under
``--precision auto``, native kernels built for x86-64-v3) for every process of the run, the
peers' included; the floors are then counted in fp32.

The table has one row per target: cnnlab's figure, its peer's (Keras/TensorFlow where the
target names one: found in this Python or --keras-python, default ~/venvs/tf/bin/python), the
target and whether it is met, and for every target the compute floor in bf16 on this CPU:
FLOPs counted with torch's FlopCounterMode over the rate measured here by bench_floor.py.

Each benchmark is benchmarks/bench_NAME.py with a main(argv) that measures cnnlab and its
peer side by side in the same run and prints the ratio. Never part of the test suite.
Run them on an otherwise idle machine: the figures are wall-clock times.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The default set, cheapest first; cifar time-to-accuracy (~15 min a seed) and tutorials (every
# tutorial's full training, three seeds each) run only by name.
DEFAULT = ["conv", "data", "mnist_train", "time_to_accuracy", "pretrained", "explain"]
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "CNNLAB_CPU_FEATURES": "avx2,fma"}


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


def _cpu_flags() -> str:
    """The instruction-set flags that decide the conv/GEMM rates (AVX-512, bf16, AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    return " ".join(sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma")))) or "none of avx2/avx512/amx"


def main(argv: list[str]) -> int:
    import argparse

    import numpy
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="benchmarks to run with their own tables ('all': the default set)")
    ap.add_argument("--quick", action="store_true", help="tiny runs of every row: a smoke test of the table")
    ap.add_argument("--cifar94", action="store_true", help="also time CIFAR-10 to 94%% (the cifar-94 recipe)")
    ap.add_argument("--keras-python", help="a Python with TensorFlow (default: this one, then ~/venvs/tf/bin/python)")
    ap.add_argument("--no-cifar", action="store_true", help="leave out the CIFAR-10 rows (minutes each)")
    ap.add_argument("--isa", choices=("native", "avx2"), default="native",
                    help="avx2: run everything (cnnlab and its peers) as on an AVX2+FMA CPU")
    args = ap.parse_args(argv)
    if args.isa == "avx2" and os.environ.get("CNNLAB_CPU_FEATURES") != AVX2_ENV["CNNLAB_CPU_FEATURES"]:
        # The limits must be in place before torch (and oneDNN) load: run this script again under them.
        os.execve(sys.executable, [sys.executable, __file__, *argv], {**os.environ, **AVX2_ENV})
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"python {platform.python_version()}, torch {torch.__version__}, numpy {numpy.__version__}, "
          f"{time.strftime('%Y-%m-%d')}, cpu flags: {_cpu_flags()}")
    if args.isa == "avx2":
        print("limited to AVX2+FMA for cnnlab and its peers: " + " ".join(f"{k}={v}" for k, v in AVX2_ENV.items())
              + f" (ATen capability now {torch.backends.cpu.get_cpu_capability()})")
    if not args.names:
        from targets import targets_table

        return targets_table(load, quick=args.quick, cifar94=args.cifar94, keras_python=args.keras_python,
                             cifar=not args.no_cifar)
    names = DEFAULT if args.names == ["all"] else args.names
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
