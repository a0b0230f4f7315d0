"""Which torch device to run on, from what a user typed."""

from __future__ import annotations

import torch

from cnnlab.errors import CnnlabError

__all__ = ["resolve_device"]  # the precision rule lives in cnnlab.precision


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
