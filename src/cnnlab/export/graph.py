"""The network as a graph other tools run: ONNX, torch.export (.pt2) and TorchScript.

Every format is traced from a batch of two zero images with the batch dimension left
free (``batch``), so the file takes any batch size. Export runs on the CPU in eval mode.
When tracing fails, ``unexportable_layer`` retries each layer on its own, innermost first,
and the error names the first one that cannot be exported and why, in one line.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.extras import require
from cnnlab.files import write_with

INPUT_NAME, OUTPUT_NAME = "images", "logits"
log = logging.getLogger(__name__)
META_FILE = "cnnlab.json"  # the metadata inside a .pt2 / TorchScript archive


@contextlib.contextmanager
def _quiet_torch():
    """Silence what torch's exporters say to the developers of torch, not to ours.

    torch 2.13's exporters warn about their own internals (a deprecated pytree call, the
    TorchScript deprecation for a format the user asked for by name) and log tracebacks of
    attempts they retry another way; none of it is actionable here, and a test suite that
    turns warnings into errors would fail on it; on failure torch.export also prints the
    partial graph to stderr. A ``TracerWarning`` is different: the trace
    baked in a data-dependent branch and would be wrong for other inputs, so it is an error.
    """
    loggers = [logging.getLogger(n) for n in ["torch", *logging.root.manager.loggerDict] if n.startswith("torch")]
    levels = [lg.level for lg in loggers]
    stderr = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(stderr):
        warnings.simplefilter("always")  # recorded, then logged at DEBUG below, not shown
        warnings.simplefilter("error", torch.jit.TracerWarning)
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
            # Kept for whoever debugs an export: logging.getLogger("cnnlab.export").setLevel(logging.DEBUG).
            for w in caught:
                log.debug("torch warned during export: %s: %s", w.category.__name__, w.message)
            if stderr.getvalue().strip():
                log.debug("torch printed during export:\n%s", stderr.getvalue())


def _batch_dim(n_inputs: int) -> tuple:
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    return tuple({0: batch} for _ in range(n_inputs))


def _export_program(model: nn.Module, args: tuple):
    return torch.export.export(model, args, dynamic_shapes=_batch_dim(len(args)), strict=False)


def _onnx_program(model: nn.Module, args: tuple):
    require("onnxscript", extra="export", purpose="ONNX export")
    n = len(args)
    return torch.onnx.export(model, args, None, dynamo=True, verbose=False, optimize=True,
                             input_names=[INPUT_NAME] if n == 1 else None,
                             output_names=[OUTPUT_NAME] if n == 1 else None,
                             dynamic_shapes=_batch_dim(n))


def _trace(model: nn.Module, args: tuple):
    return torch.jit.trace(model, args, check_trace=False)


def _write_onnx(model: nn.Module, example: torch.Tensor, path: Path, meta: dict) -> None:
    program = _onnx_program(model, (example,))
    # Readers find the classes and the preprocessing without cnnlab (onnx.load(...).metadata_props).
    program.model.metadata_props.update({f"cnnlab.{k}": json.dumps(v) for k, v in meta.items()})
    write_with(path, lambda f: f.write(program.model_proto.SerializeToString()))


def _write_pt2(model: nn.Module, example: torch.Tensor, path: Path, meta: dict) -> None:
    program = _export_program(model, (example,))
    write_with(path, lambda f: torch.export.save(program, f, extra_files={META_FILE: json.dumps(meta)}))


def _write_torchscript(model: nn.Module, example: torch.Tensor, path: Path, meta: dict) -> None:
    traced = _trace(model, (example,))
    write_with(path, lambda f: torch.jit.save(traced, f, _extra_files={META_FILE: json.dumps(meta)}))


WRITERS: dict[str, Callable] = {"onnx": _write_onnx, "pt2": _write_pt2, "torchscript": _write_torchscript}
# A per-layer check for each format: the same exporter, on one layer.
_CHECKS: dict[str, Callable] = {"onnx": _onnx_program, "pt2": _export_program, "torchscript": _trace}


def write_graph(model: nn.Module, *, format: str, input_shape, path: Path, meta: dict) -> None:
    """Write ``model`` (eval mode, CPU) as ``format`` to ``path``; ``input_shape`` is (H, W, C)."""
    h, w, c = input_shape
    model = model.eval().to("cpu")
    example = torch.zeros(2, c, h, w)  # (N, C, H, W); two images, so the batch cannot be specialised to 1
    with _quiet_torch(), torch.no_grad():
        try:
            WRITERS[format](model, example, Path(path), meta)
        except CnnlabError:
            raise
        except Exception as exc:
            raise CnnlabError(_why(model, example, format, exc)) from exc


def _first_line(exc: BaseException) -> str:
    # A warning raised as an error inside C code arrives as "... returned a result with an
    # exception set"; the warning itself is the reason.
    while isinstance(exc, SystemError) and (exc.__cause__ or exc.__context__):
        exc = exc.__cause__ or exc.__context__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch colours its messages
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(("Failed to ", "Next steps"))]
    line = next((ln for ln in lines if ln.startswith("<class ")), lines[0] if lines else type(exc).__name__)
    line = re.sub(r"^<class '[\w.]+'>:\s*", "", line)
    line = re.sub(r" (object )?at 0x[0-9a-f]+|, \d{6,}\)", "", line)  # addresses say nothing to the reader
    return line[:200] + ("..." if len(line) > 200 else "")


def _why(model: nn.Module, example: torch.Tensor, format: str, exc: BaseException) -> str:
    found = unexportable_layer(model, example, _CHECKS[format])
    if found is None:
        return f"cannot export {type(model).__name__} to {format}: {_first_line(exc)}"
    name, module, reason = found
    return f"cannot export layer {name} ({type(module).__name__}) to {format}: {reason}"


def unexportable_layer(model: nn.Module, example: torch.Tensor, check: Callable
                       ) -> tuple[str, nn.Module, str] | None:
    """(name, module, reason) of the innermost layer that ``check(module, inputs)`` rejects.

    Each layer's own input is recorded by one forward pass of ``example``; layers are tried
    leaves first (in the order they ran), then the containers above them, deepest first,
    so a container is named only when its own code (not a child's) is the problem.
    """
    inputs: dict[str, tuple] = {}
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items()}

    def record(module, args):
        inputs.setdefault(names[id(module)], tuple(a.detach() for a in args if isinstance(a, torch.Tensor)))

    hooks = [m.register_forward_pre_hook(record) for n, m in modules.items() if n]
    try:
        model(example)
    except Exception as exc:  # the plain forward pass fails: that is the reason
        return None if not inputs else (list(inputs)[-1], modules[list(inputs)[-1]], _first_line(exc))
    finally:
        for hook in hooks:
            hook.remove()
    leaves = [n for n in inputs if not any(True for _ in modules[n].children())]
    containers = sorted((n for n in inputs if n not in leaves), key=lambda n: -n.count("."))
    for name in leaves + containers:
        try:
            check(modules[name], inputs[name])
        except Exception as exc:
            return name, modules[name], _first_line(exc)
    return None
