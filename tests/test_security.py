"""A model file is data, never code (docs/SECURITY.md): crafted .pt2 archives and .safetensors
files, each trying one way to make cnnlab run code, are refused in one line before anything
runs; the payloads here would create a marker file if they ran, and the tests check it is absent."""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.cli import main
from cnnlab.errors import CnnlabError

# --------------------------------------------------------------------------- .pt2 archives


class _Payload:
    """Unpickling this creates the folder ``marker``: proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> Path:
    from cnnlab.runs.program import export_program, save_program

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    path = tmp_path_factory.mktemp("pt2") / "model.pt2"
    save_program(export_program(net, (8, 8, 1)), path)
    return path


def _members(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as z:
        return [(n, z.read(n)) for n in z.namelist()]


def _write(path: Path, members: list[tuple[str, bytes]]) -> Path:
    import warnings

    with warnings.catch_warnings():  # zipfile warns about a duplicate name: writing one is the point
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(path, "w") as z:
            for name, data in members:
                z.writestr(name, data)
    return path


def _config_name(members) -> str:
    return next(n for n, _ in members if n.endswith("data/weights/model_weights_config.json"))


def _pickled_config(members, marker: Path) -> tuple[bytes, bytes, str]:
    """(the weights config with its first entry marked use_pickle and pointing at weight_99, the
    payload, the payload's member name)."""
    name = _config_name(members)
    config = json.loads(dict(members)[name])
    first = next(iter(config["config"]))
    config["config"][first].update(use_pickle=True, path_name="weight_99")
    payload_name = name.replace("model_weights_config.json", "weight_99")
    return json.dumps(config).encode(), pickle.dumps(_Payload(marker)), payload_name


def _refused(path: Path, match: str, marker: Path) -> None:
    from cnnlab.runs.program import load_program

    with pytest.raises(CnnlabError, match=match) as info:
        load_program(path)
    assert "\n" not in str(info.value)
    assert not marker.exists(), "the pickle ran"


def test_the_program_cnnlab_writes_loads_and_matches_its_network(program):
    from cnnlab.runs.program import load_program

    module = load_program(program)
    x = torch.rand(5, 1, 8, 8)
    flat = torch.export.load(program).module()
    torch.testing.assert_close(module(x), flat(x), rtol=0, atol=0)


def test_duplicate_entries_are_refused_whichever_copy_a_reader_takes(program, tmp_path):
    members = _members(program)
    name = _config_name(members)
    marker = tmp_path / "ran"
    bad, payload, payload_name = _pickled_config(members, marker)
    good = dict(members)[name]
    others = [(n, d) for n, d in members if n != name]
    # Every place for the pickled copy before the benign one: in some of them torch's reader (a binary
    # search in miniz) takes the pickled copy while Python's zipfile takes the last, benign one.
    torch_took_the_pickled_copy = False
    for k in range(len(others) + 1):
        crafted = [*others[:k], (name, bad), *others[k:], (payload_name, payload), (name, good)]
        path = _write(tmp_path / f"dup{k}.pt2", crafted)
        reader = torch._C.PyTorchFileReader(io.BytesIO(path.read_bytes()))
        torch_took_the_pickled_copy |= b"weight_99" in bytes(reader.get_record(name.split("/", 1)[1]))
        _refused(path, "more than once", marker)
    assert torch_took_the_pickled_copy  # the attack is real for at least one layout
    # A name that differs only in case is the same file to miniz's case-insensitive lookup.
    upper = [*members, (name.replace("model_weights_config", "Model_Weights_Config"), bad)]
    _refused(_write(tmp_path / "case.pt2", upper), "more than once", marker)


def test_a_pickled_weight_an_unnamed_payload_and_odd_members_are_refused(program, tmp_path):
    members = _members(program)
    name = _config_name(members)
    root = name.split("/", 1)[0]
    marker = tmp_path / "ran"
    bad, payload, payload_name = _pickled_config(members, marker)
    cases = {
        "use_pickle": ([(n, bad if n == name else d) for n, d in members] + [(payload_name, payload)],
                       "stored pickled"),
        "orphan payload": ([*members, (payload_name, payload)], "weight_99.*no config names"),
        "opaque object": ([*members, (f"{root}/data/constants/opaque_obj_0", payload)], "opaque_obj_0.*might unpickle"),
        "pickle file": ([*members, (f"{root}/data.pkl", payload)], "data.pkl"),
        "sample inputs": ([(n, payload if n.endswith("sample_inputs/model.pt") else d) for n, d in members],
                          "sample inputs"),
        "second root": ([*members, ("other/archive_format", b"pt2")], "one root folder"),
        "root file": ([*members, ("version", b"1")], "one root folder"),
        "config not JSON": ([(n, payload if n == name else d) for n, d in members], "not JSON"),
        "no graph": ([(n, d) for n, d in members if not n.endswith("models/model.json")], "models/model.json"),
        "path outside": ([(n, bad.replace(b"weight_99", b"../../x") if n == name else d) for n, d in members],
                         "stored pickled or outside"),
    }
    for label, (crafted, match) in cases.items():
        _refused(_write(tmp_path / f"{label}.pt2", crafted), match, marker)


def test_a_damaged_or_missing_archive_is_one_line(program, tmp_path):
    from cnnlab.runs.program import load_program

    cut = tmp_path / "cut.pt2"
    cut.write_bytes(program.read_bytes()[:-200])
    with pytest.raises(CnnlabError, match="damaged"):
        load_program(cut)
    with pytest.raises(CnnlabError, match="does not exist"):
        load_program(tmp_path / "none.pt2")


def test_the_checked_bytes_are_the_loaded_bytes(program, tmp_path, monkeypatch):
    """The file is read once: swapping it on disk after the check cannot slip a payload past it."""
    import cnnlab.runs.program as prog

    path = tmp_path / "model.pt2"
    path.write_bytes(program.read_bytes())
    members = _members(program)
    marker = tmp_path / "ran"
    bad, payload, payload_name = _pickled_config(members, marker)
    evil = _write(tmp_path / "evil.pt2", [(n, bad if n == _config_name(members) else d) for n, d in members]
                  + [(payload_name, payload)]).read_bytes()
    checked = prog.check_archive_bytes

    def check_then_swap(data, where):
        checked(data, where)
        path.write_bytes(evil)  # an attacker wins the race right after the check

    monkeypatch.setattr(prog, "check_archive_bytes", check_then_swap)
    prog.load_program(path)
    assert not marker.exists()


# --------------------------------------------------------------------------- .safetensors

SPEC = "conv4k3-relu,flatten,dense3"


@pytest.fixture()
def weights_file(tmp_path) -> Path:
    pytest.importorskip("safetensors")
    from cnnlab.export import export_model
    from cnnlab.models import build

    torch.manual_seed(0)
    model = build(SPEC, input_shape=(8, 8, 1), num_classes=3)
    return export_model(model, tmp_path / "w.safetensors", format="safetensors", input_shape=(8, 8, 1),
                        meta={"architecture": SPEC, "num_classes": 3, "classes": ["a", "b", "c"]})


def _with_meta(src: Path, out: Path, **changes) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = {**f.metadata(), **changes}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(tensors, str(out), metadata=meta)
    return out


@pytest.fixture()
def user_package(tmp_path, monkeypatch) -> Path:
    """An importable module whose import and builder each leave a marker file."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mynets.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(tmp_path / 'imported')!r}).touch()\n"
        "from cnnlab.models import build\n"
        "def make_net(input_shape, num_classes):\n"
        f"    Path({str(tmp_path / 'called')!r}).touch()\n"
        f"    return build({SPEC!r}, input_shape=input_shape, num_classes=num_classes)\n")
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.delitem(sys.modules, "mynets", raising=False)  # not another test's mynets, cached
    return tmp_path


@pytest.fixture()
def image(tmp_path) -> Path:
    from PIL import Image

    path = tmp_path / "x.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 3).save(path)
    return path


def test_a_weights_file_naming_code_is_refused_before_any_import(weights_file, user_package, image, capsys):
    from cnnlab.export.weights import ExportedWeights

    for arch in ("mynets:make_net", "tempfile:mkdtemp", " os:getcwd"):
        crafted = _with_meta(weights_file, user_package / "crafted.safetensors", architecture=arch)
        with pytest.raises(CnnlabError, match="never names code to import.*--model"):
            ExportedWeights(crafted)
        for cmd in ("predict", "activations"):
            assert main([cmd, str(crafted), str(image)]) == 2
            err = capsys.readouterr().err
            assert err.startswith("cnnlab") and err.count("\n") == 1 and "--model package.module:function" in err
    assert not (user_package / "imported").exists() and not (user_package / "called").exists()


def test_your_own_builder_comes_from_the_command_line(weights_file, user_package, image, capsys):
    crafted = _with_meta(weights_file, user_package / "mine.safetensors", architecture="mynets:make_net")
    assert main(["predict", str(weights_file), str(image)]) == 0
    from_spec = capsys.readouterr().out
    assert main(["predict", str(crafted), str(image), "--model", "mynets:make_net"]) == 0
    assert capsys.readouterr().out == from_spec.replace(str(weights_file), str(crafted))
    assert (user_package / "called").exists()  # the builder the user named on the command line ran
    assert main(["predict", str(weights_file.parent), str(image), "--model", SPEC]) == 2
    assert "--model goes with a .safetensors file" in capsys.readouterr().err


@pytest.mark.parametrize(("key", "value", "match"), [
    ("input_shape", "[8, 8", "'input_shape' is not valid JSON"),
    ("classes", "[" * 100_000, "'classes' is not valid JSON"),
    ("num_classes", "-3", "num_classes -3 is not a positive int"),
    ("input_shape", "[8, 8, 0]", "input_shape"),
    ("classes", '["a", "b"]', "not a list of 3 names"),
    ("mean", '["x"]', "'mean' is not a list"),
    ("std", "[NaN]", "'std' is not a list"),
    ("std", "[0]", "'std' holds a zero"),
])
def test_malformed_metadata_is_one_line(weights_file, tmp_path, image, capsys, key, value, match):
    crafted = _with_meta(weights_file, tmp_path / "bad.safetensors", **{key: value})
    assert main(["predict", str(crafted), str(image)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cnnlab") and err.count("\n") == 1 and match in err, err
