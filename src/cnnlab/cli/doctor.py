"""``cnnlab doctor``: what a bug report needs, in one screen.

Versions, the CPU (model, the flags that decide the speed, native bf16 or not, what oneDNN
and ATen will use), threads, the C compiler, each fast path's status and why, CUDA devices,
and the cache folders. Nothing is changed; building the native kernels once (if they are not
cached yet) is how their status is known.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

from cnnlab.cli import options

# The environment variables that change what cnnlab and its libraries compute, or how fast.
ENVIRONMENT = ("CNNLAB_FAST", "CNNLAB_NATIVE", "CNNLAB_CPU_FEATURES", "CNNLAB_CPU_BF16", "CNNLAB_MALLOC", "CNNLAB_DATA",
               "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CC",
               "XDG_CACHE_HOME")


def register(sub) -> None:
    p = sub.add_parser(
        "doctor",
        help="print what a bug report needs: versions, CPU, fast paths, devices, caches",
        description="Print the versions, the CPU and its flags, threads, native bf16, the C compiler, each fast "
                    "path's status and why, CUDA devices and the cache folders. Paste it into a bug report.",
        epilog="examples:\n  cnnlab doctor\n  CNNLAB_FAST=0 cnnlab doctor      # what --fast off turns off",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    options.add_device(p)
    options.add_fast(p)
    options.add_verbosity(p, quiet="only the fast paths", verbose="also every environment variable that matters")
    p.set_defaults(func=run)


def facts(device: str = "auto", fast_setting: str = "auto", environment: bool = False) -> list[tuple[str, str]]:
    """(label, value) rows; values are one line each."""
    import numpy
    import torch

    from cnnlab import __version__, cpu, fast
    from cnnlab.files import cache_dir
    from cnnlab.train.device import resolve_device

    where = resolve_device(device)
    rows = [
        ("cnnlab", __version__),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("torch", f"{torch.__version__} (ATen CPU capability {torch.backends.cpu.get_cpu_capability()}, "
                  f"oneDNN {'yes' if torch.backends.mkldnn.is_available() else 'no'})"),
        ("numpy", numpy.__version__),
        ("platform", f"{platform.system()} {platform.release()} {platform.machine()}"),
        ("cpu", cpu.model_name()),
        ("cpu flags", cpu.shown_flags() + (" (CNNLAB_CPU_FEATURES)" if cpu.overridden() else "")),
        ("native bf16", "yes" if cpu.native_bf16() else f"no (no {cpu.missing_for_bf16()}: bf16 is emulated, slow)"),
        ("oneDNN bf16 convolution", "yes" if cpu.onednn_bf16() else "no (needs avx512bw/vl/dq or avx_ne_convert)"),
        ("threads", f"torch {torch.get_num_threads()}, interop {torch.get_num_interop_threads()}, "
                    f"cores usable {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} "
                    f"of {os.cpu_count()}"),
        ("C compiler", _compiler()),
    ]
    paths = fast.status(where, fast_setting)
    rows += [(f"fast: {name}", state) for name, state in paths.items()]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            rows.append((f"cuda:{i}", f"{props.name}, {props.total_memory / 2**30:.1f} GiB, "
                                      f"capability {props.major}.{props.minor}"))
    else:
        rows.append(("cuda", f"none (torch {'built with' if torch.backends.cuda.is_built() else 'without'} CUDA)"))
    rows += [("cache", str(cache_dir())), ("native kernels cache", str(fast.native_cache() or "none (no compiler)"))]
    if environment:
        rows += [(f"${name}", os.environ[name]) for name in ENVIRONMENT if name in os.environ]
    return rows


def _compiler() -> str:
    found = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not found:
        return "none (install gcc for the native kernels)"
    try:
        first = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{found} (does not run: {type(exc).__name__})"
    return f"{found}: {first[0] if first else 'unknown version'}"


def run(args) -> int:
    rows = facts(args.device, args.fast, environment=args.verbosity == options.VERBOSE)
    if args.verbosity == options.QUIET:
        rows = [row for row in rows if row[0].startswith("fast: ")]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0
