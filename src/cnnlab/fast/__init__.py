"""cnnlab's fast paths, in one place, and the one switch that turns them on or off.

The plain path (``cnnlab.train``, ``cnnlab.models``) is ordinary PyTorch a learner can follow:
``model(x)``, ``loss.backward()``, ``opt.step()``. Everything here computes the same numbers
faster, and each part steps aside where it cannot prove that:

- ``view``: the training view, the user's layers rearranged so a CPU step moves less memory;
- ``native`` (+ ``native.c``): hand-written CPU kernels the view uses, built on first use;
- ``graph``: the training step replayed from a CUDA graph;
- ``fused``: conv + ReLU as one oneDNN call, and bf16 weights cast once, for inference;
- ``winograd``: Winograd F(4×4, 3×3) convolutions for CPU inference of wide 3×3 layers;
- ``memory``: glibc's malloc kept from returning freed activations to the system;
- ``guard``: when a user's network must run exactly as given.

The rest of cnnlab imports this package only, never its modules: the functions below are
the switch point. Each takes the setting (``"auto"`` or ``"off"``; ``CNNLAB_FAST=0`` in the
environment turns every fast path off) and returns the plain object where a fast path is
off, does not apply, or cannot prove itself on this CPU. ``status`` says, per fast path,
whether it runs and why not, in the words a run header, ``config.json`` and
``cnnlab doctor`` print.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cnnlab.errors import CnnlabError

if TYPE_CHECKING:  # torch is imported where it is used: `cnnlab --version` and `cnnlab kernels` never load it
    import torch
    from torch import nn

SETTINGS = ("auto", "off")


def enabled(setting: str | bool | None = "auto") -> bool:
    """Whether fast paths may run: ``setting`` is ``"auto"`` (or True/None) or ``"off"`` (or
    False); ``CNNLAB_FAST=0`` (or ``off``) in the environment wins over it."""
    if setting is True or setting is None:
        setting = "auto"
    elif setting is False:
        setting = "off"
    if setting not in SETTINGS:
        raise CnnlabError(f"fast must be one of {', '.join(SETTINGS)}, got {setting!r}")
    return setting == "auto" and not _env_off()


def _env_off() -> bool:
    return os.environ.get("CNNLAB_FAST", "").strip().lower() in ("0", "off", "false", "no")


def _off_reason(setting) -> str:
    return "off (CNNLAB_FAST=0)" if _env_off() else "off (--fast off)"


def why_as_given(model: nn.Module) -> str | None:
    """Why ``model`` must run exactly as given (hooks, parametrizations, pruning, a subclassed
    layer), or None. Every switch below asks this first, so each refuses a non-module in one line."""
    from torch import nn

    from cnnlab.fast.guard import why_as_given as why

    if not isinstance(model, nn.Module):
        raise CnnlabError(f"expected a torch nn.Module, got {type(model).__name__}")

    return why(model)


# -- training ----------------------------------------------------------------------------------------------------


def training_model(model: nn.Module, device: torch.device | str, setting: str | bool | None = "auto") -> nn.Module:
    """What ``fit`` runs for ``model`` on ``device``: its training view (the same parameters,
    faster on a CPU; ``cnnlab.fast.view``), or the model itself where fast paths are off or the
    model carries anything the view would bypass."""
    if why_as_given(model) is not None or not enabled(setting):
        return model
    import torch

    from cnnlab.fast.view import training_view

    return training_view(model, native_kernels=torch.device(device).type == "cpu")


def graph_step(step, batch: int, setting: str | bool | None = "auto"):
    """The CUDA-graph replay of ``step`` (an EagerStep), or (None, why) where it is off or
    cannot be recorded; the caller then trains op by op."""
    if not enabled(setting):
        return None, _off_reason(setting)
    why = why_as_given(step.model)
    if why is not None:
        return None, f"{why}, which a replayed graph would skip"
    from cnnlab.fast.graph import GraphStep

    return GraphStep.capture(step, batch)


# -- inference ---------------------------------------------------------------------------------------------------


def inference_model(model: nn.Module, precision: str, device: torch.device | str,
                    setting: str | bool | None = "auto") -> nn.Module:
    """``model`` arranged in place for repeated inference (``cnnlab.fast.fused.for_inference``:
    conv + ReLU fused, bf16 weights cast once), or as it is where that is off or unsafe."""
    if why_as_given(model) is not None or not enabled(setting):
        return model
    from cnnlab.fast.fused import for_inference

    return for_inference(model, precision, device)


def winograd_model(model: nn.Module, setting: str | bool | None = "auto") -> nn.Module:
    """``model`` with its wide 3×3 convolutions computed by Winograd F(4×4, 3×3), in place
    (``cnnlab.fast.winograd``); as it is where fast paths are off or the model carries hooks."""
    if why_as_given(model) is not None or not enabled(setting):
        return model.eval()
    from cnnlab.fast.winograd import winograd_inference

    return winograd_inference(model, inplace=True)


def keep_freed_memory(setting: str | bool | None = "auto") -> bool:
    """Keep freed activations in the process (``cnnlab.fast.memory``); whether it is in effect."""
    if not enabled(setting):
        return False
    from cnnlab.fast.memory import keep_freed_memory as keep

    return keep()


# -- what runs, and why not --------------------------------------------------------------------------------------


def status(device: torch.device | str = "cpu", setting: str | bool | None = "auto", model: nn.Module | None = None,
           *, cuda_graphs: bool = True) -> dict[str, str]:
    """Per fast path, "on (...)" or "off (why)", for a run on ``device`` (and ``model``, where
    given). Builds the native kernels on the CPU if they are not built yet (that is how they
    prove themselves)."""
    import torch
    from torch import nn

    device = torch.device(device)
    if not enabled(setting):
        off = _off_reason(setting)
        return {name: off for name in ("training view", "native kernels", "cuda graphs", "fused conv+relu",
                                       "malloc tuning")}
    why = why_as_given(model) if model is not None else None
    out = {}
    if why is not None:
        out["training view"] = f"off ({why}; it runs as given)"
    elif model is not None and type(model) is not nn.Sequential:
        out["training view"] = "off (nothing to rearrange: the model is not an nn.Sequential)"
    else:
        out["training view"] = "on"
    if device.type != "cpu":
        out["native kernels"] = f"off (they run on CPU tensors; this run is on {device.type})"
    elif why is not None:
        out["native kernels"] = "off (the training view is off)"
    else:
        from cnnlab.fast import native

        out["native kernels"] = native.status()
    if device.type != "cuda":
        out["cuda graphs"] = "off (CUDA only)"
    elif not cuda_graphs:
        out["cuda graphs"] = "off (--no-cuda-graphs)"
    else:
        out["cuda graphs"] = f"off ({why})" if why else "on where the step can be recorded"
    from cnnlab.fast import fused

    out["fused conv+relu"] = fused.status() if device.type == "cpu" else "off (CPU only)"
    from cnnlab.fast import memory

    out["malloc tuning"] = memory.status()
    return out


def native_cache():
    """Where the native kernels for this CPU and compiler are cached (a Path), or None without a compiler."""
    from cnnlab.fast import native

    return native.cached_library()


def summary(paths: dict[str, str]) -> str:
    """One line for a run header: ``training view on, native kernels off (no C compiler), ...``."""
    return ", ".join(f"{name} {state}" for name, state in paths.items())
