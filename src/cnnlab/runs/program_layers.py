"""A saved ``torch.export`` program's layers back, so hooks and named layers work on it.

``ExportedProgram.module()`` is one flat graph: the original submodules are gone (only the
parameters keep their dotted names), so forward hooks have nothing to hang on and cnnlab's
per-layer views (filters, activations, feature visualisation, Grad-CAM, the embedding's
last ``nn.Linear``) found no layer. ``torch.export.unflatten`` rebuilds the submodule tree
of the original model (``body``, ``body.0``, ``head``...), each submodule an
``InterpreterModule`` that runs its own piece of the graph when called, so hooks fire and
gradients flow through it as through the original (the same aten ops, the same numbers).

What unflatten does not give back is the class: every submodule is an ``InterpreterModule``
(its original type survives only as a string, ``type_name()``), and cnnlab finds layers by
``isinstance(m, nn.Conv2d)``, reads ``out_channels``, ``stride``, ``padding``... So
:func:`restore_layer_types` makes the submodules whose original class was one of the
``torch.nn`` classes below an instance of that class again, in place (a subclass of both,
so the graph still runs the forward pass), with the attributes read from the one aten call
its graph holds. A submodule whose graph is not that single call (a Conv2d with
``padding_mode="reflect"`` also pads; a user's own subclass of ``nn.Conv2d``) keeps the
plain ``InterpreterModule`` type and is not listed as a layer of that kind.
"""

from __future__ import annotations

import copy
import logging
import warnings

import torch
from torch import nn

log = logging.getLogger(__name__)

_aten = torch.ops.aten
# The graph op each class's forward leaves behind, and how to read its attributes from it.
_CONV = (_aten.conv2d.default, _aten.conv2d.padding)
_TYPES: dict[str, tuple[type[nn.Module], tuple]] = {
    "torch.nn.modules.conv.Conv2d": (nn.Conv2d, _CONV),
    "torch.nn.modules.linear.Linear": (nn.Linear, (_aten.linear.default,)),
    "torch.nn.modules.activation.ReLU": (nn.ReLU, (_aten.relu.default, _aten.relu_.default)),
    "torch.nn.modules.container.Sequential": (nn.Sequential, ()),
    "torch.nn.modules.container.ModuleList": (nn.ModuleList, ()),
}
_CLASSES: dict[tuple[type, type], type] = {}
# node.meta keys holding the export trace's FakeTensors (symbolic batch size): copy.deepcopy of
# the module fails on them ("Cannot call numel() on tensor with symbolic sizes").
_FAKE_META = ("val", "example_value", "tensor_meta", "unbacked_bindings")


class ProgramModule(torch.export.UnflattenedModule):
    """An unflattened program that ``copy.deepcopy`` can copy (the lab copies models).

    Its call signature (``module_call_graph``: pytree specs, never changed after unflatten) is
    shared by the copies rather than copied: copying torch 2.13's deprecated ``LeafSpec``
    raises its FutureWarning, an error under ``-W error``."""

    def forward(self, x):  # cnnlab's programs take one batch (N, C, H, W); torch's signature is (*args, **kwargs)
        return super().forward(x)

    def __deepcopy__(self, memo):
        memo[id(self.module_call_graph)] = self.module_call_graph
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__setstate__(copy.deepcopy(self.__dict__, memo))
        return new


def unflattened(program) -> ProgramModule:
    """``torch.export.unflatten(program)`` with its layer types restored and its graphs' trace
    values dropped (so the lab can deepcopy it); the forward pass is the program's."""
    with warnings.catch_warnings():  # torch 2.13's own code trips its LeafSpec deprecation; nothing to act on
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        module = torch.export.unflatten(program)
    for m in module.modules():
        for graph in (getattr(m, "graph", None), getattr(m.__dict__.get("graph_module"), "graph", None)):
            for node in graph.nodes if isinstance(graph, torch.fx.Graph) else ():
                for key in _FAKE_META:
                    node.meta.pop(key, None)
    restore_layer_types(module)
    module.__class__ = ProgramModule
    return module


def restore_layer_types(module: nn.Module) -> list[str]:
    """Give each submodule of an unflattened program its original ``torch.nn`` class back
    where that is known (see the module doc); returns the names of those that stay untyped."""
    untyped = []
    for name, m in module.named_modules():
        type_name = m.type_name() if hasattr(m, "type_name") else None
        if not name or type_name not in _TYPES:
            continue
        cls, ops = _TYPES[type_name]
        attrs = _attributes(m, cls, ops)
        if attrs is None:
            object.__setattr__(m, "_cnnlab_unread", True)  # cnnlab.insight.internals.layer_type says so
            untyped.append(name)
            continue
        key = (type(m), cls)
        if key not in _CLASSES:  # a subclass of both: isinstance(m, cls) holds, the graph still runs forward
            _CLASSES[key] = type(cls.__name__, key, {"__module__": __name__, "__doc__": (
                f"A submodule of a torch.export program that was a {cls.__name__}: its graph runs the forward "
                "pass, the attributes were read from that graph.")})
        m.__class__ = _CLASSES[key]
        for attr, value in attrs.items():
            object.__setattr__(m, attr, value)
        if cls in (nn.Conv2d, nn.Linear) and "bias" not in m._parameters:  # bias=False: None, as torch has it
            m.register_parameter("bias", None)
    if untyped:
        log.info("left as plain graph modules (their graph is not one %s call): %s", "/".join(_TYPES), untyped)
    return untyped


def _attributes(m: nn.Module, cls: type, ops: tuple) -> dict | None:
    """The attributes of ``cls`` for submodule ``m``, or None when its graph is not one call of ``ops``."""
    if not ops:  # a container: its children are the layers
        return {}
    calls = [n for n in m.graph.nodes if n.op == "call_function"]
    if len(calls) != 1 or calls[0].target not in ops:
        return None
    node = calls[0]
    schema = node.target._schema.arguments
    args = {a.name: node.args[i] if i < len(node.args) else node.kwargs.get(a.name, a.default_value)
            for i, a in enumerate(schema)}
    weight = getattr(m, "weight", None)
    if cls is nn.ReLU:
        return {"inplace": node.target is _aten.relu_.default}
    if not isinstance(weight, torch.Tensor) or not _is_attr(args.get("weight"), "weight") or not (
            args.get("bias") is None or _is_attr(args["bias"], "bias")):
        return None
    if cls is nn.Linear:
        return {"in_features": weight.shape[1], "out_features": weight.shape[0]}
    groups = int(args["groups"])
    padding = args["padding"] if isinstance(args["padding"], str) else _pair(args["padding"])
    return {"in_channels": weight.shape[1] * groups, "out_channels": weight.shape[0],
            "kernel_size": tuple(weight.shape[2:]), "stride": _pair(args["stride"]), "padding": padding,
            "dilation": _pair(args["dilation"]), "groups": groups, "padding_mode": "zeros", "transposed": False,
            "output_padding": (0, 0)}


def _is_attr(arg, name: str) -> bool:
    return isinstance(arg, torch.fx.Node) and arg.op == "get_attr" and arg.target == name


def _pair(value) -> tuple[int, int]:
    values = [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    return (values[0], values[0]) if len(values) == 1 else tuple(values)
