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
:func:`read_archive` reads the file once and refuses, before ``torch.export.load`` sees those
bytes, any archive that holds a name twice (Python's zip reader takes the last copy, torch's
the one its binary search lands on), a member other than the JSON graph, the JSON configs,
raw weight bytes and the small text records, a raw member no config names, a config entry
marked ``use_pickle`` or pointing outside the raw tensors, non-empty sample inputs, or a
member list that torch's own zip reader sees differently; the configs are read with torch's
reader, so the bytes checked are the bytes loaded. That closes the pickle paths we found
(docs/SECURITY.md lists them with their tests); the graph JSON itself is deserialised by
torch's own code, which we have not audited, so treat a run directory with a ``model.pt2``
like code you run: only from sources you trust.
"""

from __future__ import annotations

import io
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


_FIX = "cnnlab never writes such an archive, so it is not the program cnnlab saved; delete the run or train it again"
_REQUIRED = ("archive_format", "models/model.json", "data/weights/model_weights_config.json")
_CONFIGS = {"data/weights/model_weights_config.json": ("data/weights/", r"weight_\d+"),
            "data/constants/model_constants_config.json": ("data/constants/", r"tensor_\w+")}


def read_archive(path: Path) -> bytes:
    """The bytes of the .pt2 at ``path``, checked (:func:`check_archive_bytes`): read once, so the bytes
    that were checked are the bytes ``torch.export.load`` is given (the file may change on disk meanwhile)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CnnlabError(f"cannot read {path} ({exc.strerror or type(exc).__name__}); check the file") from None
    check_archive_bytes(data, path)
    return data


def check_archive(path: Path) -> None:
    """Refuse a .pt2 that holds anything torch.export.load would unpickle (see the module's doc)."""
    read_archive(path)


def check_archive_bytes(data: bytes, path) -> None:
    """Refuse a .pt2 archive (its bytes) unless it holds only what cnnlab's programs hold: one root folder
    with the JSON graph, the JSON configs, raw weight bytes each named by a config entry that is not pickled,
    and the small text records; no name twice (zip readers disagree on which copy counts: Python's takes
    the last, torch's miniz a binary search's pick), no unexpected member, and the same member list
    whether Python's zip reader or torch's own reader reads it. The configs are read with torch's reader:
    the bytes checked are the bytes torch.export.load will use."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CnnlabError(f"cannot read {path} as a torch.export archive ({type(exc).__name__}); it is damaged; "
                          "train the run again") from None
    folded = [n.casefold() for n in names]
    twice = sorted({n for n, f in zip(names, folded, strict=True) if folded.count(f) > 1})
    if twice:
        raise CnnlabError(f"{path} holds {twice[0]!r} more than once; {_FIX}")
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or any("/" not in n for n in names):
        raise CnnlabError(f"{path} is not a torch.export archive (not one root folder); {_FIX}")
    inner = [n.split("/", 1)[1] for n in names]
    odd = [n for n in inner if not _ALLOWED.fullmatch(n)]
    if odd:
        raise CnnlabError(f"{path} holds {odd[0]!r}, a file torch.export.load might unpickle; {_FIX}")
    missing = [n for n in _REQUIRED if n not in inner]
    if missing:
        raise CnnlabError(f"{path} has no {missing[0]!r}; it is not a torch.export program; {_FIX}")
    try:  # the reader torch.export.load uses (miniz), on the same bytes
        reader = torch._C.PyTorchFileReader(io.BytesIO(data))
        records = list(reader.get_all_records())
    except Exception as exc:  # torch raises RuntimeError for a damaged archive
        raise CnnlabError(f"torch cannot read {path} ({_first_line(exc)[:120]}); it is damaged; "
                          "train the run again") from None
    if sorted(records) != sorted(inner):
        raise CnnlabError(f"{path}: Python's and torch's zip readers see different members; {_FIX}")

    def record(name: str) -> bytes:
        try:
            return bytes(reader.get_record(name))
        except Exception as exc:  # a CRC mismatch or a damaged entry: torch raises RuntimeError
            raise CnnlabError(f"torch cannot read {name!r} in {path} ({_first_line(exc)[:120]}); it is damaged; "
                              "train the run again") from None

    if record("archive_format").strip() != b"pt2":
        raise CnnlabError(f"{path} is not a pt2 archive (archive_format is not 'pt2'); {_FIX}")
    raw = {n for n in inner if n.startswith(("data/weights/weight_", "data/constants/tensor_"))}
    named = set()
    for key, (folder, pattern) in _CONFIGS.items():
        if key not in inner:
            continue
        try:
            config = json.loads(record(key))
        except (UnicodeDecodeError, ValueError):
            raise CnnlabError(f"{path}: {key} is not JSON; {_FIX}") from None
        entries = config.get("config") if isinstance(config, dict) else None
        if not isinstance(entries, dict):
            raise CnnlabError(f"{path}: {key} has no 'config' object; {_FIX}")
        for name, meta in entries.items():
            stored = meta.get("path_name") if isinstance(meta, dict) else None
            if (not isinstance(meta, dict) or meta.get("use_pickle") is not False or not isinstance(stored, str)
                    or not re.fullmatch(pattern, stored) or folder + stored not in raw):
                raise CnnlabError(f"{path}: {name!r} is stored pickled or outside the archive's raw tensors; {_FIX}")
            named.add(folder + stored)
    unnamed = sorted(raw - named)
    if unnamed:
        raise CnnlabError(f"{path} holds {unnamed[0]!r}, which no config names (a payload to unpickle?); {_FIX}")
    try:
        json.loads(record("models/model.json"))
    except (UnicodeDecodeError, ValueError):
        raise CnnlabError(f"{path}: models/model.json is not JSON; {_FIX}") from None
    if "data/sample_inputs/model.pt" in inner and record("data/sample_inputs/model.pt"):
        raise CnnlabError(f"{path} holds sample inputs, which torch.export.load may unpickle; {_FIX}")


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else ""


def load_program(path: Path) -> nn.Module:
    """The network of a saved program, in eval mode; its ``state_dict`` keys are the original model's,
    and so are its submodules (``torch.export.unflatten``, see ``cnnlab.runs.program_layers``): forward
    hooks, Grad-CAM and the other per-layer views work on it as on the original model."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"{path} does not exist: the run's model was saved there as a torch.export program")
    data = read_archive(path)
    quiet = logging.getLogger("torch.export")  # on a damaged archive it logs a traceback before raising
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        program = torch.export.load(io.BytesIO(data))  # the very bytes that were checked
    except Exception as exc:
        raise CnnlabError(f"cannot load the torch.export program {path} ({type(exc).__name__}: "
                          f"{_first_line(exc)}); it was saved by another torch version or is damaged") from exc
    finally:
        quiet.setLevel(level)
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
