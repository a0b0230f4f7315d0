"""Which torch device to run on, from what a user typed."""

from __future__ import annotations

import os

import torch

from cnnlab.errors import CnnlabError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None): CUDA when present, else the CPU; otherwise ``cpu``, ``cuda``, ``cuda:N``.

    Asking for CUDA on a machine without it is a one-line error, not a crash later.
    """
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise CnnlabError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):  # mps, meta, xpu, ...: torch knows them, cnnlab does not train there
        raise CnnlabError(f"device {str(name)!r} is not supported by cnnlab; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CnnlabError(f"device {str(name)!r} asked for, but no CUDA GPU is available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CnnlabError(f"device {str(name)!r} asked for, but this machine has {torch.cuda.device_count()} "
                          f"GPU(s): cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


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
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` on CUDA and on CPUs with native bf16, else ``"fp32"``.

    bf16 autocast keeps fp32 master weights and optimiser state; no loss scaling is
    needed because bf16 has fp32's exponent range.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise CnnlabError(f"precision must be one of auto, fp32, bf16, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
