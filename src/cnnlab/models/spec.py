"""One-line architecture specs: ``conv32k3-relu,maxpool2,dropout.25,flatten,dense10``.

Grammar (case-insensitive; layers separated by ``,``; ``-`` joins an activation, ``bn`` or
``dropout`` to the layer before it, so ``conv32k3-bn-relu`` is three layers)::

    conv<F>[k<K>][s<S>][p<P>|same|valid]  Conv2d with F filters, KxK kernel (default 3),
                                          stride S (1), padding P pixels, 'same' (output
                                          size ceil(H/S), odd K only) or 'valid' (default, as Keras)
    maxpool[<K>][s<S>]                    MaxPool2d, window K (default 2), stride S (default K)
    avgpool[<K>][s<S>]                    AvgPool2d, same options
    gap                                   global average pool: (N, C, H, W) -> (N, C)
    bn                                    BatchNorm2d on maps, BatchNorm1d on flat features
    dropout<P>                            Dropout with rate P in [0, 1): dropout.25, dropout0.5
    flatten                               (N, C, H, W) -> (N, C*H*W)
    dense<U>                              Linear with U units; needs flat input (flatten or gap first)
    relu sigmoid tanh gelu silu elu leakyrelu   activations

Input channels, and the input size of the first dense layer, are inferred from
``input_shape``. Output: the model returns logits, so a trailing ``softmax`` is refused
(the loss and the prediction apply it). How the spec meets ``num_classes``:

- a spec whose last layer is ``dense<U>`` (with or without an activation) is used as
  written; ``num_classes``, when given, must equal U;
- otherwise ``flatten`` (if the output is still a map) and ``dense<num_classes>`` are
  appended, unless the output is already ``num_classes`` flat features (e.g. an all-conv
  net ending ``conv10k1,gap``). ``num_classes`` defaults to 10.

Errors quote the spec, name the bad token by position (1-based) and text, and say what
was expected: ``spec 'conv32,maxpol2', token 2 'maxpol2': unknown layer 'maxpol2'; expected ...``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models.check import as_input_shape, as_num_classes
from cnnlab.models.init import initialize

DEFAULT_INPUT_SHAPE = (28, 28, 1)
DEFAULT_NUM_CLASSES = 10

ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leakyrelu": nn.LeakyReLU,
}

# kind -> (full-match pattern, how it is written)
_SYNTAX = {
    "conv": (r"conv(?P<filters>\d+)(?:k(?P<kernel>\d+))?(?:s(?P<stride>\d+))?(?:p(?P<pad>\d+)|(?P<mode>same|valid))?",
             "conv<F>[k<K>][s<S>][p<P>|same|valid] (e.g. conv32k3, conv64k3s2p1, conv32k3same)"),
    "maxpool": (r"maxpool(?P<kernel>\d+)?(?:s(?P<stride>\d+))?", "maxpool[<K>][s<S>] (e.g. maxpool2, maxpool3s2)"),
    "avgpool": (r"avgpool(?P<kernel>\d+)?(?:s(?P<stride>\d+))?", "avgpool[<K>][s<S>] (e.g. avgpool2)"),
    "gap": (r"gap", "gap"),
    "bn": (r"bn", "bn"),
    "dropout": (r"dropout(?P<rate>\d*\.?\d+)", "dropout<P> with 0 <= P < 1 (e.g. dropout.25, dropout0.5)"),
    "flatten": (r"flatten", "flatten"),
    "dense": (r"dense(?P<units>\d+)", "dense<U> (e.g. dense10, dense128-relu)"),
    **{name: (name, name) for name in ACTIVATIONS},
}
_AFTER_DASH = {"bn", "dropout", *ACTIVATIONS}
_EXPECTED = "conv<F>[k<K>][s<S>][p<P>|same|valid], maxpool[<K>], avgpool[<K>], gap, bn, dropout<P>, " \
            "flatten, dense<U>, or " + "/".join(ACTIVATIONS)


@dataclass(frozen=True)
class SpecLayer:
    """One layer of a spec: its kind and options, and where it was written (for errors)."""

    kind: str
    options: dict
    token: str  # the comma-separated token it came from, e.g. "conv32k3-relu"
    position: int  # 1-based index of that token in the spec


class _Where:
    """Makes errors that quote the spec and point at a token by its 1-based position."""

    def __init__(self, spec: str):
        self.spec = spec

    def error(self, layer_or_pos, token: str, problem: str) -> CnnlabError:
        pos = layer_or_pos.position if isinstance(layer_or_pos, SpecLayer) else layer_or_pos
        return CnnlabError(f"spec {self.spec!r}, token {pos} {token!r}: {problem}")


def parse_spec(spec: str) -> list[SpecLayer]:
    """Parse a spec string into layers; CnnlabError names the bad token and what was expected."""
    if not isinstance(spec, str) or not spec.strip():
        raise CnnlabError(f"spec {spec!r} is empty; write layers like 'conv32k3-relu,maxpool2,flatten,dense10'")
    where = _Where(spec)
    layers = []
    for position, token in enumerate(spec.lower().split(","), start=1):
        token = token.strip()
        if not token:
            raise where.error(position, token, "empty layer; remove the extra ','")
        for j, part in enumerate(token.split("-")):
            kind = re.match(r"[a-z]*", part).group()
            if kind == "softmax":
                raise where.error(position, token, "models return logits, the loss and the prediction apply "
                                                   "softmax; drop 'softmax'")
            if kind not in _SYNTAX:
                raise where.error(position, token, f"unknown layer {part!r}; expected {_EXPECTED}")
            if j > 0 and kind not in _AFTER_DASH:
                raise where.error(position, token, f"'-' joins only an activation, bn or dropout, not {part!r}; "
                                                   "separate layers with ','")
            pattern, written = _SYNTAX[kind]
            match = re.fullmatch(pattern, part)
            if match is None:
                raise where.error(position, token, f"cannot read {part!r}; expected {written}")
            options = {k: v for k, v in match.groupdict().items() if v is not None}
            if kind == "dropout" and not 0 <= float(options["rate"]) < 1:
                raise where.error(position, token, f"dropout rate {options['rate']} is not in [0, 1); "
                                                   "write e.g. dropout.25")
            layers.append(SpecLayer(kind, options, token, position))
    return layers


class GlobalAvgPool2d(nn.Module):
    """Mean over height and width: (N, C, H, W) -> (N, C), Keras' GlobalAveragePooling2D."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def _make(layer: SpecLayer, shape: tuple[int, ...], where: _Where) -> nn.Module:
    """Build one layer for an input of per-sample ``shape``: (C, H, W) map or (F,) features."""
    o, kind, is_map = layer.options, layer.kind, len(shape) == 3
    if kind in ("conv", "maxpool", "avgpool", "gap") and not is_map:
        raise where.error(layer, layer.token, f"{kind} needs a (C, H, W) map but gets flat features {shape}; "
                                              "move it before flatten/gap")
    if kind == "conv":
        k, s = int(o.get("kernel", 3)), int(o.get("stride", 1))
        if min(int(o["filters"]), k, s) < 1:
            raise where.error(layer, layer.token, "filters, kernel and stride must be >= 1")
        if o.get("mode") == "same":
            if k % 2 == 0:
                raise where.error(layer, layer.token, f"'same' padding needs an odd kernel, got k{k}; "
                                                      f"use k{k + 1} or p<P>")
            pad = k // 2  # symmetric: output ceil(H / S) for odd K, as Keras 'same'
        else:
            pad = int(o.get("pad", 0))
        return nn.Conv2d(shape[0], int(o["filters"]), k, stride=s, padding=pad)
    if kind in ("maxpool", "avgpool"):
        k = int(o.get("kernel", 2))
        s = int(o.get("stride", k))
        if min(k, s) < 1:
            raise where.error(layer, layer.token, "window and stride must be >= 1")
        return nn.MaxPool2d(k, s) if kind == "maxpool" else nn.AvgPool2d(k, s)
    if kind == "gap":
        return GlobalAvgPool2d()
    if kind == "bn":
        return nn.BatchNorm2d(shape[0]) if is_map else nn.BatchNorm1d(shape[0])
    if kind == "dropout":
        return nn.Dropout(float(o["rate"]))
    if kind == "flatten":
        return nn.Flatten()
    if kind == "dense":
        if is_map:
            raise where.error(layer, layer.token, f"dense needs flat features but gets a (C, H, W) map {shape}; "
                                                  "put 'flatten' or 'gap' before it")
        if int(o["units"]) < 1:
            raise where.error(layer, layer.token, "dense needs at least 1 unit")
        return nn.Linear(shape[0], int(o["units"]))
    return ACTIVATIONS[kind]()


def _trace(layers: list[SpecLayer], shape: tuple[int, ...], where: _Where) -> tuple[list[nn.Module], tuple]:
    """Build the layers in order, each for the per-sample output shape of the one before, by
    running one zero sample through it (microseconds for the small nets specs are for; the
    meta device would be free of arithmetic but its first use imports torch's compiler, ~2 s).
    Returns the modules and the final per-sample output shape."""
    modules = []
    for layer in layers:
        module = _make(layer, shape, where)
        try:
            with torch.no_grad():
                out = module.eval()(torch.zeros(1, *shape))
        except RuntimeError as exc:
            reason = (str(exc).strip().splitlines() or ["?"])[0]
            raise where.error(layer, layer.token, f"cannot take input {shape}: {reason}; "
                                                  "use a larger input_shape or fewer poolings/strides") from exc
        modules.append(module.train())
        shape = tuple(out.shape[1:])
    return modules, shape


def build_spec(spec: str, *, input_shape=None, num_classes: int | None = None) -> nn.Sequential:
    """Build an ``nn.Sequential`` from a spec string (grammar in the module docstring).

    ``input_shape`` is (H, W, C), default (28, 28, 1); the model takes NCHW input and
    returns logits (N, classes). See the module docstring for how ``num_classes`` is met.
    Convolution and dense layers start from Keras' initialisation (``cnnlab.models.init``),
    since specs are written the way the Keras tutorials write their layers.
    """
    input_shape = as_input_shape(DEFAULT_INPUT_SHAPE if input_shape is None else input_shape)
    if num_classes is not None:
        num_classes = as_num_classes(num_classes)
    where = _Where(spec)
    layers = parse_spec(spec)
    h, w, c = input_shape
    modules, shape = _trace(layers, (c, h, w), where)
    dense = [layer for layer in layers if layer.kind == "dense"]
    if dense and dense[-1].position == layers[-1].position:  # the last token is a dense layer
        units = int(dense[-1].options["units"])
        if num_classes is not None and num_classes != units:
            raise where.error(dense[-1], dense[-1].token,
                              f"the spec ends in dense{units} but num_classes={num_classes}; "
                              f"write dense{num_classes} or leave num_classes out")
    else:
        k = DEFAULT_NUM_CLASSES if num_classes is None else num_classes
        if shape != (k,):
            extra = ["flatten"] * (len(shape) == 3) + [f"dense{k}"]
            head = [replace(layer, position=layer.position + layers[-1].position)
                    for layer in parse_spec(",".join(extra))]
            modules += _trace(head, shape, where)[0]
    return initialize(nn.Sequential(*modules), init="keras")
