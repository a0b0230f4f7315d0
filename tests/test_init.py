"""Keras' and PyTorch's initialisation of the seed models, against the formulas and SciPy's KS test."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models import MODELS, build
from cnnlab.models.init import initialize
from cnnlab.models.seed import SEED_MODELS


def weighted(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def fans(layer: nn.Module) -> tuple[int, int]:
    """Keras' fans: channels (or units) times the kernel's area."""
    w = layer.weight
    area = math.prod(w.shape[2:]) if w.ndim > 2 else 1
    return w.shape[1] * area, w.shape[0] * area


def assert_uniform(values: torch.Tensor, bound: float) -> None:
    x = values.detach().double().flatten().numpy()
    assert abs(x).max() <= bound * (1 + 1e-6)
    # Kolmogorov-Smirnov against U(-bound, bound): a wrong bound or shape gives p ~ 0.
    assert scipy.stats.kstest(x, scipy.stats.uniform(loc=-bound, scale=2 * bound).cdf).pvalue > 1e-4


@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_seed_models_start_from_glorot_uniform_kernels_and_zero_biases(name):
    torch.manual_seed(0)
    for model in (MODELS[name](), build(name), build(name, init="keras")):
        for layer in weighted(model):
            fan_in, fan_out = fans(layer)
            if layer.weight.numel() >= 200:  # enough samples for the KS test
                assert_uniform(layer.weight, math.sqrt(6 / (fan_in + fan_out)))
            assert layer.weight.abs().max() <= math.sqrt(6 / (fan_in + fan_out))
            assert torch.count_nonzero(layer.bias) == 0


def test_cifar_cnn_bounds_by_hand():
    """First conv: fan_in 3*9 = 27, fan_out 32*9 = 288 -> sqrt(6/315); last dense 64 -> 10."""
    torch.manual_seed(1)
    model = build("cifar-cnn")
    assert fans(model[0]) == (27, 288)
    assert model[0].weight.abs().max() <= math.sqrt(6 / 315)
    assert model[0].weight.abs().max() > 0.9 * math.sqrt(6 / 315)
    assert fans(model[-1]) == (64, 10)


def test_torch_init_is_pytorchs_layer_default():
    """PyTorch: Kaiming-uniform with a=sqrt(5) is U(±1/sqrt(fan_in)), biases U(±1/sqrt(fan_in))."""
    torch.manual_seed(2)
    model = build("cifar-6layer", init="torch")
    for layer in weighted(model):
        fan_in, _ = fans(layer)
        if layer.weight.numel() >= 200:
            assert_uniform(layer.weight, 1 / math.sqrt(fan_in))
        assert layer.bias.abs().max() <= 1 / math.sqrt(fan_in) and torch.count_nonzero(layer.bias) > 0
    # Same seed, same draws as a freshly made layer of the same shape.
    torch.manual_seed(3)
    ref = nn.Conv2d(3, 32, 3)
    layer = nn.Conv2d(3, 32, 3)
    torch.manual_seed(3)
    initialize(nn.Sequential(layer), init="torch")
    torch.testing.assert_close(layer.weight, ref.weight)
    torch.testing.assert_close(layer.bias, ref.bias)


def test_spec_strings_start_like_keras_and_batch_norm_is_left_alone():
    torch.manual_seed(4)
    model = build("conv16k3-bn-relu,maxpool2,flatten,dense10", input_shape=(8, 8, 1))
    conv, bn = model[0], model[1]
    assert torch.count_nonzero(conv.bias) == 0 and conv.weight.abs().max() <= math.sqrt(6 / (9 + 144))
    assert torch.equal(bn.weight, torch.ones(16)) and torch.equal(bn.bias, torch.zeros(16))


def test_the_same_seed_gives_the_same_weights():
    torch.manual_seed(5)
    a = build("mnist-cnn").state_dict()
    torch.manual_seed(5)
    b = build("mnist-cnn").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unknown_init_is_a_one_line_error():
    with pytest.raises(CnnlabError, match=r"init must be one of 'keras', 'torch'; got 'glorot'"):
        build("mnist-cnn", init="glorot")
