"""cnnlab.scratch.kernels: the named kernels' values and conventions, lookup and random banks."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.errors import CnnlabError
from cnnlab.scratch.conv import correlate2d
from cnnlab.scratch.kernels import ALIASES, KERNELS, get_kernel, random_kernels, resolve_name

EXPECTED_NAMES = [
    "identity", "box-blur", "gaussian-blur", "sharpen", "laplacian-4", "laplacian-8",
    "sobel-x", "sobel-y", "scharr-x", "scharr-y", "prewitt-x", "prewitt-y",
    "edge-horizontal", "edge-vertical", "emboss", "brown",
]
# The tutorials' colour filter exactly as they print it: colour channel first.
BROWN_CHANNEL_FIRST = np.array([
    [[0.13871045, 0.17157242, 0.12934428], [0.16168842, 0.20229845, 0.14835016],
     [0.135694, 0.16206263, 0.11727387]],
    [[0.04231958, 0.05471011, 0.03167877], [0.0462575, 0.06581022, 0.03104937],
     [0.04185439, 0.04734124, 0.02087744]],
    [[-0.15704881, -0.16666673, -0.16600266], [-0.17439997, -0.17757156, -0.18760149],
     [-0.15435153, -0.17037505, -0.17269668]],
])


def test_every_named_kernel_is_there_with_a_one_line_description():
    assert list(KERNELS) == EXPECTED_NAMES
    for name, kernel in KERNELS.items():
        assert kernel.description and "\n" not in kernel.description, name
        assert kernel.weights.dtype == np.float64 and not kernel.weights.flags.writeable, name
        assert kernel.weights.shape == ((3, 3, 3) if name == "brown" else (3, 3)), name
    assert set(ALIASES.values()) <= set(KERNELS)


def test_values_from_the_issue():
    assert get_kernel("laplacian-4").tolist() == [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
    assert get_kernel("laplacian-8").tolist() == [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]]
    assert get_kernel("edge-horizontal").tolist() == [[1, 1, 1], [0, 0, 0], [-1, -1, -1]]
    np.testing.assert_array_equal(get_kernel("edge-vertical"), get_kernel("edge-horizontal").T)
    for family in ("sobel", "scharr", "prewitt"):
        np.testing.assert_array_equal(get_kernel(f"{family}-y"), get_kernel(f"{family}-x").T)


def test_brown_is_the_tutorial_filter_with_colour_last():
    brown = get_kernel("brown")  # (kh, kw, C)
    np.testing.assert_array_equal(brown, BROWN_CHANNEL_FIRST.transpose(1, 2, 0))
    np.testing.assert_array_equal(brown[..., 2], BROWN_CHANNEL_FIRST[2])  # the blue channel
    # Red minus blue: a brown pixel scores high, a blue one low.
    brown_patch = np.full((3, 3, 3), [0.6, 0.4, 0.2])
    blue_patch = np.full((3, 3, 3), [0.1, 0.2, 0.8])
    assert correlate2d(brown_patch, brown, "valid")[0, 0] > 0 > correlate2d(blue_patch, brown, "valid")[0, 0]


def test_sums_blurs_keep_brightness_and_derivatives_ignore_it():
    for name in ("identity", "box-blur", "gaussian-blur", "sharpen"):
        assert get_kernel(name).sum() == pytest.approx(1.0), name
    for name in ("laplacian-4", "laplacian-8", "sobel-x", "sobel-y", "scharr-x", "scharr-y",
                 "prewitt-x", "prewitt-y", "edge-horizontal", "edge-vertical"):
        assert get_kernel(name).sum() == 0, name


def test_gradient_kernels_point_the_documented_way():
    # Under correlation (what CNNs compute), -x kernels are positive where brightness rises rightwards.
    ramp_right = np.tile(np.arange(5.0), (5, 1))  # brighter to the right
    for name in ("sobel-x", "scharr-x", "prewitt-x"):
        assert (correlate2d(ramp_right, get_kernel(name), "valid") > 0).all(), name
        assert (correlate2d(ramp_right.T, get_kernel(name.replace("-x", "-y")), "valid") > 0).all(), name
    assert (correlate2d(ramp_right.T[::-1], get_kernel("edge-horizontal"), "valid") > 0).all()  # top brighter
    assert (correlate2d(ramp_right[:, ::-1], get_kernel("edge-vertical"), "valid") > 0).all()  # left brighter
    image = np.random.default_rng(0).random((6, 7))
    np.testing.assert_allclose(correlate2d(image, get_kernel("identity"), "same"), image)


def test_get_kernel_returns_a_writable_copy():
    weights = get_kernel("sobel-x")
    weights[0, 0] = 99
    assert KERNELS["sobel-x"].weights[0, 0] == -1


@pytest.mark.parametrize("typed, name", [
    ("laplacian", "laplacian-4"), ("Sobel_X", "sobel-x"), (" edge vertical ", "edge-vertical"),
    ("gaussian", "gaussian-blur"), ("BROWN", "brown"),
])
def test_names_are_forgiving(typed, name):
    assert resolve_name(typed) == name
    np.testing.assert_array_equal(get_kernel(typed), KERNELS[name].weights)


def test_typo_suggests_and_lists_names():
    with pytest.raises(CnnlabError, match=r"unknown kernel 'sobelx'; did you mean 'sobel-x'") as info:
        get_kernel("sobelx")
    assert "known kernels: identity, box-blur" in str(info.value) and "brown" in str(info.value)
    with pytest.raises(CnnlabError, match="kernel name must be a string; got 3"):
        get_kernel(3)


def test_random_kernels():
    grey = random_kernels(9)
    assert grey.shape == (9, 3, 3) and (grey >= -1).all() and (grey <= 0).all()
    np.testing.assert_array_equal(grey, random_kernels(9, seed=0))
    assert not np.array_equal(grey, random_kernels(9, seed=1))
    assert random_kernels(2, size=5, channels=3).shape == (2, 5, 5, 3)
    # A bank goes straight into correlate2d: 9 maps.
    assert correlate2d(np.zeros((8, 8)), grey, "same").shape == (8, 8, 9)


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "n must be an integer >= 1; got 0"),
    ({"n": 2, "size": 0}, "size must be an integer >= 1; got 0"),
    ({"n": 2, "channels": 0}, "channels must be None .* got 0"),
    ({"n": 2.5}, r"n must be an integer >= 1; got 2\.5"),
])
def test_random_kernels_bad_input(kwargs, message):
    with pytest.raises(CnnlabError, match=message):
        random_kernels(**kwargs)
