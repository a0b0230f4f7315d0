"""The Keras-style model table: layer, output shape, parameters, multiply-adds.

``summarize(model, input_shape=(28, 28, 1))`` runs one zero image through the model with
forward hooks and records, for each module down to ``depth``, its output shape and its
parameter count. Output shapes are printed in Keras order, channels last with a ``None``
batch, e.g. ``(None, 26, 26, 32)``, so they read like the tutorials' ``model.summary()``;
the model itself still runs NCHW. Works on the meta device (a model built under
``torch.device("meta")`` is summarised without memory or arithmetic).

Mult-Adds counts the multiply-accumulates of Conv2d and Linear layers for one
image (the cost that dominates a CNN); pooling, activations and normalisation count 0.
Non-trainable params are parameters with ``requires_grad=False``; buffers such as batch
norm's running statistics are not parameters in PyTorch and are not counted (Keras counts
them as non-trainable).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models.check import as_input_shape, model_device, naming_failing_layer


@dataclass(frozen=True)
class SummaryRow:
    """One module call: qualified name (``features.0``), type, nesting depth (1 = child of
    the model), output shape in Keras order with ``None`` batch, parameters, mult-adds."""

    name: str
    type: str
    depth: int
    output_shape: tuple
    params: int
    mult_adds: int

    @property
    def label(self) -> str:
        return f"{'  ' * (self.depth - 1)}{self.name} ({self.type})"


@dataclass(frozen=True)
class Summary:
    """The table (``rows``) and totals; ``str(summary)`` renders it like Keras."""

    model_name: str
    input_shape: tuple[int, int, int]
    rows: tuple[SummaryRow, ...]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    total_mult_adds: int

    def __str__(self) -> str:
        head = ("Layer (type)", "Output Shape", "Param #", "Mult-Adds")
        cells = [(r.label, _shape_text(r.output_shape), f"{r.params:,}", f"{r.mult_adds:,}") for r in self.rows]
        widths = [max([len(head[i]) + 2, *(len(c[i]) + 2 for c in cells)]) for i in range(4)]
        widths[0], widths[1] = max(widths[0], 29), max(widths[1], 22)

        def line(c):
            return f" {c[0]:<{widths[0]}}{c[1]:<{widths[1]}}{c[2]:>{widths[2]}}{c[3]:>{widths[3]}}"

        rule = sum(widths) + 1
        h, w, c = self.input_shape
        return "\n".join([
            f'Model: "{self.model_name}"  input (None, {h}, {w}, {c}); shapes are channels-last as in Keras, '
            "the model runs NCHW",
            "_" * rule, line(head), "=" * rule,
            *(line(c) for c in cells),
            "=" * rule,
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.non_trainable_params:,}",
            f"Total mult-adds: {self.total_mult_adds:,} ({_human(self.total_mult_adds)})",
            "_" * rule,
        ])


def _human(n: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def _shape_text(shape: tuple) -> str:
    if shape and isinstance(shape[0], tuple):  # several outputs
        return ", ".join(_shape_text(s) for s in shape)
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def _keras_shape(t: torch.Tensor) -> tuple:
    """(N, C, H, W) -> (None, H, W, C); (N, C, L) -> (None, L, C); (N, F) -> (None, F)."""
    rest = tuple(t.shape[1:])
    if len(rest) >= 2:
        rest = rest[1:] + rest[:1]
    return (None, *rest)


def _output_shape(output) -> tuple:
    if isinstance(output, torch.Tensor):
        return _keras_shape(output)
    if isinstance(output, (tuple, list)):
        return tuple(_keras_shape(o) for o in output if isinstance(o, torch.Tensor))
    return ()


def _mult_adds(module: nn.Module, output) -> int:
    """Multiply-accumulates of one call for one image (the batch is 1)."""
    if isinstance(module, nn.Conv2d) and isinstance(output, torch.Tensor):
        # Each output element is a dot product over (C_in / groups) x kh x kw inputs.
        return output.numel() * module.weight.shape[1:].numel()
    if isinstance(module, nn.Linear) and isinstance(output, torch.Tensor):
        return output.numel() * module.in_features
    return 0


def summarize(model: nn.Module, input_shape=None, *, depth: int = 1, name: str | None = None,
              input_size=None) -> Summary:
    """Summarise ``model`` for one image: rows for modules down to ``depth`` levels
    (1 = the model's direct children), in call order. The model runs in eval mode without
    gradients on its own device (meta works) and its train/eval mode is restored after.

    The image's shape as Keras writes it, ``(H, W, C)`` (default ``(28, 28, 1)``), as PyTorch
    does, ``(C, H, W)`` (told apart by the model's first convolution's channels), or as torchinfo
    takes it, ``input_size=(N, C, H, W)`` (the batch size is ignored: rows are per image).
    Raises CnnlabError naming the layer if the model cannot take ``input_shape``."""
    if not isinstance(model, nn.Module):
        raise CnnlabError(f"model {type(model).__name__} is not a torch.nn.Module; build one with cnnlab.models.build")
    if input_size is not None and input_shape is not None:
        raise CnnlabError("pass input_shape (H, W, C) or input_size (N, C, H, W), not both")
    input_shape = _image_shape(model, input_size if input_size is not None else input_shape)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise CnnlabError(f"depth {depth!r} is not a positive int; use 1 for the model's layers, 2 for theirs")
    names = {m: n for n, m in model.named_modules()}
    calls: list[dict] = []  # one per module call, in the order calls start
    running: list[dict] = []  # calls in progress: a leaf's mult-adds go to every enclosing call
    seen: set[nn.Module] = set()

    def pre(module, args):
        call = {"module": module, "mult_adds": 0, "params": 0, "shape": ()}
        if module not in seen:  # a module called twice shows its parameters once
            seen.add(module)
            call["params"] = sum(p.numel() for p in module.parameters())
        calls.append(call)
        running.append(call)

    def post(module, args, output):
        call = running.pop()
        call["shape"] = _output_shape(output)
        ops = _mult_adds(module, output)
        for c in (call, *running):
            c["mult_adds"] += ops

    handles = [h for m in names for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    h, w, c = input_shape
    was_training = model.training
    try:
        model.eval()
        x = torch.zeros(1, c, h, w, device=model_device(model))
        with torch.no_grad(), naming_failing_layer(
            model, what=f"{type(model).__name__} cannot take input_shape {input_shape}",
            fix="pass the input_shape the model was built for",
        ):
            model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()

    def level(call) -> int:
        n = names[call["module"]]
        return 0 if n == "" else n.count(".") + 1

    rows = tuple(
        SummaryRow(names[k["module"]] or type(model).__name__, type(k["module"]).__name__, max(level(k), 1),
                   k["shape"], k["params"], k["mult_adds"])
        for k in calls
        if 1 <= level(k) <= depth or (level(k) == 0 and len(names) == 1)  # a bare layer is its own row
    )
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    root = calls[0]["mult_adds"] if calls else 0
    return Summary(name or type(model).__name__, input_shape, rows, total, trainable, total - trainable, root)


def _image_shape(model: nn.Module, value) -> tuple[int, int, int]:
    """(H, W, C) from Keras' (H, W, C), PyTorch's (C, H, W) or torchinfo's (N, C, H, W)."""
    if value is None:
        return (28, 28, 1)
    if isinstance(value, torch.Size) or (isinstance(value, (tuple, list)) and len(value) == 4):
        shape = tuple(value)
        if len(shape) == 4:  # (N, C, H, W): the batch does not change a per-image summary
            return as_input_shape((shape[2], shape[3], shape[1]))
        value = shape
    hwc = as_input_shape(value)
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear))), None)
    channels = getattr(first, "in_channels", None)
    if channels is not None and hwc[2] != channels and hwc[0] == channels:
        return (hwc[1], hwc[2], hwc[0])  # (C, H, W): the first convolution takes C channels
    if channels is None and hwc[2] > 4 and hwc[0] <= 4:  # no convolution to ask: (3, 32, 32) is (C, H, W)
        return (hwc[1], hwc[2], hwc[0])
    return hwc
