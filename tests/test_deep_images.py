"""Images of more than 8 bits (float TIFFs in [0, 1], 16-bit PNGs) are scaled, never cast to black or white."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.folder import read_images
from cnnlab.insight.image_files import read_image as read_for_model
from cnnlab.insight.photo import load_photo
from cnnlab.models.pretrained import open_image
from cnnlab.scratch.images import read_image, to_8bit

RAMP = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)  # 0 .. 1


def float_tiff(path, values=RAMP):
    Image.fromarray(values, mode="F").save(path)
    with Image.open(path) as im:
        assert im.mode == "F"  # Pillow really wrote a 32-bit float TIFF
    return path


def expected_levels(values=RAMP, full=1.0):
    return np.round(np.clip(values / full, 0, 1) * 255).astype(np.uint8)


def test_pillows_own_conversion_is_the_bug():
    im = Image.fromarray(RAMP, mode="F")
    assert np.asarray(im.convert("L")).max() <= 1  # cast: black
    np.testing.assert_array_equal(np.asarray(to_8bit(im)), expected_levels())


@pytest.mark.parametrize("values, full", [(RAMP, 1.0), (RAMP * 255, 255.0), (RAMP * 4000, 65535.0)])
def test_float_ranges(values, full):
    np.testing.assert_array_equal(np.asarray(to_8bit(Image.fromarray(values, mode="F"))), expected_levels(values, full))


def test_16_bit_png_is_divided_by_65535(tmp_path):
    levels = (RAMP * 65535).astype(np.uint16)
    Image.fromarray(levels).save(tmp_path / "d.png")
    with Image.open(tmp_path / "d.png") as im:
        assert im.mode.startswith("I")
        np.testing.assert_array_equal(np.asarray(to_8bit(im)), expected_levels(levels.astype(np.float64), 65535))
    np.testing.assert_allclose(read_image(tmp_path / "d.png"), levels / 65535)


def test_nan_pixels_count_as_zero():
    values = RAMP.copy()
    values[0, 0] = np.nan
    out = np.asarray(to_8bit(Image.fromarray(values, mode="F")))
    assert out[0, 0] == 0 and out[-1, -1] == 255


def test_every_reader_scales_a_float_tiff(tmp_path):
    path = float_tiff(tmp_path / "ramp.tif")
    want = expected_levels()
    np.testing.assert_allclose(read_image(path), RAMP, atol=1e-7)  # scratch: floats in [0, 1]
    np.testing.assert_array_equal(read_images([path], progress=False)[0, :, :, 0], want)  # folder datasets
    np.testing.assert_array_equal(read_for_model(path, (8, 8, 1))[0][:, :, 0], want)  # predict/activations
    np.testing.assert_array_equal(np.asarray(open_image(path))[:, :, 1], want)  # classify
    np.testing.assert_array_equal(np.asarray(load_photo(path)[0])[:, :, 0], want)  # explain photos
    with Image.open(path) as im:
        np.testing.assert_array_equal(np.asarray(open_image(im))[:, :, 2], want)  # a PIL image passed in


def test_the_lab_upload_scales_a_float_tiff(tmp_path):
    pytest.importorskip("starlette")
    from cnnlab.lab.imaging import decode_upload

    path = float_tiff(tmp_path / "ramp.tif")
    np.testing.assert_array_equal(np.asarray(decode_upload(path.read_bytes()))[:, :, 0], expected_levels())
