"""The training view: the same values and gradients as the model, by a faster arrangement."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.fast import native
from cnnlab.fast.view import ChannelsLastLinear, PooledConv, _FirstMaxOf4, training_view
from cnnlab.models import build

CL = torch.channels_last


def grads(out: torch.Tensor, tensors: list[torch.Tensor], seed: int = 0) -> list[torch.Tensor]:
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return list(torch.autograd.grad(out, tensors, g))


@pytest.fixture
def no_native(monkeypatch):
    """The view as on a machine without cnnlab's native kernels (no C compiler)."""
    monkeypatch.setattr(native, "library", lambda: None)


def test_relu_pool_pairs_are_swapped_and_the_model_is_untouched(no_native):
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Sequential(nn.ReLU(), nn.MaxPool2d(2)))
    view = training_view(model)
    assert isinstance(view[1], nn.MaxPool2d) and isinstance(view[2], nn.ReLU)
    assert view[0] is model[0]  # parameters are shared, not copied
    assert isinstance(model[1], nn.ReLU)  # the user's model is untouched
    x = torch.randn(2, 2, 14, 14)
    assert torch.equal(view(x), model(x))


def test_max_of_four_routes_each_gradient_like_max_pool2d_including_ties():
    # Small integers: most 2x2 windows hold ties, in every arrangement. max_pool2d sends a
    # window's gradient to its first maximum in row-major order; the phase max must too, exactly.
    g = torch.Generator().manual_seed(0)
    m = torch.randint(-2, 3, (3, 5, 8, 10), generator=g).float().requires_grad_()
    stacked = torch.cat([m[:, :, a::2, b::2] for a in (0, 1) for b in (0, 1)])  # (4N, C, 4, 5)
    ours = _FirstMaxOf4.apply(stacked)
    ref = F.max_pool2d(m, 2)
    assert torch.equal(ours, ref)
    (g_ours,), (g_ref,) = grads(ours, [m]), grads(ref, [m])
    assert torch.equal(g_ours, g_ref)
    assert (g_ref != 0).sum() == ref.numel()  # one position per window got it, ties included


@pytest.mark.parametrize(("size", "kernel", "padding", "bias"), [
    ((28, 28), 3, 1, True),  # mnist-cnn's first layer
    ((27, 30), 3, 0, True),  # odd output sizes: the pool drops the last row, as max_pool2d does
    ((16, 16), 5, 2, False),
    ((12, 9), (3, 2), (1, 0), True),
])
@pytest.mark.parametrize("fmt", [CL, torch.contiguous_format])
def test_pooled_conv_equals_conv_then_pool_with_gradients(size, kernel, padding, bias, fmt):
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 6, kernel, padding=padding, bias=bias).to(memory_format=fmt)
    pool = nn.MaxPool2d(2)
    x = torch.rand(3, 1, *size)
    x = (x * (x > 0.5)).to(memory_format=fmt).requires_grad_()  # a blank background, as MNIST's: ties
    fast = PooledConv(conv)
    ours, ref = fast(x), pool(conv(x))
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    params = [x, conv.weight] + ([conv.bias] if bias else [])
    for a, b in zip(grads(ours, params), grads(ref, params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # evaluation takes the path without masks
        torch.testing.assert_close(fast(x), ref.detach(), rtol=1e-5, atol=1e-6)


def test_with_the_native_kernel_pooled_conv_takes_kernels_up_to_7():
    if native.library() is None:
        pytest.skip(f"native kernels: {native.status()}")
    pool = nn.MaxPool2d(2)
    for conv in (nn.Conv2d(1, 16, 3), nn.Conv2d(1, 32, 5), nn.Conv2d(1, 48, (7, 3)), nn.Conv2d(1, 24, 5, bias=False)):
        assert PooledConv.applies(conv, pool)
    assert not PooledConv.applies(nn.Conv2d(1, 16, 9), pool)  # nor the four-position form: measured slower
    assert not PooledConv.applies(nn.Conv2d(3, 16, 3), pool)


def test_pooled_conv_only_takes_what_it_computes_exactly_and_faster(no_native):
    pool = nn.MaxPool2d(2)
    assert PooledConv.applies(nn.Conv2d(1, 32, 3, padding=1), pool)  # mnist-cnn's first layer
    assert PooledConv.applies(nn.Conv2d(1, 64, 3), pool)
    # measured slower: wider inputs, fewer outputs, larger kernels
    assert not PooledConv.applies(nn.Conv2d(3, 32, 3), pool)
    assert not PooledConv.applies(nn.Conv2d(1, 16, 3), pool)
    assert not PooledConv.applies(nn.Conv2d(1, 32, 5), pool)
    # not computed this way
    assert not PooledConv.applies(nn.Conv2d(1, 32, 3, stride=2), pool)
    assert not PooledConv.applies(nn.Conv2d(1, 32, 3, dilation=2), pool)
    assert not PooledConv.applies(nn.Conv2d(1, 32, 3, padding="same"), pool)
    assert not PooledConv.applies(nn.Conv2d(1, 32, 3, padding=1, padding_mode="reflect"), pool)
    assert not PooledConv.applies(nn.Conv2d(1, 32, 3), nn.MaxPool2d(3))
    assert not PooledConv.applies(nn.Conv2d(1, 32, 3), nn.MaxPool2d(2, stride=1))
    assert not PooledConv.applies(nn.Conv2d(1, 32, 3), nn.MaxPool2d(2, ceil_mode=True))
    conv = nn.Conv2d(1, 4, 3)
    x = torch.rand(1, 8, 8)  # an unbatched image goes the plain way
    torch.testing.assert_close(PooledConv(conv)(x), F.max_pool2d(conv(x), 2))


def test_the_view_layers_refuse_layers_they_cannot_compute():
    # built by hand, a wrong layer would be computed wrongly, so it is refused by name
    with pytest.raises(CnnlabError, match=r"one-channel, stride-1.*got Conv2d\(3, 8"):
        PooledConv(nn.Conv2d(3, 8, 3))
    with pytest.raises(CnnlabError, match="got Conv2d"):
        PooledConv(nn.Conv2d(1, 8, 3, stride=2))
    with pytest.raises(CnnlabError, match="got Conv2d"):
        PooledConv(nn.Conv2d(1, 8, 3, padding="same"))
    with pytest.raises(CnnlabError, match="needs an nn.Linear, got Conv2d"):
        ChannelsLastLinear(nn.Conv2d(1, 8, 3))


@pytest.mark.parametrize("fmt", [CL, torch.contiguous_format])
def test_channels_last_linear_equals_flatten_then_linear(fmt):
    torch.manual_seed(0)
    lin = nn.Linear(5 * 3 * 4, 7)
    x = torch.randn(6, 5, 3, 4).to(memory_format=fmt).requires_grad_()
    ours, ref = ChannelsLastLinear(lin)(x), lin(torch.flatten(x, 1))
    torch.testing.assert_close(ours, ref)
    params = [x, lin.weight, lin.bias]
    found = grads(ours, params)
    for a, b in zip(found, grads(ref, params), strict=True):
        torch.testing.assert_close(a, b)
    gx = found[0]
    if fmt is CL:  # the gradient comes back in the map's own layout
        assert gx.is_contiguous(memory_format=CL) and not gx.is_contiguous()


def test_mnist_cnn_view_trains_as_the_model_does():
    torch.manual_seed(0)
    model = build("mnist-cnn").to(memory_format=CL)
    view = training_view(model)
    fused = native.library() is not None  # then PooledConv takes the ReLU and a FusedPool the second pool
    assert [type(m).__name__ for m in view][:2] == ["PooledConv", "Conv2d" if fused else "ReLU"]
    assert view[0].conv is model[0] and any(isinstance(m, ChannelsLastLinear) for m in view)
    x = torch.rand(16, 1, 28, 28)
    x = (x * (x > 0.6)).to(memory_format=CL)
    y = torch.arange(16) % 10
    model.eval()
    torch.testing.assert_close(view(x), model(x), rtol=1e-5, atol=1e-5)
    model.train()
    found = []
    for net in (model, view):
        torch.manual_seed(1)  # the same dropout masks
        found.append(torch.autograd.grad(F.cross_entropy(net(x), y), list(model.parameters())))
    for a, b in zip(*found, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_fit_trains_through_the_view_as_through_the_plain_layers(monkeypatch):
    from cnnlab.fast import view
    from cnnlab.train.loop import fit

    g = torch.Generator().manual_seed(0)
    x = torch.rand(96, 1, 28, 28, generator=g)
    x, y = x * (x > 0.6), torch.randint(0, 10, (96,), generator=g)

    def losses() -> list[float]:
        torch.manual_seed(0)
        history = fit(build("mnist-cnn"), x, y, epochs=3, batch_size=32, precision="fp32", verbose=0)
        return [e["loss"] for e in history.epochs]

    fast = losses()
    monkeypatch.setattr(view.PooledConv, "applies", staticmethod(lambda conv, pool, **kw: False))
    monkeypatch.setattr(view, "_is_flatten", lambda m: False)
    monkeypatch.setattr(native, "library", lambda: None)
    assert [type(m).__name__ for m in view.training_view(build("mnist-cnn"))][:3] == ["Conv2d", "MaxPool2d", "ReLU"]
    plain = losses()
    assert fast == pytest.approx(plain, rel=1e-4)
    assert fast[-1] < fast[0]  # and it learns
