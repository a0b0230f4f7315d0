"""cnnlab.scratch.images: reading every common kind of file, writing, tiling, samples, the gallery."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnlab.errors import CnnlabError
from cnnlab.scratch.conv import correlate2d
from cnnlab.scratch.images import (
    apply_kernel,
    gallery,
    grace_hopper,
    load_image,
    read_image,
    rgb_to_grey,
    tile,
    write_image,
)
from cnnlab.scratch.kernels import get_kernel

RNG = np.random.default_rng(0)
RGB8 = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
GREY8 = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
ALPHA8 = RNG.integers(0, 256, (5, 7), dtype=np.uint8)


def save(path, array):
    Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize("suffix", [".png", ".bmp"])
def test_lossless_8bit_grey_and_rgb(tmp_path, suffix):
    grey = read_image(save(tmp_path / f"g{suffix}", GREY8))
    assert grey.shape == (5, 7) and grey.dtype == np.float64
    np.testing.assert_array_equal(grey, GREY8 / 255)
    rgb = read_image(save(tmp_path / f"c{suffix}", RGB8))
    np.testing.assert_array_equal(rgb, RGB8 / 255)


def test_16bit_grey_png(tmp_path):
    values = np.array([[0, 1, 257], [32768, 65534, 65535]], dtype=np.uint16)
    got = read_image(save(tmp_path / "g16.png", values))
    np.testing.assert_array_equal(got, values / 65535)


def test_alpha_dropped_unless_asked(tmp_path):
    rgba = save(tmp_path / "rgba.png", np.dstack([RGB8, ALPHA8]))
    np.testing.assert_array_equal(read_image(rgba), RGB8 / 255)
    np.testing.assert_array_equal(read_image(rgba, alpha=True), np.dstack([RGB8, ALPHA8]) / 255)
    la = save(tmp_path / "la.png", np.dstack([GREY8, ALPHA8]))
    with Image.open(la) as im:
        assert im.mode == "LA"
    np.testing.assert_array_equal(read_image(la), GREY8 / 255)
    assert read_image(la, alpha=True).shape == (5, 7, 2)
    # A file without alpha gets an opaque one when alpha is asked for.
    opaque = read_image(save(tmp_path / "rgb.png", RGB8), alpha=True)
    assert opaque.shape == (5, 7, 4) and (opaque[..., 3] == 1).all()


def test_palette_with_transparency_and_bilevel(tmp_path):
    palette = Image.fromarray(RGB8).quantize(8)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png", transparency=0)
    got = read_image(tmp_path / "p.png", alpha=True)
    assert got.shape == (5, 7, 4) and set(np.unique(got[..., 3])) <= {0.0, 1.0}
    Image.fromarray(GREY8 > 128).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), (GREY8 > 128).astype(float))


def test_jpeg_and_forced_colour(tmp_path):
    smooth = np.linspace(0, 255, 16 * 16 * 3).reshape(16, 16, 3).astype(np.uint8)
    path = save(tmp_path / "c.jpg", smooth)
    rgb = read_image(path)
    assert rgb.shape == (16, 16, 3) and np.abs(rgb - smooth / 255).max() < 0.06  # lossy
    grey = read_image(path, colour="grey")
    np.testing.assert_allclose(grey, rgb_to_grey(rgb))
    forced = read_image(save(tmp_path / "g.png", GREY8), colour="rgb")
    assert forced.shape == (5, 7, 3) and (forced[..., 0] == forced[..., 2]).all()


def test_rgb_to_grey_matches_pillow():
    ours = rgb_to_grey(RGB8 / 255)
    pillow = np.asarray(Image.fromarray(RGB8).convert("L")) / 255
    assert np.abs(ours - pillow).max() <= 1 / 255 + 1e-12  # Pillow rounds to 8 bits


def test_grace_hopper_sample():
    image = grace_hopper()
    assert image.shape == (600, 512, 3) and image.dtype == np.float64
    assert 0 <= image.min() and image.max() <= 1
    np.testing.assert_array_equal(load_image("grace_hopper", colour="grey"), grace_hopper(colour="grey"))


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.png", r"image file '.*missing\.png' not found; give a PNG"),
    (lambda d: d, r"is a directory"),
    (lambda d: (d / "notes.png").write_text("not an image") and d / "notes.png",
     r"'.*notes\.png' is not a readable image"),
])
def test_read_errors_name_the_file(tmp_path, make, message):
    with pytest.raises(CnnlabError, match=message) as info:
        load_image(make(tmp_path))
    assert "\n" not in str(info.value)


def test_bad_colour_option(tmp_path):
    with pytest.raises(CnnlabError, match="colour must be one of 'auto', 'grey', 'rgb'; got 'gray'"):
        read_image(save(tmp_path / "g.png", GREY8), colour="gray")


def test_write_round_trip_and_scaling(tmp_path):
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "u.png", RGB8)), RGB8 / 255)
    floats = np.array([[-0.5, 0.0, 0.5], [1.0, 2.0, 0.25]])
    clipped = read_image(write_image(tmp_path / "clip.png", floats))
    np.testing.assert_array_equal(clipped, np.round(np.clip(floats, 0, 1) * 255) / 255)
    stretched = read_image(write_image(tmp_path / "mm.png", floats, scale="minmax"))
    assert stretched.min() == 0 and stretched.max() == 1
    rgba = np.dstack([RGB8, ALPHA8])
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "a.png", rgba), alpha=True), rgba / 255)
    assert read_image(write_image(tmp_path / "one.bmp", GREY8[..., None])).shape == (5, 7)


@pytest.mark.parametrize("name, image, message", [
    ("x.png", np.zeros((2, 2, 5)), r"shape \(2, 2, 5\) cannot be written"),
    ("x.png", np.full((2, 2), np.nan), "image contains NaN"),
    ("x.unknown", np.zeros((2, 2)), r"cannot tell an image format from '.*x\.unknown'"),
    ("x.jpg", np.zeros((2, 2, 4)), r"cannot write \(2, 2, 4\) image as '.*x\.jpg'"),
])
def test_write_errors_leave_nothing(tmp_path, name, image, message):
    with pytest.raises(CnnlabError, match=message):
        write_image(tmp_path / name, image)
    assert list(tmp_path.iterdir()) == []


def test_tile_layout():
    tiles = [np.full((2, 3), float(i)) for i in range(5)]
    grid = tile(tiles, padding=1, pad_value=-1)  # 3 columns x 2 rows
    assert grid.shape == (2 * 2 + 1, 3 * 3 + 2)
    assert grid[0, 0] == 0 and grid[0, 4] == 1 and grid[3, 0] == 3 and grid[3, 4] == 4
    assert grid[2, 0] == -1 and grid[0, 3] == -1  # gaps
    assert (grid[3:, 8:] == -1).all()  # the empty sixth slot
    colour = tile(np.zeros((4, 2, 2, 3)), ncols=4, padding=0)
    assert colour.shape == (2, 8, 3)


def test_tile_normalize():
    tiles = np.stack([np.array([[0.0, 2.0]]), np.array([[4.0, 8.0]])])
    np.testing.assert_allclose(tile(tiles, normalize="all", ncols=2, padding=0), [[0, 0.25, 0.5, 1]])
    np.testing.assert_allclose(tile(tiles, normalize="each", ncols=2, padding=0), [[0, 1, 0, 1]])
    np.testing.assert_allclose(tile([np.ones((1, 2))], normalize="each", padding=0), [[0, 0]])


@pytest.mark.parametrize("args, kwargs, message", [
    ([np.zeros((2, 2)), np.zeros((3, 3))], {}, r"one shape; got shapes \[\(2, 2\), \(3, 3\)\]"),
    ([], {}, r"got shape \(0,\)"),
    ([np.zeros((2, 2))], {"normalize": "max"}, "normalize must be 'none', 'all' or 'each'; got 'max'"),
    ([np.zeros((2, 2))], {"padding": -1}, "padding must be an integer >= 0; got -1"),
])
def test_tile_errors(args, kwargs, message):
    with pytest.raises(CnnlabError, match=message):
        tile(args, **kwargs)


def test_apply_kernel_grey_and_colour():
    image = RGB8 / 255
    np.testing.assert_allclose(apply_kernel(image, get_kernel("sobel-x")),
                               correlate2d(rgb_to_grey(image), get_kernel("sobel-x"), "same", "symm"))
    assert apply_kernel(image, get_kernel("brown")).shape == (5, 7)
    with pytest.raises(CnnlabError, match=r"colour kernel of shape \(3, 3, 3\) needs a colour image"):
        apply_kernel(rgb_to_grey(image), get_kernel("brown"))


def test_gallery_figure(tmp_path):
    image = RGB8 / 255
    maps = {"sobel-x": apply_kernel(image, get_kernel("sobel-x")), "flat": np.zeros((5, 7))}
    fig = gallery(image, maps)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "original" and titles[1].startswith("sobel-x\n[") and titles[2].startswith("flat")
    (left, right) = fig.axes[1].images[0].get_clim()
    assert left == -right  # a signed map is shown symmetric around 0
    fig.savefig(tmp_path / "g.png")
    assert read_image(tmp_path / "g.png").ndim == 3
    with pytest.raises(CnnlabError, match=r"map 'bad' must be 2-D"):
        gallery(image, {"bad": image})
