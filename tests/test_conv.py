"""cnnlab.scratch.conv against references, micrograd-style: same inputs, explicit tolerances.

References: scipy.signal (modes and boundaries), torch.nn.functional (stride, padding,
dilation, channels, pooling), a hand-computed 3x3 case, and the tutorial's loop.
"""

from __future__ import annotations

import ast
import itertools
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError
from cnnlab.scratch.conv import BOUNDARIES, MODES, avg_pool2d, convolve2d, correlate2d, max_pool2d, output_size

# Sums of a few dozen float64 products of O(1) values: differences are rounding only.
TOL = {"rtol": 1e-12, "atol": 1e-12}
SRC = Path(__file__).resolve().parents[1] / "src" / "cnnlab"


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- the tutorial's loop, kept here as a reference (not in the library) ------------------


def multiply_sum(patch: np.ndarray, kernel: np.ndarray) -> float:
    return float((patch * kernel).sum())


def tutorial_correlate(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Slide the kernel over every position of the image ('valid' mode), one pixel at a time."""
    kh, kw = kernel.shape[:2]
    out = np.zeros((image.shape[0] - kh + 1, image.shape[1] - kw + 1))
    for row in range(out.shape[0]):
        for col in range(out.shape[1]):
            out[row, col] = multiply_sum(image[row : row + kh, col : col + kw], kernel)
    return out


@pytest.mark.parametrize("kshape", [(3, 3), (5, 2), (3, 3, 3), (4, 2, 3)])
def test_matches_tutorial_loop(kshape):
    image = rng(1).random((11, 9, *kshape[2:]))
    kernel = rng(2).standard_normal(kshape)
    np.testing.assert_allclose(correlate2d(image, kernel, "valid"), tutorial_correlate(image, kernel), **TOL)


# --- a hand-computed case that catches a flipped kernel -------------------------------


def test_hand_computed_3x3_catches_a_flip():
    image = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=float)
    corner = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 10]], dtype=float)
    # Correlation: top-left weight on top-left pixel: 1*1 + 10*9. Convolution flips: 10*1 + 1*9.
    assert correlate2d(image, corner, "valid").tolist() == [[91.0]]
    assert convolve2d(image, corner, "valid").tolist() == [[19.0]]
    # A kernel that reads the pixel to the right shifts the image left under correlation.
    right = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0]], dtype=float)
    assert correlate2d(image, right, "same").tolist() == [[2, 3, 0], [5, 6, 0], [8, 9, 0]]
    assert convolve2d(image, right, "same").tolist() == [[0, 1, 2], [0, 4, 5], [0, 7, 8]]


# --- scipy.signal: every mode x boundary -------------------------------------------------


# Every kernel size 1..6 on each axis, odd and even, square and not: 36 shapes.
CASES = [
    (mode, boundary, kshape)
    for mode, boundary in itertools.product(MODES, BOUNDARIES)
    for kshape in itertools.product(range(1, 7), repeat=2)
]


@pytest.mark.parametrize("mode, boundary, kshape", CASES)
@pytest.mark.parametrize("ours, theirs", [(correlate2d, scipy.signal.correlate2d),
                                          (convolve2d, scipy.signal.convolve2d)],
                         ids=["correlate", "convolve"])
def test_matches_scipy(ours, theirs, mode, boundary, kshape):
    r = rng(zlib.crc32(repr((mode, boundary, kshape)).encode()))  # stable across runs
    image = r.standard_normal((13, 10))  # non-square on purpose
    kernel = r.standard_normal(kshape)
    expected = theirs(image, kernel, mode=mode, boundary=boundary, fillvalue=0.37)
    got = ours(image, kernel, mode=mode, boundary=boundary, fillvalue=0.37)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, **TOL)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("kshape", [(7, 9), (8, 6), (6, 9)])
def test_kernel_larger_than_image_matches_scipy_in_full_and_same(boundary, kshape):
    image, kernel = rng(3).random((4, 5)), rng(4).random(kshape)
    for mode in ("same", "full"):
        for ours, theirs in ((correlate2d, scipy.signal.correlate2d), (convolve2d, scipy.signal.convolve2d)):
            np.testing.assert_allclose(ours(image, kernel, mode, boundary),
                                       theirs(image, kernel, mode, boundary), **TOL)


@pytest.mark.parametrize("kshape", [(2, 2), (4, 3), (3, 6)])
def test_even_kernels_in_same_mode_match_scipy_per_channel_and_in_a_bank(kshape):
    """Colour images and banks use the same off-centre padding as a grey image with one kernel."""
    image, bank = rng(7).random((9, 8, 3)), rng(8).standard_normal((2, *kshape, 3))
    for ours, theirs in ((correlate2d, scipy.signal.correlate2d), (convolve2d, scipy.signal.convolve2d)):
        got = ours(image, bank, "same")  # (H, W, F)
        for f in range(2):
            want = sum(theirs(image[..., c], bank[f, ..., c], "same") for c in range(3))
            np.testing.assert_allclose(got[..., f], want, **TOL)


def test_even_kernel_same_mode_hand_computed():
    """A 1x2 kernel [a, b]: correlation reads (x[c], x[c+1]); convolution (x[c-1], x[c]) flipped."""
    row = np.array([[1.0, 2.0, 3.0]])
    kernel = np.array([[10.0, 1.0]])
    assert correlate2d(row, kernel, "same").tolist() == [[12.0, 23.0, 30.0]]
    assert convolve2d(row, kernel, "same").tolist() == [[10.0, 21.0, 32.0]]


def test_defaults_are_scipys():
    image, kernel = rng(5).random((6, 7)), rng(6).random((3, 2))
    np.testing.assert_allclose(correlate2d(image, kernel), scipy.signal.correlate2d(image, kernel), **TOL)


# --- torch.nn.functional.conv2d: stride, padding, dilation, channels ----------------------


def torch_conv(image: np.ndarray, bank: np.ndarray, **kwargs) -> np.ndarray:
    """(H, W, C) image and (F, kh, kw, C) bank through torch -> (H', W', F)."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None]  # (1, C, H, W)
    w = torch.from_numpy(bank).permute(0, 3, 1, 2)  # (F, C, kh, kw)
    return F.conv2d(x, w, **kwargs)[0].permute(1, 2, 0).numpy()  # (H', W', F)


@pytest.mark.parametrize("stride", [1, 2, 3, (1, 2)])
@pytest.mark.parametrize("padding", [0, 1, (2, 0)])
@pytest.mark.parametrize("dilation", [1, 2, (2, 1)])
@pytest.mark.parametrize("channels, filters", [(3, 4), (2, 1)])
def test_bank_matches_torch(stride, padding, dilation, channels, filters):
    r = rng(7)
    image = r.standard_normal((15, 12, channels))
    bank = r.standard_normal((filters, 3, 2, channels))
    expected = torch_conv(image, bank, stride=stride, padding=padding, dilation=dilation)
    got = correlate2d(image, bank, "valid", stride=stride, padding=padding, dilation=dilation)
    np.testing.assert_allclose(got, expected, **TOL)


@pytest.mark.parametrize("stride, dilation", [(1, 1), (2, 1), (1, 2), (3, 2)])
def test_grey_single_kernel_and_bank_match_torch(stride, dilation):
    r = rng(8)
    image, kernel = r.standard_normal((14, 11)), r.standard_normal((3, 3))
    padding = dilation  # keeps the size: torch's padding="same" for a 3x3 kernel
    expected = torch_conv(image[..., None], kernel[None, ..., None], stride=stride, padding=padding,
                          dilation=dilation)[..., 0]
    np.testing.assert_allclose(correlate2d(image, kernel, "same", stride=stride, dilation=dilation),
                               expected, **TOL)
    bank = r.standard_normal((5, 3, 3))  # (F, kh, kw) on a grey image
    expected = torch_conv(image[..., None], bank[..., None], stride=stride, dilation=dilation)
    np.testing.assert_allclose(correlate2d(image, bank, "valid", stride=stride, dilation=dilation),
                               expected, **TOL)


def test_colour_kernel_sums_over_channels_and_list_is_a_bank():
    r = rng(9)
    image, kernels = r.random((9, 8, 3)), [r.standard_normal((3, 3, 3)) for _ in range(2)]
    one = correlate2d(image, kernels[0], "valid")  # (H', W')
    assert one.shape == (7, 6)
    by_channel = sum(scipy.signal.correlate2d(image[..., c], kernels[0][..., c], "valid") for c in range(3))
    np.testing.assert_allclose(one, by_channel, **TOL)
    bank = correlate2d(image, kernels, "valid")  # a list of F kernels -> (H', W', F)
    assert bank.shape == (7, 6, 2)
    np.testing.assert_allclose(bank[..., 0], one, **TOL)
    np.testing.assert_allclose(bank, torch_conv(image, np.stack(kernels)), **TOL)


def test_convolve_flips_space_not_channels():
    r = rng(10)
    image, kernel = r.random((8, 9, 3)), r.standard_normal((3, 2, 3))
    np.testing.assert_allclose(convolve2d(image, kernel, "full", "symm"),
                               correlate2d(image, kernel[::-1, ::-1], "full", "symm"), **TOL)


def test_dtypes():
    image32, kernel32 = np.ones((5, 5), np.float32), np.ones((3, 3), np.float32)
    assert correlate2d(image32, kernel32, "same").dtype == np.float32
    assert correlate2d(image32, kernel32.astype(np.float64), "same").dtype == np.float64
    ints = correlate2d(np.arange(25).reshape(5, 5), np.ones((3, 3), int), "valid")
    assert ints.dtype == np.float64 and ints[0, 0] == 0 + 1 + 2 + 5 + 6 + 7 + 10 + 11 + 12


# --- pooling against torch ---------------------------------------------------------------


@pytest.mark.parametrize("size, stride", [(2, None), (3, None), (2, 1), (3, 2), ((2, 3), (1, 2))])
@pytest.mark.parametrize("channels", [None, 3])
def test_pooling_matches_torch(size, stride, channels):
    image = rng(11).standard_normal((11, 10) if channels is None else (11, 10, channels))
    x = torch.from_numpy(image[..., None] if channels is None else image).permute(2, 0, 1)[None]
    torch_stride = size if stride is None else stride
    for ours, theirs in [(max_pool2d, F.max_pool2d), (avg_pool2d, F.avg_pool2d)]:
        expected = theirs(x, size, torch_stride)[0].permute(1, 2, 0).numpy()
        if channels is None:
            expected = expected[..., 0]
        np.testing.assert_allclose(ours(image, size, stride=stride), expected, **TOL)


def test_max_pool_keeps_dtype():
    image = np.arange(16, dtype=np.uint8).reshape(4, 4)
    pooled = max_pool2d(image)
    assert pooled.dtype == np.uint8 and pooled.tolist() == [[5, 7], [13, 15]]
    assert avg_pool2d(image).tolist() == [[2.5, 4.5], [10.5, 12.5]]


# --- output_size -------------------------------------------------------------------------


@pytest.mark.parametrize("args, expected", [
    ((5, 3), 3),                  # valid: 5 - 3 + 1
    ((5, 3, 1), 5),               # same for 3x3
    ((5, 3, 2), 7),               # full for 3x3
    ((7, 3, 0, 2), 3),            # (7 - 3) // 2 + 1
    ((8, 3, 1, 2), 4),            # (8 + 2 - 3) // 2 + 1, floor
    ((10, 3, 0, 1, 2), 6),        # dilated 3-tap kernel spans 5
    ((28, 5, 2), 28),             # LeNet-style 5x5 with padding 2
    ((224, 11, 2, 4), 55),        # AlexNet conv1
    ((32, 2, 0, 2), 16),          # 2x2 pooling
])
def test_output_size(args, expected):
    assert output_size(*args) == expected


def test_output_size_is_what_correlate2d_returns():
    image = rng(12).random((17, 13))
    for k, p, s, d in itertools.product([1, 2, 3], [0, 1, 2], [1, 2, 3], [1, 2]):
        if 17 + 2 * p < d * (k - 1) + 1:
            continue
        got = correlate2d(image, np.ones((k, k)), "valid", padding=p, stride=s, dilation=d)
        assert got.shape == (output_size(17, k, p, s, d), output_size(13, k, p, s, d))


# --- bad input: CnnlabError with a message that names the value ----------------------------

IMG = np.zeros((6, 6))
K3 = np.ones((3, 3))
NAN_IMG = np.zeros((6, 6))
NAN_IMG[2, 4] = np.nan


@pytest.mark.parametrize("call, message", [
    (lambda: correlate2d(IMG[:2, :2], K3, "valid"), r"kernel of shape \(3, 3\).*larger than the image \(2, 2\)"),
    (lambda: correlate2d(np.zeros((6, 6, 3)), np.ones((3, 3, 4))), r"kernel has 4 channels.*image has 3"),
    (lambda: correlate2d(np.zeros((6, 6, 3)), K3), r"kernel of shape \(3, 3\) does not fit an image"),
    (lambda: correlate2d(NAN_IMG, K3), r"image contains NaN \(first at index \(2, 4\)\)"),
    (lambda: correlate2d(IMG, np.array([[np.nan]])), r"kernel contains NaN"),
    (lambda: correlate2d(np.zeros(6), K3), r"2-D \(H, W\) or 3-D \(H, W, C\); got shape \(6,\)"),
    (lambda: correlate2d(np.zeros((2, 6, 6, 1)), K3), r"got shape \(2, 6, 6, 1\)"),
    (lambda: correlate2d(IMG, np.ones((1, 3, 3, 1, 1))), r"kernel of shape \(1, 3, 3, 1, 1\)"),
    (lambda: correlate2d(IMG, K3, stride=0), r"stride must be an integer >= 1.*got 0"),
    (lambda: correlate2d(IMG, K3, dilation=(1, 0)), r"dilation must be .*got \(1, 0\)"),
    (lambda: correlate2d(IMG, K3, padding=-1), r"padding must be an integer >= 0.*got -1"),
    (lambda: correlate2d(IMG, K3, stride=1.5), r"stride .* got 1\.5"),
    (lambda: correlate2d(IMG, K3, mode="sam"), r"mode must be one of 'valid', 'same', 'full'; got 'sam'"),
    (lambda: correlate2d(IMG, K3, boundary="reflect"), r"boundary must be one of .*got 'reflect'"),
    (lambda: correlate2d(IMG, K3, fillvalue="0"), r"fillvalue must be a real number; got '0'"),
    (lambda: correlate2d(IMG, [np.ones((3, 3)), np.ones((2, 2))]), r"share one shape; got shapes"),
    (lambda: correlate2d(IMG.astype(complex), K3), r"real numbers; got dtype complex128"),
    (lambda: correlate2d(np.zeros((0, 4)), K3), r"image is empty"),
    (lambda: correlate2d(IMG, K3, "valid", dilation=3), r"larger than the image"),
    (lambda: max_pool2d(IMG, 7), r"pooling size \(7, 7\) is larger than the image \(6, 6\)"),
    (lambda: avg_pool2d(IMG, 2, stride=0), r"stride must be"),
    (lambda: max_pool2d(NAN_IMG), r"image contains NaN"),
    (lambda: output_size(4, 7), r"spans 7 pixels, more than the input's 4"),
    (lambda: output_size(4, 3, stride=0), r"stride must be an integer >= 1; got 0"),
    (lambda: output_size(4, 3, padding=-1), r"padding must be an integer >= 0; got -1"),
])
def test_bad_input_raises_one_line_cnnlab_error(call, message):
    with pytest.raises(CnnlabError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_scratch_imports_neither_torch_nor_scipy():
    # Checked on the source, so a package __init__ that imports torch elsewhere cannot hide it.
    for path in sorted((SRC / "scratch").glob("*.py")):
        name = path.name
        tree = ast.parse(path.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & {"torch", "scipy"}, f"{name} imports {imported & {'torch', 'scipy'}}"
