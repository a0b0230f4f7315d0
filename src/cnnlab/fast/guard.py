"""When a user's network must run as given: what the fast paths would silently bypass.

The training view and the inference fusion put new modules in place of the user's layers.
Anything that works through those layers' identity would then stop taking effect during
training without a word: forward hooks and pre-hooks (how PyTorch users look inside a
network), parametrizations (``torch.nn.utils.parametrize``, the new spectral and weight
norm), pruning masks (``torch.nn.utils.prune``: a forward pre-hook), the old spectral norm
(another pre-hook), backward hooks, and a subclass of a layer type the rewrite replaces
(its own ``forward`` would be skipped). ``why_as_given`` names the first such thing found.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules import module as _module
from torch.nn.utils import parametrize, prune

# The layer types the rewrites replace or recurse into; a subclass of one may have its own forward.
REWRITTEN = (nn.Sequential, nn.Conv2d, nn.MaxPool2d, nn.ReLU, nn.Flatten, nn.Linear)


def why_as_given(model: nn.Module) -> str | None:
    """Why ``model`` must run exactly as given (one phrase), or None where a rewrite is safe."""
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return "global module forward hooks are registered"
    for name, m in model.named_modules():
        where = f"{name} ({type(m).__name__})" if name else f"the model ({type(m).__name__})"
        pre = list(m._forward_pre_hooks.values())
        if any(isinstance(h, prune.BasePruningMethod) for h in pre):
            return f"{where} has a pruning mask (torch.nn.utils.prune)"
        if any(type(h).__name__ == "SpectralNorm" for h in pre):
            return f"{where} has spectral norm"
        if parametrize.is_parametrized(m):
            return f"{where} has parametrizations (torch.nn.utils.parametrize)"
        if m._forward_hooks or pre:
            return f"{where} has forward hooks"
        if m._backward_hooks or getattr(m, "_backward_pre_hooks", None):
            return f"{where} has backward hooks"
        for base in REWRITTEN:
            if isinstance(m, base) and type(m) is not base and not _is_cnnlab_rewrite(m):
                return f"{where} subclasses nn.{base.__name__}"
    return None


def _is_cnnlab_rewrite(m: nn.Module) -> bool:
    return type(m).__module__.startswith("cnnlab.fast.")
