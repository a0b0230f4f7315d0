"""A user's own ``nn.Module`` that no import path rebuilds, kept as a ``torch.export`` program.

A run records how to rebuild its network: a zoo name, a spec string, a
``package.module:function`` path, or, for a model object made in a notebook or in
``__main__`` (``train_run(cfg, out, model=net)``), ``model.pt2`` in the run directory: the
network's graph saved with ``torch.export.save``. ``evaluate``, ``report``, ``predict`` and
the lab load it back (:func:`load_program`) and put the weights of best.pt/last.pt into it;
the loaded module has the original model's submodules (``torch.export.unflatten``), so the
per-layer views (filters, activations, feature visualisation, Grad-CAM, the embedding map)
work on it too (``cnnlab.runs.program_layers`` says which layers are recognised).

What a program cannot do: train. It is captured in eval mode (dropout off, batch norm on
its running statistics) and that is fixed in the graph; torch refuses ``.train()`` on
``ExportedProgram.module()``, and the unflattened module, which would accept it and still
compute in eval mode, refuses it here too. A run of a model object therefore resumes only when given the
object again (``resume_run(path, model=net)``); ``cnnlab train --resume`` refuses it.

Safety. ``torch.export.load`` is *not* a safe loader: PyTorch's documentation says it "uses
pickle under the hood ... Never load data from an untrusted source", and in torch 2.13
weights or constants flagged ``use_pickle``, custom and opaque objects, and sample inputs
that ``weights_only=True`` rejects are unpickled without restriction. cnnlab writes
programs without any of these (plain tensor weights, no sample inputs), and
:func:`check_archive` refuses, before ``torch.export.load`` sees it, any archive that
holds a file other than the JSON graph and configs and raw weight bytes, or whose configs
name a pickled payload or a non-tensor constant. That closes the pickle paths we found;
the graph JSON itself is deserialised by torch's own code, which we have not audited, so
treat a run directory with a ``model.pt2`` like code you run: only from sources you trust.
"""

from __future__ import annotations

import json
import logging
import re
import types
import zipfile
from pathlib import Path

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.runs.program_layers import unflattened

log = logging.getLogger(__name__)

PROGRAM = "model.pt2"

# The files torch.export.save writes for one plain-tensor model (archive root folder stripped).
_ALLOWED = re.compile(r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|"
                      r"models/model\.json|data/weights/weight_\d+|data/weights/model_weights_config\.json|"
                      r"data/constants/tensor_\w+|data/constants/model_constants_config\.json|"
                      r"data/sample_inputs/model\.pt)")


def export_program(model: nn.Module, input_shape):
    """``model`` as a ``torch.export`` program (eval mode) for inputs (N, C, H, W) of any N."""
    h, w, c = input_shape
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        program = torch.export.export(model, (torch.zeros(2, c, h, w, device=device),),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as exc:  # torch.export's errors come in many types; say it in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CnnlabError(f"cannot save {type(model).__name__} as a torch.export program ({first[:200]}); give "
                          "the model as an importable 'package.module:function' instead") from exc
    finally:
        model.train(was_training)
    program._example_inputs = None  # no sample inputs in the archive: nothing there to unpickle
    return program


def save_program(program, path: Path) -> None:
    from cnnlab import files

    files.write_with(path, lambda f: torch.export.save(program, f))


def check_archive(path: Path) -> None:
    """Refuse a .pt2 that holds anything torch.export.load would unpickle (see the module's doc)."""
    fix = "cnnlab writes none; it is not the program cnnlab saved, delete the run or train it again"
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            roots = {n.split("/", 1)[0] for n in names}
            if len(roots) != 1:
                raise CnnlabError(f"{path} is not a torch.export archive; {fix}")
            inner = {n.split("/", 1)[1]: n for n in names if "/" in n}
            odd = [n for n in inner if n and not n.endswith("/") and not _ALLOWED.fullmatch(n)]
            if odd:
                raise CnnlabError(f"{path} holds {odd[0]!r}, a file torch.export.load might unpickle; {fix}")
            for key in ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json"):
                config = json.loads(z.read(inner[key])) if key in inner else {"config": {}}
                for name, meta in config.get("config", {}).items():
                    pickled = meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(
                        ("weight_", "tensor_"))
                    if pickled:
                        raise CnnlabError(f"{path}: {name!r} is stored pickled; {fix}")
            sample = inner.get("data/sample_inputs/model.pt")
            if sample is not None and z.getinfo(sample).file_size:
                raise CnnlabError(f"{path} holds sample inputs, which torch.export.load may unpickle; {fix}")
    except CnnlabError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise CnnlabError(f"cannot read {path} ({type(exc).__name__}); it is damaged; train the run again") from None


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else ""


def load_program(path: Path) -> nn.Module:
    """The network of a saved program, in eval mode; its ``state_dict`` keys are the original model's,
    and so are its submodules (``torch.export.unflatten``, see ``cnnlab.runs.program_layers``): forward
    hooks, Grad-CAM and the other per-layer views work on it as on the original model."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"{path} does not exist: the run's model was saved there as a torch.export program")
    check_archive(path)
    try:
        program = torch.export.load(path)
    except Exception as exc:
        raise CnnlabError(f"cannot load the torch.export program {path} ({type(exc).__name__}: "
                          f"{_first_line(exc)}); it was saved by another torch version or is damaged") from exc
    try:
        module = unflattened(program)  # the original layers, for hooks and per-layer views
    except Exception as exc:  # evaluation and prediction still work on the flat graph
        log.warning("%s: torch.export.unflatten failed (%s: %s); the run has no per-layer views (filters, "
                    "activations, Grad-CAM, features, embedding), only predictions", path, type(exc).__name__,
                    _first_line(exc))
        module = program.module()
    for m in module.modules():
        m.training = False

    def train(self, mode: bool = True):
        if mode:
            raise CnnlabError(f"{path} is a torch.export program, fixed in eval mode: it cannot train")
        return self

    # The graph computes in eval mode whatever the flags say: train() refuses (torch's flat module
    # raises by itself, the unflattened one would silently not train); cnnlab's evaluation calls
    # model.eval() and model.train(was_training): both are no-ops for a program.
    module.train = types.MethodType(train, module)
    module.eval = types.MethodType(lambda self: self, module)
    return module
