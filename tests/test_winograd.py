"""Winograd F(4x4, 3x3) convolution against PyTorch's direct convolution in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnlab.fast.winograd as winograd
from cnnlab.errors import CnnlabError
from cnnlab.fast.winograd import WinogradConv2d, transform_filters, winograd_inference


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref).norm() / ref.norm()).item()


@pytest.mark.parametrize("n,c,k,h,w", [(1, 5, 7, 9, 13), (3, 16, 8, 4, 4), (2, 8, 8, 1, 1), (2, 130, 40, 30, 22),
                                       (1, 3, 2, 2, 7)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_the_direct_convolution(n, c, k, h, w, bias):
    torch.manual_seed(n * 100 + c)
    conv = nn.Conv2d(c, k, 3, padding=1, bias=bias)
    x = torch.randn(n, c, h, w)
    ref = F.conv2d(x.double(), conv.weight.double(), conv.bias.double() if bias else None, padding=1)
    out = WinogradConv2d(conv)(x)
    assert out.shape == (n, k, h, w) and out.dtype == torch.float32
    assert rel_err(out, ref) < 1e-5  # float32 direct: ~2e-7; Winograd's transforms: ~2e-6
    assert out.is_contiguous()  # like nn.Conv2d's output for a contiguous input
    assert out.view(n, -1).shape == (n, k * h * w)


def test_relu_is_folded_in_and_channels_last_input_gives_the_same():
    torch.manual_seed(1)
    conv = nn.Conv2d(6, 4, 3, padding=1)
    x = torch.randn(2, 6, 10, 10)
    ref = F.relu(F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1))
    layer = WinogradConv2d(conv, relu=True)
    for inp in (x, x.contiguous(memory_format=torch.channels_last)):
        out = layer(inp)
        assert (out >= 0).all() and rel_err(out, ref) < 1e-5
        direct = F.conv2d(inp, conv.weight, conv.bias, padding=1)  # the memory format nn.Conv2d gives
        assert out.stride() == direct.stride()


@pytest.mark.parametrize("chunk_bytes", [1, 40_000, 10**9])  # bands of one tile row, of several, whole images
def test_every_way_of_chunking_gives_the_same_result(monkeypatch, chunk_bytes):
    torch.manual_seed(2)
    conv = nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(3, 8, 17, 21)
    ref = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    monkeypatch.setattr(winograd, "CHUNK_BYTES", chunk_bytes)
    assert rel_err(WinogradConv2d(conv)(x), ref) < 1e-5


def test_a_bf16_input_under_autocast_is_computed_in_fp32():
    # classify --precision bf16 --winograd: the layer before hands over bf16 activations;
    # the Winograd layer computes in its fp32 filters' precision instead of failing.
    torch.manual_seed(3)
    first, conv = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(2, 3, 12, 12)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        h = first(x)
        out = WinogradConv2d(conv)(h)
    assert h.dtype == torch.bfloat16 and out.dtype == torch.float32
    ref = F.conv2d(h.double(), conv.weight.double(), conv.bias.double(), padding=1)
    assert rel_err(out, ref) < 1e-5  # exact to fp32 for the bf16 input it was given


def test_filter_transform_of_a_centre_tap():
    """G g Gᵀ of the filter with a single 1 in the centre is the outer product of G's middle column."""
    g = torch.zeros(1, 1, 3, 3)
    g[0, 0, 1, 1] = 1
    col = torch.tensor([0, -1 / 6, 1 / 6, 1 / 12, -1 / 12, 0], dtype=torch.float64)
    torch.testing.assert_close(transform_filters(g).view(6, 6).double(), torch.outer(col, col), rtol=0, atol=1e-7)


def test_winograd_inference_converts_wide_layers_and_leaves_the_model_alone():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(32, 32, 5, padding=2), nn.Flatten(), nn.Linear(32 * 16, 4))
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        ref = model(x)
        fast = winograd_inference(model, min_in_channels=16, min_out_channels=32)
        out = fast(x)
    kinds = [type(m).__name__ for m in fast]
    assert kinds == ["Conv2d", "ReLU", "WinogradConv2d", "Identity", "MaxPool2d", "Conv2d", "Flatten", "Linear"]
    assert fast[2].relu and not fast.training
    assert [type(m).__name__ for m in model][2] == "Conv2d"  # the original is untouched
    assert rel_err(out, ref.double()) < 1e-5
    assert winograd_inference(model, min_in_channels=16, min_out_channels=32, inplace=True) is model
    assert type(model[2]).__name__ == "WinogradConv2d"


def test_works_in_and_out_of_inference_mode_but_refuses_to_train():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 6, 6)
    layer = WinogradConv2d(conv)
    winograd._LOCAL.__dict__.clear()
    with torch.inference_mode():
        inside = layer(x)  # the shared workspace is made here...
    torch.testing.assert_close(layer(x), inside)  # ...and written to again outside inference mode
    with pytest.raises(CnnlabError, match="WinogradConv2d is for inference"):
        layer(x.requires_grad_())


def test_bad_layers_and_inputs_get_one_line_errors():
    with pytest.raises(CnnlabError, match="stride 1 and padding 1"):
        WinogradConv2d(nn.Conv2d(4, 4, 3, stride=2, padding=1))
    with pytest.raises(CnnlabError, match="stride 1 and padding 1"):
        WinogradConv2d(nn.Conv2d(4, 4, 5, padding=1))
    with pytest.raises(CnnlabError, match=r"needs 3x3 filters \(K, C, 3, 3\), got \(4, 4, 5, 5\)"):
        transform_filters(torch.zeros(4, 4, 5, 5))
    with pytest.raises(CnnlabError, match=r"expected input \(N, 4, H, W\), got \(1, 3, 8, 8\)"):
        WinogradConv2d(nn.Conv2d(4, 4, 3, padding=1))(torch.zeros(1, 3, 8, 8))
    with pytest.raises(CnnlabError, match="needs a torch.nn.Module, got str"):
        winograd_inference("vgg16")
    with pytest.raises(CnnlabError, match="channel thresholds must be at least 1, got 0 and 256"):
        winograd_inference(nn.Sequential(), min_in_channels=0)


def test_vgg16_converts_its_nine_widest_layers_and_keeps_its_answers():
    from cnnlab.models import build

    torch.manual_seed(0)
    vgg = build("vgg16").eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        ref = vgg.features(x).double()
        fast = winograd_inference(vgg, inplace=True)
        out = fast.features(x)
    converted = [m for m in fast.features if isinstance(m, WinogradConv2d)]
    shapes = [(m.in_channels, m.out_channels) for m in converted]
    assert shapes == [(128, 256)] + [(256, 256)] * 2 + [(256, 512)] + [(512, 512)] * 5
    assert rel_err(out, ref) < 1e-5


def test_two_threads_calling_one_model_at_once_get_right_answers():
    """The lab calls models from several threads; a shared workspace mixed their tiles up."""
    import threading

    torch.manual_seed(4)
    conv = nn.Conv2d(8, 16, 3, padding=1)
    layer = WinogradConv2d(conv)
    inputs = [torch.randn(2, 8, 13 + i % 3, 11) for i in range(6)]
    with torch.inference_mode():
        refs = [F.conv2d(x, conv.weight, conv.bias, padding=1) for x in inputs]
    wrong: list[int] = []
    start = threading.Barrier(2)

    def work(offset: int) -> None:
        start.wait()
        with torch.inference_mode():
            for call in range(40):
                i = (call + offset) % len(inputs)
                out = layer(inputs[i])
                if rel_err(out, refs[i].double()) > 1e-5:
                    wrong.append(call)
                out.view(out.shape[0], -1)  # contiguous, as after nn.Conv2d

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
