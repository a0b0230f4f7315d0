"""The model zoo: parameter counts, per-layer output shapes, torchvision keys, build() errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models import MODELS, build, count_params, default_input_shape, describe

PARAMS = {
    "intro-cnn": 54_410,
    "mnist-cnn": 220_234,
    "mnist-deep": 600_810,
    "cifar-cnn": 94_890,
    "cifar-6layer": 1_250_858,
    "vgg16": 138_357_544,
    "squeezenet1_1": 1_235_496,
}

# Per-sample output shape (C, H, W) or (F,) of every layer of the seed nets, in order.
SEED_SHAPES = {
    "intro-cnn": [(32, 26, 26), (32, 26, 26), (32, 13, 13), (32, 13, 13), (5408,), (5408,), (10,)],
    "mnist-cnn": [(32, 28, 28), (32, 28, 28), (32, 14, 14), (64, 14, 14), (64, 14, 14), (64, 7, 7),
                  (3136,), (64,), (64,), (10,)],
    "mnist-deep": [(32, 26, 26), (32, 26, 26), (32, 24, 24), (32, 24, 24), (32, 12, 12), (32, 12, 12),
                   (4608,), (128,), (128,), (128,), (10,)],
    "cifar-cnn": [(32, 30, 30), (32, 30, 30), (32, 15, 15), (32, 13, 13), (32, 13, 13), (32, 6, 6),
                  (64, 4, 4), (64, 4, 4), (1024,), (64,), (64,), (10,)],
    "cifar-6layer": [(32, 32, 32), (32, 32, 32), (32, 30, 30), (32, 30, 30), (32, 15, 15), (32, 15, 15),
                     (64, 15, 15), (64, 15, 15), (64, 13, 13), (64, 13, 13), (64, 6, 6), (64, 6, 6),
                     (2304,), (512,), (512,), (512,), (10,)],
}


def meta_build(name, **kwargs):
    with torch.device("meta"):
        return build(name, **kwargs)


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_counts(name):
    assert count_params(meta_build(name)) == PARAMS[name]


@pytest.mark.parametrize("name", list(SEED_SHAPES))
def test_seed_layer_output_shapes_and_logits(name):
    torch.manual_seed(0)
    model = build(name).eval()
    assert isinstance(model, nn.Sequential)
    h, w, c = default_input_shape(name)
    x = torch.rand(2, c, h, w)
    shapes = []
    for layer in model:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == SEED_SHAPES[name]
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    assert not any(isinstance(m, nn.Softmax) for m in model.modules())  # logits, not probabilities


def test_mnist_cnn_is_the_plain_pytorch_peer_model():
    # shared/bench/peer_torch_mnist.py's model, written out: Dense(64) has no activation.
    peer = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(3136, 64), nn.Dropout(0.5), nn.Linear(64, 10))
    ours = build("mnist-cnn")
    assert str(ours) == str(peer)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in peer.state_dict().items()}


def test_vgg16_has_torchvision_keys_and_layout():
    model = meta_build("vgg16")
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    expected = [f"features.{i}.{p}" for i in convs for p in ("weight", "bias")]
    expected += [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    assert list(model.state_dict()) == expected
    assert [name for name, _ in model.named_children()] == ["features", "avgpool", "classifier"]
    assert model.avgpool.output_size == (7, 7)
    assert model.classifier[6].out_features == 1000


def test_squeezenet_has_torchvision_keys():
    model = meta_build("squeezenet1_1")
    keys = list(model.state_dict())
    assert keys[:2] == ["features.0.weight", "features.0.bias"] and keys[-2:] == ["classifier.1.weight",
                                                                                  "classifier.1.bias"]
    fires = [3, 4, 6, 7, 9, 10, 11, 12]
    assert {k for k in keys if "squeeze" in k or "expand" in k} == {
        f"features.{i}.{part}.{p}" for i in fires for part in ("squeeze", "expand1x1", "expand3x3")
        for p in ("weight", "bias")}


def test_squeezenet_forward_shape_on_a_small_input():
    model = build("squeezenet1_1", input_shape=(64, 64, 3), num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 7)


def test_build_options_change_channels_and_classes():
    model = build("intro-cnn", input_shape=(32, 32, 3), num_classes=5)
    assert model[0].in_channels == 3 and model[-1].out_features == 5
    assert model[-1].in_features == 32 * 15 * 15
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 5)


def test_every_model_has_defaults_and_a_description():
    for name in MODELS:
        assert len(default_input_shape(name)) == 3
        assert describe(name)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(CnnlabError, match=r"unknown model 'resnet50'.*intro-cnn.*vgg16.*squeezenet1_1"):
        build("resnet50")


@pytest.mark.parametrize("name, shape, layer", [
    ("mnist-cnn", (3, 3, 1), r"layer '5' \(MaxPool2d\)"),
    ("intro-cnn", (2, 2, 1), r"layer '0' \(Conv2d\)"),
    ("vgg16", (16, 16, 3), r"layer 'features.30' \(MaxPool2d\)"),
])
def test_too_small_input_names_the_layer(name, shape, layer):
    pattern = rf"{name} cannot take input_shape .*{layer}.*use a larger input_shape"
    with pytest.raises(CnnlabError, match=pattern):
        meta_build(name, input_shape=shape)  # the check on the meta device: shapes only
    if name != "vgg16":  # and on the CPU (for VGG-16 that would be seconds of random init)
        with pytest.raises(CnnlabError, match=pattern):
            build(name, input_shape=shape)


@pytest.mark.parametrize("bad", [(28, 28), (28, 28, 0), "28x28x1", (28.5, 28, 1), 3])
def test_bad_input_shape(bad):
    with pytest.raises(CnnlabError, match="input_shape"):
        build("intro-cnn", input_shape=bad)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_num_classes(bad):
    with pytest.raises(CnnlabError, match="num_classes"):
        build("intro-cnn", num_classes=bad)
