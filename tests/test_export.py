"""Export: ONNX (checked in onnxruntime), .pt2 and TorchScript (reloaded without cnnlab),
safetensors (read back by predict and classify), and the one-line error for a layer that
cannot be exported. The network is a tiny mnist-cnn trained on real MNIST."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.cli import main
from cnnlab.errors import CnnlabError
from cnnlab.export import export_model, export_pretrained, export_run


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, datasets_root, mnist_dir):
    from cnnlab.runs.experiment import RunConfig, TrainConfig, train_run

    out = tmp_path_factory.mktemp("export") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_DATA", str(datasets_root))
        cfg = RunConfig(data="mnist", model="mnist-cnn", train_size=1024,
                        train=TrainConfig(epochs=1, batch_size=128, verbose=0))
        train_run(cfg, out, download=False)
        from cnnlab.runs.directory import load_run

        run = load_run(out)
        test = run.load_data().test
    return {"path": out, "run": run, "images": test.images[:300], "labels": test.labels[:300]}


def _reference(run, images: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    x = run.preprocess(images)
    with torch.no_grad():
        return x, run.build_model()(x).numpy()


def test_onnx_matches_pytorch_on_real_test_images(mnist_run, tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    path = export_run(mnist_run["path"], format="onnx", out=tmp_path / "m.onnx")
    x, expected = _reference(mnist_run["run"], mnist_run["images"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "images" and isinstance(inp.shape[0], str)  # a named, free batch dimension
    for batch in (x[:1], x[:7], x):  # any batch size, not only the traced one (2)
        got = session.run(None, {"images": batch.numpy()})[0]
        want = expected[: len(batch)]
        assert np.abs(got - want).max() < 1e-4
        assert (got.argmax(1) == want.argmax(1)).all()
    assert (expected.argmax(1) == mnist_run["labels"]).mean() > 0.5  # it is a trained network, not noise
    onnx = pytest.importorskip("onnx")
    props = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert props["cnnlab.architecture"] == "mnist-cnn" and props["cnnlab.input_shape"] == [28, 28, 1]
    assert props["cnnlab.classes"] == [str(i) for i in range(10)]


# The loader never sees cnnlab: -I drops PYTHONPATH and the current folder, and a finder
# refuses any cnnlab import (the package may still be installed in site-packages).
_RELOAD = textwrap.dedent("""
    import sys
    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "cnnlab":
                raise ImportError("cnnlab must not be imported here")
    sys.meta_path.insert(0, Refuse())
    import json, torch
    x_path, out_path, pt2_path, ts_path = sys.argv[1:]
    x = torch.load(x_path, weights_only=True)
    results = {}
    for fmt, path in (("pt2", pt2_path), ("torchscript", ts_path)):
        extra = {"cnnlab.json": ""}
        if fmt == "pt2":
            net = torch.export.load(path, extra_files=extra).module()
        else:
            net = torch.jit.load(path, _extra_files=extra)
        with torch.no_grad():
            results[fmt] = {"logits": net(x), "meta": json.loads(extra["cnnlab.json"])}
    torch.save(results, out_path)
    assert "cnnlab" not in sys.modules, sorted(m for m in sys.modules if "cnnlab" in m)
""")


def test_graphs_reload_without_cnnlab(mnist_run, tmp_path):
    paths = [str(export_run(mnist_run["path"], format=fmt, out=tmp_path / f"m.{fmt}")) for fmt in ("pt2", "torchscript")]
    x, expected = _reference(mnist_run["run"], mnist_run["images"][:5])  # batch 5: not the traced 2
    torch.save(x, tmp_path / "x.pt")
    done = subprocess.run([sys.executable, "-I", "-c", _RELOAD, str(tmp_path / "x.pt"), str(tmp_path / "out.pt"),
                           *paths], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for result in torch.load(tmp_path / "out.pt", weights_only=True).values():
        np.testing.assert_allclose(result["logits"].numpy(), expected, atol=1e-5)
        assert result["meta"]["architecture"] == "mnist-cnn" and len(result["meta"]["classes"]) == 10


def test_safetensors_round_trip_and_predict(mnist_run, tmp_path, capsys):
    pytest.importorskip("safetensors")
    from PIL import Image

    from cnnlab.export.weights import ExportedWeights, read_safetensors

    path = export_run(mnist_run["path"], format="safetensors", out=tmp_path / "m.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as open(path, "w") would make it
    state, meta = read_safetensors(path)
    assert meta["architecture"] == "mnist-cnn" and meta["classes"] == [str(i) for i in range(10)]
    assert meta["input_shape"] == [28, 28, 1] and meta["format"] == "cnnlab-weights-1"
    for k, v in mnist_run["run"].build_model().state_dict().items():
        assert torch.equal(state[k], v)
    _, expected = _reference(mnist_run["run"], mnist_run["images"][:4])
    weights = ExportedWeights(path)
    with torch.no_grad():
        np.testing.assert_array_equal(weights.build_model()(weights.preprocess(mnist_run["images"][:4])).numpy(),
                                      expected)
    image = tmp_path / "digit.png"
    Image.fromarray(mnist_run["images"][0, :, :, 0]).save(image)
    assert main(["predict", str(mnist_run["path"]), str(image)]) == 0
    from_run = capsys.readouterr().out
    assert main(["predict", str(path), str(image)]) == 0
    assert capsys.readouterr().out == from_run and "1. " in from_run
    assert main(["activations", str(path), str(image), "--layer", "0"]) == 0
    assert capsys.readouterr().out.startswith("0 (Conv2d): output (32, 28, 28)")


def test_safetensors_without_metadata_is_refused(tmp_path, capsys):
    st = pytest.importorskip("safetensors.torch")
    st.save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    (tmp_path / "d.png").write_bytes(b"")
    assert main(["predict", str(tmp_path / "plain.safetensors"), str(tmp_path / "d.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no architecture, input_shape, num_classes in its metadata" in err


class _DataDependent(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x  # a branch on the values: no single graph computes it


def _with_bad_layer() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Sequential(nn.ReLU(), _DataDependent()), nn.Flatten())


@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_unexportable_layer_is_named_in_one_line(tmp_path, fmt):
    target = tmp_path / f"m.{fmt}"
    target.write_bytes(b"previous export")
    with pytest.raises(CnnlabError) as info:
        export_model(_with_bad_layer(), target, format=fmt, input_shape=(8, 8, 1), meta={})
    message = str(info.value)
    assert message.startswith(f"cannot export layer 1.1 (_DataDependent) to {fmt}: ") and "\n" not in message
    assert target.read_bytes() == b"previous export"  # the old file stays, no temporary is left
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_winograd_layer_cannot_be_exported(tmp_path):
    from cnnlab.fast.winograd import winograd_inference
    from cnnlab.models import build

    model = winograd_inference(build("mnist-cnn"), min_in_channels=1, min_out_channels=1)
    with pytest.raises(CnnlabError, match=r"^cannot export layer 0 \(WinogradConv2d\) to pt2: "):
        export_model(model, tmp_path / "w.pt2", format="pt2", input_shape=(28, 28, 1), meta={})


def test_missing_extra_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(CnnlabError, match=r"needs safetensors, which is not installed; pip install 'cnnlab\[export\]'"):
        export_model(nn.Linear(2, 2), tmp_path / "m.safetensors", format="safetensors", input_shape=(1, 1, 2),
                     meta={})


def test_cli_export_and_its_errors(mnist_run, tmp_path, capsys):
    out = tmp_path / "m.pt2"
    assert main(["export", str(mnist_run["path"]), "--format", "pt2", "--out", str(out)]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    for argv, says in [
        (["export", "--format", "onnx"], "give either RUN_DIR or --model NAME"),
        (["export", str(mnist_run["path"]), "--model", "vgg16", "--format", "onnx"], "not both"),
        (["export", str(mnist_run["path"]), "--weights", "w.pth", "--format", "onnx"], "--weights goes with --model"),
        (["export", str(mnist_run["path"]), "--format", "pt2", "--out", str(tmp_path / "no" / "m.pt2")],
         "does not exist"),
        (["export", str(tmp_path / "nothing"), "--format", "pt2"], "does not exist"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("cnnlab export: error: ") and says in err and err.count("\n") == 1


@pytest.mark.slow
def test_squeezenet_onnx_matches_pytorch(squeeze_weights, shared_dir, tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from cnnlab.models.pretrained import load_pretrained, preprocess

    path = export_pretrained("squeezenet1_1", format="onnx", weights=squeeze_weights, out=tmp_path / "s.onnx")
    photos = [shared_dir / "images" / "cat.jpg", "grace_hopper"]
    x = torch.cat([torch.stack([preprocess(p) for p in photos]),
                   torch.from_numpy(np.load(shared_dir / "models" / "squeezenet1_1-reference.npz")["input"])])
    with torch.no_grad():
        expected = load_pretrained("squeezenet1_1", weights=squeeze_weights)(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    # The reference input scores reach ~136, where float32's spacing is 1.5e-5: a different
    # summation order moves a score by ~1e-4. So: scores to 1e-6 of the largest, and the
    # probabilities (what a user reads) within 1e-4.
    assert np.abs(got - expected).max() < 1e-6 * np.abs(expected).max()
    probs = [torch.from_numpy(a).softmax(1).numpy() for a in (got, expected)]
    assert np.abs(probs[0] - probs[1]).max() < 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert got[0].argmax() == 285  # Egyptian cat


def test_classify_reads_exported_safetensors(squeeze_weights, shared_dir, tmp_path, capsys):
    pytest.importorskip("safetensors")
    path = export_pretrained("squeezenet1_1", format="safetensors", weights=squeeze_weights, out=tmp_path / "s.safetensors")
    assert main(["classify", "--weights", str(path), str(shared_dir / "images" / "cat.jpg"), "--top", "1"]) == 0
    assert "Egyptian_cat" in capsys.readouterr().out
    assert main(["classify", "--model", "vgg16", "--weights", str(path), "grace_hopper"]) == 2
    assert "do not fit vgg16" in capsys.readouterr().err
