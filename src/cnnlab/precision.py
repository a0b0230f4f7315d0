"""Which arithmetic a network computes in: ``auto``, ``fp32`` or ``bf16`` autocast.

Below every layer (models, train and insight all use it): classify's pretrained nets,
training and evaluation make the same choice from the same rule. ``auto`` means bf16 on
CUDA and on CPUs that compute bf16 natively, fp32 elsewhere.
"""

from __future__ import annotations

import torch

from cnnlab import cpu
from cnnlab.errors import CnnlabError

PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), so bf16 autocast pays.

    oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) also says yes on
    plain AVX-512, where bf16 is emulated and slower than fp32; the instruction-set flags
    are what tell the two apart (``cnnlab.cpu``: /proc/cpuinfo, or ``CNNLAB_CPU_FEATURES``).
    ``CNNLAB_CPU_BF16=0|1`` overrides.
    """
    return cpu.native_bf16()


def bf16_note(precision: str, device: torch.device | str) -> str | None:
    """A warning for an explicit bf16 on a CPU without native bf16, else None: it runs, through
    plain autocast, but emulated (measured 50-100x slower than fp32 on an AVX2 CPU)."""
    if precision == "bf16" and torch.device(device).type == "cpu" and not cpu.native_bf16():
        return (f"bf16 is emulated on this CPU (it has no {cpu.missing_for_bf16()}): expect it many times slower "
                "than fp32; --precision auto picks fp32 here")
    return None


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
