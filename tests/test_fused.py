"""Conv2d → ReLU as one oneDNN call (cnnlab.fast.fused) against the plain layers, bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab import cpu
from cnnlab.fast.fused import ConvReLU, available, fuse_conv_relu
from cnnlab.models import build

pytestmark = pytest.mark.skipif(not available(), reason="this torch has no oneDNN conv + ReLU op")
# Whole networks in bf16 only where bf16 is native: elsewhere it is emulated, 50-100x slower than
# fp32 (auto never picks it there), and ConvReLU computes the plain layers in bf16 anyway.
NATIVE_BF16 = pytest.mark.skipif(not cpu.native_bf16(), reason="bf16 is emulated on this CPU (no avx512_bf16/AMX)")


def ints(*shape, seed=0) -> torch.Tensor:
    return torch.randint(-2, 3, shape, generator=torch.Generator().manual_seed(seed)).float()


@pytest.mark.parametrize("kw", [dict(padding=1), dict(stride=2), dict(dilation=2, padding=2), dict(groups=2),
                                dict(padding=(2, 0), bias=False)])
@pytest.mark.parametrize("bf16", [False, True])
def test_conv_relu_equals_conv_then_relu(kw, bf16):
    conv = nn.Conv2d(4, 6, 3, **kw)
    with torch.no_grad():
        conv.weight.copy_(ints(*conv.weight.shape, seed=1))
        if conv.bias is not None:
            conv.bias.copy_(ints(6, seed=2))
    x = ints(2, 4, 9, 10).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        ours, ref = ConvReLU(conv)(x), F.relu(conv(x))
    assert ours.dtype == ref.dtype and torch.equal(ours, ref)


def test_bf16_fusion_proves_itself_only_where_onednn_runs_bf16(monkeypatch):
    # On an AVX2-only CPU oneDNN refuses a bf16 convolution ("bf16 path needs the cpu support
    # avx_ne_convert or avx512bw, avx512vl and avx512dq"): there ConvReLU must step aside, not raise.
    monkeypatch.setenv("CNNLAB_CPU_FEATURES", "avx2,fma")
    assert available() and not available(bf16=True)
    conv = nn.Conv2d(4, 6, 3)
    x = ints(2, 4, 9, 10)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        assert torch.equal(ConvReLU(conv)(x), F.relu(conv(x)))


def test_with_autograd_recording_it_computes_the_plain_layers_and_their_gradients():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    ours = ConvReLU(conv)(x)
    assert ours.grad_fn is not None
    (gx,) = torch.autograd.grad(ours.sum(), [x])
    (rx,) = torch.autograd.grad(F.relu(conv(x)).sum(), [x])
    assert torch.equal(gx, rx)


@NATIVE_BF16
def test_vgg16_fused_has_the_same_outputs_and_shares_the_parameters():
    model = build("vgg16").eval()
    fused = fuse_conv_relu(copy.deepcopy(model))
    assert sum(isinstance(m, ConvReLU) for m in fused.modules()) == 13  # every conv of VGG-16
    assert not any(type(m) is nn.ReLU for m in fused.features)
    assert sum(p.numel() for p in fused.parameters()) == sum(p.numel() for p in model.parameters())
    x = torch.rand(1, 3, 224, 224)
    for bf16 in (False, True):
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            assert torch.equal(fused(x), model(x))


def test_only_a_conv_directly_followed_by_a_relu_is_fused():
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                        nn.Conv2d(4, 4, 3), nn.GELU())
    conv = seq[3]
    fused = fuse_conv_relu(seq)
    assert fused is seq and seq[3].conv is conv  # in place, the same layer and parameters
    assert [type(m).__name__ for m in seq] == ["Conv2d", "BatchNorm2d", "ReLU", "ConvReLU", "Conv2d", "GELU"]


def test_classify_fuses_only_a_network_it_loaded_itself():
    from cnnlab.models.pretrained import classify

    net = build("squeezenet1_1").eval()
    before = [type(m) for m in net.modules()]
    classify([torch.zeros(32, 32, 3, dtype=torch.uint8).numpy()], model=net, top=1)
    assert [type(m) for m in net.modules()] == before


def test_cast_weights_casts_what_autocast_casts_and_keeps_the_rest():
    from cnnlab.fast.fused import cast_weights

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    cast_weights(net, torch.bfloat16)
    assert net[0].weight.dtype == net[0].bias.dtype == net[4].weight.dtype == torch.bfloat16
    assert net[1].weight.dtype == net[1].running_mean.dtype == torch.float32


@NATIVE_BF16
@pytest.mark.parametrize("name", ["vgg16", "resnet18"])
def test_for_inference_gives_autocasts_results_bit_for_bit(name):
    from cnnlab.fast.fused import for_inference

    model = build(name).eval()
    ready = for_inference(copy.deepcopy(model), "bf16", torch.device("cpu"))
    assert next(ready.parameters()).dtype == torch.bfloat16
    x = torch.rand(2, 3, 224, 224)
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        assert torch.equal(ready(x), model(x))
    plain = for_inference(copy.deepcopy(model), "fp32", torch.device("cpu"))
    assert next(plain.parameters()).dtype == torch.float32
    with torch.inference_mode():
        assert torch.equal(plain(x), model(x))


def test_bad_arguments_get_one_line_errors_naming_them():
    from cnnlab.errors import CnnlabError
    from cnnlab.fast.fused import cast_weights, for_inference

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    with pytest.raises(CnnlabError, match="precision 'fp32' or 'bf16'.*got 'auto'"):
        for_inference(net, "auto", "cpu")
    with pytest.raises(CnnlabError, match="floating torch dtype.*got torch.int8"):
        cast_weights(net, torch.int8)
    with pytest.raises(CnnlabError, match="nn.Module, got str"):
        fuse_conv_relu("vgg16")
    with pytest.raises(CnnlabError, match="needs an nn.Conv2d, got Linear"):
        ConvReLU(nn.Linear(2, 2))
