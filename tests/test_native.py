"""cnnlab's hand-written CPU kernels (cnnlab.fast.native) against PyTorch's layers.

On small integers every sum is exact in float32 and in bf16, so the kernels must agree with
PyTorch bit for bit: values, which position of each window gets the gradient (the first
maximum, ties included), and the weight gradients."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.fast import native
from cnnlab.fast.view import FusedPool, PooledConv, training_view

CL = torch.channels_last
HAS_COMPILER = bool(os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc"))
pytestmark = pytest.mark.skipif(not HAS_COMPILER, reason="no C compiler to build cnnlab's native kernels")


def ints(*shape, seed=0, low=-2, high=3) -> torch.Tensor:
    return torch.randint(low, high, shape, generator=torch.Generator().manual_seed(seed)).float()


def autocast(bf16: bool):
    return torch.autocast("cpu", torch.bfloat16, enabled=bf16)


def test_the_kernels_build_and_load_here():
    assert native.library() is not None, native.status()
    assert native.status().startswith("on")


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize(("size", "channels", "kernel", "padding"), [
    ((28, 28), 32, (3, 3), (1, 1)),  # mnist-cnn's first layer: a compiled copy of its own
    ((12, 13), 64, (3, 3), (0, 0)),  # the other copy; odd sizes drop the last row or column
    ((9, 11), 16, (5, 5), (2, 2)),  # the generic copy
    ((10, 7), 48, (3, 2), (1, 0)),
    ((28, 28), 24, (5, 5), (0, 0)),  # mnist-fast's first layer: a copy of its own, 16 + 8 channels
    ((11, 9), 5, (3, 3), (1, 1)),  # fewer channels than one vector
    ((8, 8), 40, (4, 4), (1, 2)),  # 16 + 16 + 8, an even kernel, uneven padding
])
@pytest.mark.parametrize("relu", [False, True])
def test_pool_conv_equals_conv_pool_relu_bit_for_bit(bf16, size, channels, kernel, padding, relu):
    x = ints(3, 1, *size)
    w1, b1 = ints(channels, 1, *kernel, seed=1).requires_grad_(), ints(channels, seed=2).requires_grad_()
    w2, b2 = w1.detach().clone().requires_grad_(), b1.detach().clone().requires_grad_()
    with autocast(bf16):
        ours = native.pool_conv(x, w1, b1, padding, relu)
        ref = F.max_pool2d(F.conv2d(x, w2, b2, padding=padding), 2)
        ref = F.relu(ref) if relu else ref
    assert ours is not None and ours.dtype == ref.dtype == (torch.bfloat16 if bf16 else torch.float32)
    assert ours.is_contiguous(memory_format=CL)
    assert torch.equal(ours, ref)
    g = ints(*ours.shape, seed=3, low=-3, high=4).to(ours.dtype)
    ours.backward(g)
    ref.backward(g)
    assert w1.grad.dtype == torch.float32
    assert torch.equal(w1.grad, w2.grad) and torch.equal(b1.grad, b2.grad)


def test_pool_conv_on_real_values_is_within_rounding_of_pytorch():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 32, 3, padding=1)
    x = torch.rand(8, 1, 28, 28)
    x = x * (x > 0.5)  # MNIST's blank background: most windows tie
    for bf16, tol in ((False, 1e-6), (True, 1e-2)):
        with autocast(bf16):
            ours = native.pool_conv(x, conv.weight, conv.bias, (1, 1), True)
            ref = F.relu(F.max_pool2d(conv(x), 2))
        torch.testing.assert_close(ours.float(), ref.float(), rtol=tol, atol=tol)
        ours_g = torch.autograd.grad(ours.float().square().sum(), [conv.weight, conv.bias])
        ref_g = torch.autograd.grad(ref.float().square().sum(), [conv.weight, conv.bias])
        for a, b in zip(ours_g, ref_g, strict=True):
            torch.testing.assert_close(a, b, rtol=10 * tol, atol=10 * tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("channels", "size"), [(64, (14, 14)), (32, (7, 9)), (16, (2, 3)), (24, (12, 12)),
                                                (3, (5, 6))])
@pytest.mark.parametrize("relu", [False, True])
def test_max_pool2_equals_max_pool2d_then_relu_bit_for_bit(dtype, channels, size, relu):
    x1 = ints(4, channels, *size).to(dtype).contiguous(memory_format=CL).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    ours = native.max_pool2(x1, relu)
    ref = F.max_pool2d(x2, 2)
    ref = F.relu(ref) if relu else ref
    assert ours is not None and torch.equal(ours, ref)
    g = ints(*ours.shape, seed=4, low=-3, high=4).to(dtype)
    ours.backward(g)
    ref.backward(g)
    assert x1.grad.is_contiguous(memory_format=CL)
    assert torch.equal(x1.grad, x2.grad)


def test_max_pool2_propagates_nan_as_max_pool2d_does():
    x = ints(2, 16, 6, 6).contiguous(memory_format=CL)
    x[0, 3, 1, 2] = x[1, 5, 4, 4] = float("nan")
    ours, ref = native.max_pool2(x, relu=True), F.relu(F.max_pool2d(x, 2))
    assert torch.equal(ours.isnan(), ref.isnan()) and ours.isnan().sum() == 2
    assert torch.equal(ours.nan_to_num(), ref.nan_to_num())


def test_results_do_not_depend_on_the_thread_count():
    x, w, b = ints(16, 1, 28, 28), ints(32, 1, 3, 3, seed=1).requires_grad_(), ints(32, seed=2)
    found = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            y = native.pool_conv(x, w, b, (1, 1), True)
            found.append((y, torch.autograd.grad(y.sum(), [w])[0]))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(found[0][0], found[1][0]) and torch.equal(found[0][1], found[1][1])


def test_the_kernels_decline_what_they_do_not_compute():
    x, w = ints(2, 1, 8, 8), ints(32, 1, 3, 3)
    assert native.pool_conv(x, ints(16, 1, 9, 9), None, (0, 0), False) is None  # kernel over 7
    assert native.pool_conv(x.clone().requires_grad_(), w, None, (0, 0), False) is None  # no input gradient
    assert native.pool_conv(x.double(), w.double(), None, (0, 0), False) is None
    with torch.autocast("cpu", torch.float16):
        assert native.pool_conv(x, w, None, (0, 0), False) is None
    m = ints(2, 32, 8, 8)
    assert native.max_pool2(m, False) is None  # not channels_last: PyTorch's own kernel then
    assert native.max_pool2(m.double().contiguous(memory_format=CL), False) is None


def test_the_view_fuses_pool_and_relu_and_gives_the_plain_layers_results():
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 16, 3),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 6 * 6, 10)).to(memory_format=CL)
    view = training_view(model)
    assert [type(m).__name__ for m in view] == ["PooledConv", "Conv2d", "FusedPool", "ChannelsLastLinear"]
    assert view[0].relu and view[2].relu
    x = ints(4, 1, 28, 28) / 2
    with torch.no_grad():
        torch.testing.assert_close(view(x), model(x))
    params = list(model.parameters())
    ours = torch.autograd.grad(view(x).square().sum(), params)
    ref = torch.autograd.grad(model(x).square().sum(), params)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b)


def test_hand_built_fused_pool_refuses_a_pool_it_would_compute_wrongly():
    from cnnlab.errors import CnnlabError
    with pytest.raises(CnnlabError, match="2x2, stride-2 MaxPool2d"):
        FusedPool(nn.MaxPool2d(3))
    with pytest.raises(CnnlabError, match="2x2, stride-2 MaxPool2d"):
        FusedPool(nn.MaxPool2d(2, ceil_mode=True))
    # and PooledConv still computes, with PyTorch, what the kernel declines (an input gradient)
    conv = nn.Conv2d(1, 32, 3)
    x = torch.rand(2, 1, 9, 9, requires_grad=True)
    torch.testing.assert_close(PooledConv(conv, relu=True)(x), F.relu(F.max_pool2d(conv(x), 2)))


def _status_in(tmp_path, **env) -> str:
    code = ("from cnnlab.fast import native, view; import torch; from torch import nn\n"
            "print(native.status())\n"
            "torch.manual_seed(0)\n"
            "m = nn.Sequential(nn.Conv2d(1, 16, 3), nn.MaxPool2d(2), nn.ReLU())\n"
            "x = torch.rand(2, 1, 10, 10)\n"
            "print(torch.allclose(view.training_view(m)(x), m(x), atol=1e-6))\n")  # float sums: order
    full = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), **env}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_built_once_per_cpu_and_compiler_then_reused(tmp_path):
    assert _status_in(tmp_path).splitlines() == [native.status(), "True"]
    built = list((tmp_path / "cnnlab" / "native").glob("kernels-*.so"))
    assert len(built) == 1 and not list(built[0].parent.glob("*.tmp"))
    stamp = built[0].stat().st_mtime_ns
    _status_in(tmp_path)
    assert built[0].stat().st_mtime_ns == stamp  # the second process loaded it, did not rebuild


def test_without_a_working_compiler_or_when_switched_off_pytorch_computes(tmp_path):
    out = _status_in(tmp_path, CC="false").splitlines()
    assert out[0].startswith("off (false could not build native.c") and out[1] == "True"
    out = _status_in(tmp_path, CNNLAB_NATIVE="0").splitlines()
    assert out == ["off (CNNLAB_NATIVE=0)", "True"]
