"""Spec strings: grammar, inferred sizes, how the spec meets num_classes, errors at the token."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models import build, count_params
from cnnlab.models.spec import GlobalAvgPool2d, build_spec, parse_spec


def out_shape(model, input_shape):
    h, w, c = input_shape
    with torch.no_grad():
        return tuple(model.eval()(torch.rand(2, c, h, w)).shape)


@pytest.mark.parametrize("spec, shape, params", [
    ("conv32k3-relu,maxpool2,dropout.25,flatten,dropout.5,dense10", (28, 28, 1), 54_410),  # intro-cnn
    ("conv32k3same-relu,maxpool2,conv64k3same-relu,maxpool2,flatten,dense64,dropout.5,dense10",
     (28, 28, 1), 220_234),  # mnist-cnn
    ("conv32k3-relu,conv32k3-relu,maxpool2,dropout.25,flatten,dense128-relu,dropout.5,dense10",
     (28, 28, 1), 600_810),  # mnist-deep
    ("conv32-relu,maxpool,conv32-relu,maxpool,conv64-relu,flatten,dense64-relu,dense10", (32, 32, 3), 94_890),
])
def test_specs_reproduce_the_tutorial_nets(spec, shape, params):
    model = build(spec, input_shape=shape, num_classes=10)
    assert count_params(model) == params
    assert out_shape(model, shape) == (2, 10)


def test_layer_options():
    model = build_spec("conv8k5s2p2-bn-relu,maxpool3s2,avgpool2,conv4k1valid,gap,bn,dense6-tanh",
                       input_shape=(40, 40, 3))
    conv = model[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding) == \
        (3, 8, (5, 5), (2, 2), (2, 2))
    assert isinstance(model[1], nn.BatchNorm2d) and isinstance(model[2], nn.ReLU)
    assert (model[3].kernel_size, model[3].stride) == (3, 2)
    assert isinstance(model[4], nn.AvgPool2d)
    assert isinstance(model[6], GlobalAvgPool2d) and isinstance(model[7], nn.BatchNorm1d)
    assert model[7].num_features == 4
    assert isinstance(model[-1], nn.Tanh) and model[-2].out_features == 6
    assert out_shape(model, (40, 40, 3)) == (2, 6)


@pytest.mark.parametrize("size, stride, expected", [(28, 1, 28), (28, 2, 14), (27, 2, 14)])
def test_same_padding_gives_ceil_of_size_over_stride(size, stride, expected):
    model = build_spec(f"conv4k3s{stride}same", input_shape=(size, size, 1), num_classes=4 * expected ** 2)
    assert model(torch.rand(1, 1, size, size)).shape == (1, 4 * expected ** 2)
    assert model[0](torch.rand(1, 1, size, size)).shape[-1] == expected


def test_case_and_spaces_are_tolerated_and_dropout_forms():
    layers = parse_spec(" Conv32K3-ReLU , dropout0.5,dropout.25, Dense10 ")
    assert [layer.kind for layer in layers] == ["conv", "relu", "dropout", "dropout", "dense"]
    assert [layer.position for layer in layers] == [1, 1, 2, 3, 4]


def test_spec_ending_in_dense_is_used_as_written():
    model = build_spec("flatten,dense7")
    assert model[-1].out_features == 7 and len(model) == 2
    assert build_spec("flatten,dense7-relu", num_classes=7)[-2].out_features == 7


def test_spec_without_final_dense_gets_a_classifier_appended():
    model = build_spec("conv8k3-relu,maxpool2", num_classes=5)
    assert isinstance(model[-2], nn.Flatten) and model[-1].out_features == 5
    assert model[-1].in_features == 8 * 13 * 13
    assert build_spec("conv8k3-relu,gap")[-1].out_features == 10  # default 10 classes, no flatten needed
    assert not isinstance(build_spec("conv8k3-relu,gap")[-2], nn.Flatten)


def test_all_conv_spec_already_giving_the_classes_is_kept():
    model = build_spec("conv10k1,gap")
    assert len(model) == 2 and out_shape(model, (28, 28, 1)) == (2, 10)


@pytest.mark.parametrize("spec, pattern", [
    ("conv32k3-relu,maxpol2,flatten",
     r"^spec 'conv32k3-relu,maxpol2,flatten', token 2 'maxpol2': unknown layer 'maxpol2'; expected conv<F>.*dense<U>"),
    ("conv32x3,flatten", r"token 1 'conv32x3': cannot read 'conv32x3'; expected conv<F>\[k<K>\]"),
    ("conv32-maxpool2", r"token 1 'conv32-maxpool2': '-' joins only an activation, bn or dropout"),
    ("conv32,,dense10", r"token 2 '': empty layer"),
    ("conv32,dense10", r"token 2 'dense10': dense needs flat features but gets a \(C, H, W\) map \(32, 26, 26\)"),
    ("flatten,conv8,dense10", r"token 2 'conv8': conv needs a \(C, H, W\) map but gets flat features"),
    ("flatten,dense10-softmax", r"token 2 'dense10-softmax': models return logits"),
    ("dropout1.5,flatten", r"dropout rate 1.5 is not in \[0, 1\)"),
    ("conv8k4same", r"'same' padding needs an odd kernel, got k4"),
    ("conv8,maxpool2,conv8,maxpool2,conv8,maxpool2,conv8",
     r"token 7 'conv8': cannot take input \(8, 1, 1\): .*Kernel size.*use a larger input_shape"),
    ("flatten,dense5", r"token 2 'dense5': the spec ends in dense5 but num_classes=10"),
    ("", r"spec '' is empty"),
])
def test_errors_name_the_token_and_what_was_expected(spec, pattern):
    with pytest.raises(CnnlabError, match=pattern):
        build_spec(spec, input_shape=(28, 28, 1), num_classes=10)


def test_build_dispatches_specs_and_rejects_unknown_words():
    assert isinstance(build("flatten,dense10"), nn.Sequential)
    assert len(build("flatten", input_shape=(2, 2, 4))) == 2  # one-token spec, dense10 appended
    with pytest.raises(CnnlabError, match="unknown model 'resnet'"):
        build("resnet")
