"""Shape checks shared by ``build``, spec strings and ``summarize``.

A model that cannot take an input fails deep inside torch with a message about matrices
or kernel sizes. ``naming_failing_layer`` turns that RuntimeError into a CnnlabError that
names the layer that was running (forward pre-hooks keep a stack of running modules) and
the input it received. The check runs on the model's own device: on the meta device
(a model built under ``torch.device("meta")``) it costs no memory and no arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from cnnlab.errors import CnnlabError


def as_input_shape(value: Sequence[int]) -> tuple[int, int, int]:
    """Validate an (H, W, C) input shape (Keras order) and return it as a tuple of ints."""
    try:
        shape = tuple(int(v) for v in value)
        ok = len(shape) == 3 and all(v > 0 for v in shape) and all(int(v) == v for v in value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise CnnlabError(f"input_shape {value!r} is not (height, width, channels) of positive ints; "
                          "use e.g. (28, 28, 1)")
    return shape


def as_num_classes(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CnnlabError(f"num_classes {value!r} is not a positive int; use e.g. 10")
    return value


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model without any)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _shape_text(args: tuple) -> str:
    shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
    return ", ".join(str(s) for s in shapes) or "no tensor"


@contextmanager
def naming_failing_layer(model: nn.Module, *, what: str, fix: str) -> Iterator[None]:
    """Inside this block a RuntimeError from ``model``'s forward becomes a one-line CnnlabError:
    ``{what}: layer '{name}' ({Type}) cannot take input {shape}: {torch's reason}; {fix}``."""
    names = {m: name for name, m in model.named_modules()}
    running: list[tuple[nn.Module, tuple]] = []

    def push(module, args):
        running.append((module, args))

    def pop(module, args, output):
        running.pop()

    handles = []
    for m in names:
        handles.append(m.register_forward_pre_hook(push))
        handles.append(m.register_forward_hook(pop))
    try:
        yield
    except RuntimeError as exc:
        if not running:
            raise
        module, args = running[-1]  # the innermost module still running when it failed
        reason = (str(exc).strip().splitlines() or ["?"])[0]
        name = names[module] or "(model)"
        raise CnnlabError(f"{what}: layer '{name}' ({type(module).__name__}) cannot take input "
                          f"{_shape_text(args)}: {reason}; {fix}") from exc
    finally:
        for h in handles:
            h.remove()


def probe_output_shape(model: nn.Module, input_shape: tuple[int, int, int], *, what: str,
                       fix: str) -> tuple[int, ...]:
    """Run one zero image (1, C, H, W) through ``model`` on its own device, in eval mode and
    without gradients; return the output shape or raise a CnnlabError naming the layer."""
    h, w, c = input_shape
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, c, h, w, device=model_device(model))
        with torch.no_grad(), naming_failing_layer(model, what=what, fix=fix):
            out = model(x)
    finally:
        model.train(was_training)
    return tuple(out.shape)
