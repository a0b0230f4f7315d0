"""A run whose model is a torch.export program (model.pt2) has the per-layer views of the
original module: the same layers, filters, activations, Grad-CAM, feature visualisations and
embedding, to float precision."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab.runs.program import export_program
from cnnlab.runs.program_layers import unflattened


class Net(nn.Module):  # defined in a test: nothing can import it, so its run keeps a program
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                  nn.Conv2d(6, 5, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                  nn.Flatten(), nn.Dropout(0.3))
        self.head = nn.Linear(20, 3)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.fixture(scope="module")
def program_run(tmp_path_factory, module_colour_folder):
    """(the trained module with best.pt's weights, its run directory): 1 epoch on 36 tiny PNGs."""

    from cnnlab.runs.directory import load_checkpoint
    from cnnlab.runs.experiment import RunConfig, train_run
    from cnnlab.train.config import with_overrides

    root = tmp_path_factory.mktemp("program")
    cfg = with_overrides(RunConfig(data=f"folder:{module_colour_folder}"), epochs=1, batch_size=8, lr=0.01, verbose=0,
                         seed=3, device="cpu")
    torch.manual_seed(0)
    net = Net()
    out, _ = train_run(cfg, root / "run", model=net)
    assert (out / "model.pt2").is_file()
    net.load_state_dict(load_checkpoint(out / "best.pt"))
    return net.eval(), out


def test_a_program_run_has_the_original_layers_and_their_views(program_run):
    from cnnlab.insight.attribution import gradcam_maps
    from cnnlab.insight.embedding import embed
    from cnnlab.insight.featurevis import visualize_channels
    from cnnlab.insight.internals import activations_of, conv_layers, filters, layer_type
    from cnnlab.runs.directory import load_run

    net, out = program_run
    run = load_run(out)
    model = run.build_model()
    assert conv_layers(model) == conv_layers(net) == ["body.0", "body.3"]
    assert dict(model.named_modules())["body.3"].stride == (2, 2)
    assert layer_type(dict(model.named_modules())["body.1"]) == "BatchNorm2d"  # kept as a graph, named as before
    for name in conv_layers(net):
        np.testing.assert_array_equal(filters(model, name), filters(net, name))
    data = run.load_data()
    x = run.preprocess(data.test.images)
    got, want = activations_of(model, x, ["body.0", "body.3"]), activations_of(net, x, ["body.0", "body.3"])
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
    for layer in ("auto", "body.0"):  # backward through the unflattened graph
        got_maps, got_t, got_used, _ = gradcam_maps(model, x, "predicted", layers=[layer])
        want_maps, want_t, want_used, _ = gradcam_maps(net, x, "predicted", layers=[layer])
        assert got_used == want_used and np.array_equal(got_t, want_t)
        np.testing.assert_allclose(got_maps[got_used[0]], want_maps[want_used[0]], rtol=1e-5, atol=1e-5)
    # feature visualisation: gradients into the image, ReLUs redirected as in the module
    common = dict(layer="body.3", channels=[0, 1], steps=6, size=(10, 10), seed=1)
    np.testing.assert_allclose(visualize_channels(model, **common), visualize_channels(net, **common), atol=1e-5)
    # the embedding's penultimate features: the input of the last Linear, caught by a pre-hook
    e_got = embed(model, data.test.images, data.test.labels, preprocess=run.preprocess)
    e_want = embed(net, data.test.images, data.test.labels, preprocess=run.preprocess)
    np.testing.assert_allclose(e_got.coords, e_want.coords, rtol=1e-5, atol=1e-5)
    assert np.array_equal(e_got.predictions, e_want.predictions)
    # the lab copies models; the copy is independent and computes the same
    twin = copy.deepcopy(model)
    assert twin.body[0].weight.data_ptr() != model.body[0].weight.data_ptr()
    torch.testing.assert_close(twin(x), net(x), rtol=1e-5, atol=1e-5)


def test_the_commands_work_on_a_program_run(program_run, tmp_path, capsys):
    from cnnlab.cli import main
    from cnnlab.insight.results import ResultsOptions, collect_results
    from cnnlab.lab.analysis import info
    from cnnlab.lab.targets import RunTarget

    net, out = program_run
    assert main(["features", str(out), "--channels", "0-1", "--steps", "4", "--examples", "2",
                 "--out", str(tmp_path / "f.png")]) == 0
    assert main(["explain", str(out), "test:0", "test:1", "--out", str(tmp_path / "e.png")]) == 0
    assert "layer: body.4" in capsys.readouterr().out  # Grad-CAM at the ReLU after the last conv (issue 30)
    assert main(["explain", str(out), "test:0", "--layer", "sweep", "--method", "gradcam++"]) == 0
    assert main(["embed", str(out), "--out", str(tmp_path / "m.png")]) == 0
    results = collect_results(out, options=ResultsOptions(feature_steps=4, n_feature_channels=2), save=False)
    assert results.first_filters.layer == "body.0" and results.activations and results.decisions
    assert results.features is not None and results.embedding is not None
    # re-exported as it was (the unflattened module takes one batch, so torch.export can trace it again)
    x = torch.rand(3, 3, 10, 10)
    for fmt in ("pt2", "torchscript"):
        assert main(["export", str(out), "--format", fmt, "--out", str(tmp_path / f"net.{fmt}")]) == 0
    with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit.load; users may still load the file
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(tmp_path / "net.torchscript")
    for graph in (torch.export.load(tmp_path / "net.pt2").module(), scripted):
        torch.testing.assert_close(graph(x), net(x), rtol=1e-5, atol=1e-5)
    # the lab's overview lists the layers by their original types
    target = RunTarget(out)
    types = {layer["name"]: layer["type"] for layer in info(target)["layers"]}
    assert types["body.0"] == "Conv2d" and types["body.1"] == "BatchNorm2d" and types["head"] == "Linear"
    assert info(target)["conv_layers"] == ["body.0", "body.3"]


def test_layer_attributes_are_read_from_the_graph():
    from cnnlab.insight.internals import layer_type

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(4, 6, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2, bias=False)
            self.b = nn.Conv2d(6, 6, 3, padding="same")
            self.c = nn.Conv2d(6, 2, 3, padding=1, padding_mode="reflect")  # pads first: not one conv call
            self.act = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.act(self.c(self.b(self.a(x))))

    odd = Odd().eval()
    model = unflattened(export_program(odd, (12, 12, 4)))
    mods = dict(model.named_modules())
    for name in ("a", "b"):
        for attr in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"):
            assert getattr(mods[name], attr) == getattr(getattr(odd, name), attr), (name, attr)
        assert (mods[name].bias is None) == (getattr(odd, name).bias is None)
    assert not isinstance(mods["c"], nn.Conv2d)  # left as a plain graph module, not listed as a conv
    assert layer_type(mods["c"]) == "Conv2d (its graph is not one call cnnlab reads as that layer)"
    assert isinstance(mods["act"], nn.ReLU) and mods["act"].inplace
    x = torch.randn(2, 4, 12, 12)
    torch.testing.assert_close(model(x), odd(x))
