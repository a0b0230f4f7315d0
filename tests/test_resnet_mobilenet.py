"""ResNet-18 and MobileNetV3-Small: torchvision's keys and sizes, the blocks checked by hand,
and weights found in torch hub's cache."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.models import MODELS, build, count_params, pretrained
from cnnlab.models.mobilenet import InvertedResidual, SqueezeExcitation, make_divisible


@pytest.mark.parametrize(("name", "params", "entries"), [
    # torchvision's documented parameter counts (its model tables), and its state-dict lengths.
    ("resnet18", 11_689_512, 122),
    ("mobilenet_v3_small", 2_542_856, 244),
])
def test_parameter_counts_match_torchvision(name, params, entries):
    with torch.device("meta"):
        model = MODELS[name]()
    assert count_params(model) == params
    assert len(model.state_dict()) == entries


def test_resnet18_keys_are_torchvisions():
    with torch.device("meta"):
        state = MODELS["resnet18"]().state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["conv1.weight"] == (64, 3, 7, 7)
    assert shapes["layer1.0.conv1.weight"] == (64, 64, 3, 3)
    assert shapes["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert shapes["layer4.1.bn2.running_var"] == (512,)
    assert shapes["fc.weight"] == (1000, 512)
    assert "layer1.0.downsample.0.weight" not in shapes  # same width, stride 1: identity shortcut
    assert sorted({k.split(".")[0] for k in shapes}) == ["bn1", "conv1", "fc", "layer1", "layer2", "layer3", "layer4"]


def test_mobilenet_v3_small_keys_are_torchvisions():
    with torch.device("meta"):
        state = MODELS["mobilenet_v3_small"]().state_dict()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["features.0.0.weight"] == (16, 3, 3, 3)
    # Block 1 has no expansion (16 -> 16): depthwise at block.0, SE at block.1 (squeeze 8).
    assert shapes["features.1.block.0.0.weight"] == (16, 1, 3, 3)
    assert shapes["features.1.block.1.fc1.weight"] == (8, 16, 1, 1)
    assert shapes["features.1.block.2.0.weight"] == (16, 16, 1, 1)
    assert shapes["features.4.block.2.fc2.bias"] == (96,)
    assert shapes["features.12.0.weight"] == (576, 96, 1, 1)
    assert shapes["classifier.0.weight"] == (1024, 576)
    assert shapes["classifier.3.weight"] == (1000, 1024)


def test_make_divisible_is_the_tf_rule():
    assert [make_divisible(v) for v in (4, 18, 22, 60, 144)] == [8, 24, 24, 64, 144]  # 18 -> 16 would lose over 10%


def test_hardswish_matches_the_formula_by_hand():
    x = torch.tensor([-4.0, -3.0, -1.0, 0.0, 1.0, 3.0, 5.0])
    # x * relu6(x + 3) / 6: 0, 0, -1*2/6, 0, 1*4/6, 3, 5
    want = torch.tensor([0.0, 0.0, -1 / 3, 0.0, 2 / 3, 3.0, 5.0])
    torch.testing.assert_close(nn.Hardswish()(x), want)


def test_squeeze_excitation_by_hand():
    se = SqueezeExcitation(2, 1)
    with torch.no_grad():
        se.fc1.weight.copy_(torch.tensor([[1.0, -1.0]]).view(1, 2, 1, 1))
        se.fc1.bias.fill_(0.5)
        se.fc2.weight.copy_(torch.tensor([2.0, -3.0]).view(2, 1, 1, 1))
        se.fc2.bias.copy_(torch.tensor([0.0, 1.0]))
    x = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.5], [1.0, 1.5]]]])  # channel means 1 and 1.25
    # squeeze: relu(1 - 1.25 + 0.5) = 0.25; gates: hardsigmoid(0.5) = 3.5/6, hardsigmoid(0.25) = 3.25/6
    want = torch.stack([x[0, 0] * 3.5 / 6, x[0, 1] * 3.25 / 6])[None]
    torch.testing.assert_close(se(x), want)


def test_inverted_residual_adds_its_input_only_when_shapes_match():
    torch.manual_seed(0)
    same = InvertedResidual(8, 3, 16, 8, True, "HS", 1).eval()
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(same(x), same.block(x) + x)
    down = InvertedResidual(8, 3, 16, 8, False, "RE", 2).eval()
    torch.testing.assert_close(down(x), down.block(x))
    assert len(down.block) == 3 and len(same.block) == 4  # expand, depthwise, [SE], project


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_builds_for_small_photos_and_other_class_counts(name):
    torch.manual_seed(0)
    model = build(name, input_shape=(64, 64, 3), num_classes=7).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)


def test_weights_in_torch_hubs_cache_are_used_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise AssertionError("downloaded although torch hub's cache has the file")

    monkeypatch.setattr(pretrained, "_urlopen", no_network)
    torch.manual_seed(0)
    model = MODELS["resnet18"]()
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(model.state_dict(), hub / "weights.pth")
    data = (hub / "weights.pth").read_bytes()
    name = f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (hub / "weights.pth").rename(hub / name)
    monkeypatch.setitem(pretrained.URLS, "resnet18", f"https://example.invalid/models/{name}")
    loaded = pretrained.load_pretrained("resnet18", progress=False)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict())


def test_offline_resnet18_names_its_url_and_weights_option(tmp_path, monkeypatch):
    import urllib.error

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def offline(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(pretrained, "_urlopen", offline)
    with pytest.raises(pretrained.CnnlabError, match=r"cannot download https://download.pytorch.org/models/"
                                                     r"resnet18-f37072fd.pth .*--weights PATH"):
        pretrained.load_pretrained("resnet18", progress=False)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvisions_own_files_load_when_present(name):
    """Runs where a user's torch hub cache holds torchvision's official file (skips elsewhere)."""
    path = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    path = path / pretrained.URLS[name].rsplit("/", 1)[1]
    if not path.is_file():
        pytest.skip(f"{path} is absent (torchvision's weights are not in torch hub's cache)")
    model = pretrained.load_pretrained(name, weights=path)
    assert count_params(model) == {"resnet18": 11_689_512, "mobilenet_v3_small": 2_542_856}[name]
