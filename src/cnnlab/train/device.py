"""Which torch device to run on, from what a user typed."""

from __future__ import annotations

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
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CnnlabError(f"device {str(name)!r} asked for, but no CUDA GPU is available; use --device cpu")
    return device
