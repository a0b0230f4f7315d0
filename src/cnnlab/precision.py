"""Which arithmetic a network computes in: ``auto``, ``fp32`` or ``bf16`` autocast.

Below every layer (models, train and insight all use it): classify's pretrained nets,
training and evaluation make the same choice from the same rule. ``auto`` means bf16 on
CUDA and on CPUs that compute bf16 natively, fp32 elsewhere.
"""

from __future__ import annotations

import functools
import os

import torch

from cnnlab.errors import CnnlabError

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), so bf16 autocast pays.

    oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) also says yes on
    plain AVX-512, where bf16 is emulated and slower than fp32; the instruction-set flags
    in /proc/cpuinfo are what tell the two apart (measured: oneDNN convolutions run ~2x
    faster in bf16 than fp32 with ``avx512_bf16``). ``CNNLAB_CPU_BF16=0|1`` overrides.
    """
    forced = os.environ.get("CNNLAB_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return _cpuinfo_has_bf16()


@functools.cache
def _cpuinfo_has_bf16() -> bool:
    # Read once per process: autocast asks on every training step, and reading
    # /proc/cpuinfo each time cost ~0.2 ms a step (2% of an mnist-fast step on 2 cores).
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``"auto"`` -> ``"bf16"`` on CUDA and on CPUs with native bf16, else ``"fp32"``.

    bf16 autocast keeps fp32 master weights and optimiser state; no loss scaling is
    needed because bf16 has fp32's exponent range.
    """
    if precision not in PRECISIONS:
        raise CnnlabError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def autocast(device: torch.device | str, precision: str = "auto", *, cache: bool = True):
    """bf16 autocast (convolutions and matmuls in bf16, weights kept fp32, no loss scaling)
    where ``precision`` asks for it (see ``resolve_precision``); a disabled one otherwise."""
    device = torch.device(device)
    enabled = resolve_precision(precision, device) == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled, cache_enabled=cache)
