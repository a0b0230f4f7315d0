"""What this machine can do: its CPU's instruction-set flags (read once, with an override for
tests) and the memory it can still give.

Below every layer: ``cnnlab.precision`` asks it whether bf16 pays, and each fast path in
``cnnlab.fast`` asks it whether the instructions it needs are there before it proves itself
on a small case.

``CNNLAB_CPU_FEATURES=avx2,fma`` makes cnnlab behave as on a CPU with exactly those flags
(CI runs the suite that way, beside ``ONEDNN_MAX_CPU_ISA=AVX2`` and
``ATEN_CPU_CAPABILITY=avx2``, which make oneDNN and ATen do the same): it can only take
flags away in effect, since the real instructions are what runs.
"""

from __future__ import annotations

import functools
import os
import platform

# The flags that decide which arithmetic pays: native bf16 (AVX-512 BF16 or AMX), the
# AVX-512 subsets oneDNN's bf16 convolution needs, and AVX2/FMA for everything vectorised.
NATIVE_BF16 = frozenset({"avx512_bf16", "amx_bf16"})
ONEDNN_BF16 = frozenset({"avx512bw", "avx512vl", "avx512dq"})  # or avx_ne_convert, as oneDNN says
SHOWN = ("avx", "avx2", "fma", "f16c", "avx_ne_convert", "avx512f", "avx512bw", "avx512vl", "avx512dq",
         "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")


@functools.cache
def _cpuinfo() -> tuple[frozenset[str], str]:
    """The flags and model name in /proc/cpuinfo (empty where there is none)."""
    flags, model = frozenset(), ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = frozenset(line.split(":", 1)[1].split())
                elif line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                if flags and model:
                    break
    except OSError:
        pass
    return flags, model


def features() -> frozenset[str]:
    """This CPU's instruction-set flags (``/proc/cpuinfo``), or ``CNNLAB_CPU_FEATURES``'s
    comma-separated list where it is set."""
    forced = os.environ.get("CNNLAB_CPU_FEATURES")
    if forced is not None:
        return frozenset(f.strip().lower() for f in forced.split(",") if f.strip())
    return _cpuinfo()[0]


def overridden() -> bool:
    """Whether ``CNNLAB_CPU_FEATURES`` stands in for the real flags."""
    return os.environ.get("CNNLAB_CPU_FEATURES") is not None


def model_name() -> str:
    return _cpuinfo()[1] or platform.processor() or platform.machine()


def has(*flags: str) -> bool:
    return set(flags) <= features()


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), so bf16 autocast pays.

    Elsewhere bf16 is emulated: measured 0.3-2.4 GFLOP/s on an AVX2 CPU against ~100+ in fp32.
    ``CNNLAB_CPU_BF16=0|1`` overrides this one answer (tests of the bf16 paths use it).
    """
    forced = os.environ.get("CNNLAB_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return bool(features() & NATIVE_BF16)


def onednn_bf16() -> bool:
    """Whether oneDNN runs its bf16 convolutions here (AVX-512 BW/VL/DQ or AVX-NE-CONVERT);
    elsewhere it refuses them ("bf16 path needs the cpu support ...")."""
    f = features()
    return ONEDNN_BF16 <= f or "avx_ne_convert" in f


def missing_for_bf16() -> str:
    """The instruction sets this CPU lacks for native bf16, as one phrase."""
    return "avx512_bf16 or amx_bf16"


def shown_flags() -> str:
    """The flags that matter to cnnlab's speed, in a fixed order, for headers and bug reports."""
    f = features()
    return " ".join(name for name in SHOWN if name in f) or "none of avx2/avx512/amx"


def isa_label() -> str:
    """One word for the vector width: amx, avx512, avx2 or baseline."""
    f = features()
    if "amx_bf16" in f:
        return "amx"
    if "avx512f" in f:
        return "avx512"
    if {"avx2", "fma"} <= f:
        return "avx2"
    return "baseline"


def available_memory() -> int:
    """Bytes the system could give this process now: Linux's MemAvailable; elsewhere half the
    physical memory (a guess that errs on the safe side); 2**63 where even that is unknown.
    The one answer for every memory check (a model's weights, a folder's decoded images)."""
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 2**63
