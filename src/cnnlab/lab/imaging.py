"""Pixels in and out of the lab: safe decoding of uploads, PNG encoding, atlases, colour maps.

Uploads are decoded from memory (never written anywhere) after two caps: the byte size of
the request body, and the pixel count the image header announces, checked *before* the
pixels are decoded, so a decompression bomb (a small file that decodes to gigapixels) is
refused with a clear message instead of filling the memory.
"""

from __future__ import annotations

import base64
import io
import math
import re
import threading
import warnings
from functools import lru_cache

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnlab.scratch.images import to_8bit

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # a phone photo is 2-6 MB
MAX_UPLOAD_PIXELS = 40_000_000  # 40 MP: the largest phone cameras; decoded RGB that is 120 MB
# Decodes at once: each holds up to a few hundred MB while it runs (a 40 MP PNG), so 16 uploads
# at once took the server from 262 MB to 5.2 GB. The others wait their turn in the thread pool.
DECODE_SLOTS = 2
_decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)
# No model input is larger than 224 and the lab's largest resize reads a 256-pixel short side:
# a decoded photo is reduced to a short side of at most this (and at least half of it) before
# it leaves its slot, as libjpeg's draft mode already does for JPEGs.
KEEP_SIDE = 1024


class LabError(Exception):
    """A request the lab refuses: an HTTP status and a one-line message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _give_memory_back() -> None:
    """Return freed heap pages to the operating system (glibc keeps them otherwise, so the
    server's memory would stay at its highest point); a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def decode_upload(data: bytes, *, max_pixels: int = MAX_UPLOAD_PIXELS) -> Image.Image:
    """Bytes of an image file -> an RGB PIL image, refusing bombs and non-images.

    At most ``DECODE_SLOTS`` decodes run at once; the image returned has a short side of at
    most ``KEEP_SIDE`` (a larger one is reduced by a whole factor), and the memory of the
    decode is handed back to the system afterwards.

    Raises LabError 413 for too many pixels, 400 for bytes Pillow cannot read.
    """
    with _decode_slots:
        try:
            img = _decode(data, max_pixels)
            factor = min(img.size) // KEEP_SIDE + (min(img.size) % KEEP_SIDE > 0) if min(img.size) > KEEP_SIDE else 1
            return img.reduce(factor) if factor > 1 else img
        finally:
            _give_memory_back()


def _decode(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise LabError(400, "the upload is empty; choose an image file (PNG, JPEG, BMP, GIF, WebP)")
    try:
        with warnings.catch_warnings():
            # Pillow warns past MAX_IMAGE_PIXELS and refuses past twice that; both mean "too big".
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        announced = re.search(r"\d+", str(exc))
        raise _too_many_pixels(int(announced.group()) if announced else None, max_pixels) from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise LabError(400, "the upload is not an image Pillow can read; use PNG, JPEG, BMP, GIF or WebP") from exc
    width, height = img.size
    if width * height > max_pixels:
        raise _too_many_pixels(width * height, max_pixels)
    if img.format == "JPEG":
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the photo is far larger than any
        # model input: a 12 MP photo then decodes in a fraction of the time and memory.
        img.draft("RGB", (512, 512))
    try:
        img = ImageOps.exif_transpose(img)  # phones store portrait photos sideways plus a tag
        img.load()  # decodes: a truncated file fails here
        return to_8bit(img).convert("RGB")  # to_8bit: a float TIFF in [0, 1] is scaled, not cast to black
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise LabError(400, f"the image could not be decoded ({exc}); it is truncated or damaged") from exc


def _too_many_pixels(pixels: int | None, limit: int) -> LabError:
    size = f"{pixels:,} pixels" if pixels else "too many pixels"
    return LabError(413, f"the image announces {size}, more than the lab's limit of {limit:,}; scale it down first")


def fit_to_input(img: Image.Image, input_shape) -> tuple[np.ndarray, str]:
    """An RGB photo -> uint8 (H, W, C) for a run's model: grey or RGB, resized (bilinear).

    For a one-channel model trained on white-on-black digits (MNIST's convention), a photo
    of dark ink on light paper is inverted; the returned note says so.
    """
    h, w, c = (int(v) for v in input_shape)
    notes = [f"resized {img.size[0]}x{img.size[1]} -> {w}x{h}"] if img.size != (w, h) else []
    img = img.resize((w, h), Image.Resampling.BILINEAR)
    if c == 1:
        img = img.convert("L")
        arr = np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy warns on read-only arrays
        border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
        if border.mean() > 127:  # light background: flip to the training data's dark background
            arr = 255 - arr
            notes.append("inverted (dark ink on light paper -> white on black)")
        return arr[:, :, None], ", ".join(notes)
    arr = np.array(img, dtype=np.uint8)
    if c != 3:
        arr = np.repeat(arr.mean(axis=2, keepdims=True).astype(np.uint8), c, axis=2)
    return arr, ", ".join(notes)


def png_bytes(array: np.ndarray) -> bytes:
    """uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> PNG bytes (fast, lightly compressed)."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    buf = io.BytesIO()
    # Level 1: the images are small and sent once; encoding time matters more than bytes.
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def png_b64(array: np.ndarray) -> str:
    return base64.b64encode(png_bytes(array)).decode("ascii")


def to_uint8(values: np.ndarray, *, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Min-max scale to 0..255. A constant array is black, its minimum: mid grey would suggest a
    value in the middle of a range it does not have (a dead ReLU map is all 0). Values that
    overflowed (inf, NaN) do not spoil the rest: the range is that of the finite values, +inf is
    white, -inf and NaN black."""
    v = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(v)
    if not finite.all():
        return _nonfinite_to_uint8(v, finite, lo, hi)
    lo = float(v.min()) if lo is None else lo
    hi = float(v.max()) if hi is None else hi
    if not hi > lo:
        return np.zeros(v.shape, dtype=np.uint8)
    return np.clip((v - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def _nonfinite_to_uint8(v: np.ndarray, finite: np.ndarray, lo, hi) -> np.ndarray:
    some = v[finite]
    lo = lo if lo is not None and math.isfinite(lo) else (float(some.min()) if some.size else 0.0)
    hi = hi if hi is not None and math.isfinite(hi) else (float(some.max()) if some.size else 0.0)
    wide = v.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = (wide - lo) * (255.0 / (hi - lo)) if hi > lo else np.where(finite, 0.0, wide)
        scaled = np.clip(np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0), 0, 255)
    return scaled.astype(np.uint8)


def atlas(maps: np.ndarray) -> tuple[np.ndarray, int, list[float], list[float]]:
    """Maps (n, h, w) -> one grey uint8 image tiling them (each scaled to its own range; a
    constant map is black, as ``to_uint8``).

    Returns (image (rows*h, cols*w), cols, per-map minima, per-map maxima). One PNG per
    layer instead of one per channel keeps a whole overview to a single request.
    """
    n, h, w = maps.shape
    cols = max(1, min(n, 8 if n <= 64 else 16))
    rows = math.ceil(n / cols)
    flat = maps.reshape(n, -1)
    lo, hi = flat.min(axis=1), flat.max(axis=1)  # inf or NaN where a map overflowed: the JSON reports it
    tiles = np.zeros((rows * cols, h, w), dtype=np.uint8)
    if np.isfinite(flat).all():
        span = np.where(hi > lo, hi - lo, 1.0)
        scaled = np.where((hi > lo)[:, None], (flat - lo[:, None]) * (255.0 / span)[:, None], 0.0)  # constant: black
        tiles[:n] = np.clip(scaled, 0, 255).astype(np.uint8).reshape(n, h, w)
    else:
        tiles[:n] = [to_uint8(m) for m in maps]
    grid = tiles.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)
    return grid, cols, lo.tolist(), hi.tolist()


@lru_cache(maxsize=4)
def _lut(name: str) -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)  # (256, 3)


def colorize(values: np.ndarray, *, cmap: str = "inferno", alpha: bool = False) -> np.ndarray:
    """(H, W) values -> uint8 RGB (H, W, 3), min-max scaled through a matplotlib colour map.

    ``alpha=True`` adds an alpha channel equal to the scaled value (for heat-map overlays,
    so cold pixels let the photo show through).
    """
    u8 = to_uint8(values)
    rgb = _lut(cmap)[u8]
    return np.dstack([rgb, u8]) if alpha else rgb


def heat_overlay(values: np.ndarray, signed: bool | None = None) -> dict:
    """An attribution map as an RGBA overlay that does not lie about its numbers.

    A magnitude map (every value >= 0) goes through cividis (perceptually even and readable
    with any colour vision) from 0 at its maximum; a signed map (some value < 0) through a
    diverging map centred on 0 (blue negative, white 0, red positive) scaled by the largest
    |value|. Alpha follows the value's size, so a pixel worth 0 lets the photo show through.
    A map with no non-zero finite value has nothing to draw: ``png`` is None and ``note``
    says why, instead of min-max scaling it into a uniform wash of colour.

    ``signed``: whether the method's map is signed (``cnnlab.insight.attribution.is_signed``:
    integrated gradients, occlusion), so it is drawn diverging even where no value happens to be
    negative; None decides from the values.

    Returns {png, signed, lo, hi, cmap, colorbar (a 256x1 PNG of the scale), note}.
    """
    v = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    finite = bool(np.isfinite(np.asarray(values, dtype=np.float32)).all())
    m = float(np.abs(v).max()) if v.size else 0.0
    signed = bool(v.size and v.min() < 0) if signed is None else bool(signed)
    cmap = "RdBu_r" if signed else "cividis"
    lo, hi = (-m, m) if signed else (0.0, m)
    bar = png_b64(_lut(cmap)[np.arange(256, dtype=np.uint8)][None])
    if m == 0.0:
        note = ("every value of this map is 0: no evidence for or against this class"
                if signed else "every value of this map is 0: no positive evidence for this class at this layer"
                ) if finite else "this map is not defined here (it holds no finite value)"
        return {"png": None, "signed": signed, "lo": 0.0, "hi": 0.0, "cmap": cmap, "colorbar": bar, "note": note}
    # Rounded, not truncated: the map's extreme must wear the colour bar's end colour exactly.
    u8 = np.clip(np.round((v - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
    alpha = np.clip(np.round(np.abs(v) * (255.0 / m)), 0, 255).astype(np.uint8)
    rgba = np.dstack([_lut(cmap)[u8], alpha])
    note = "" if finite else "some values were not finite and are drawn as 0"
    return {"png": png_b64(rgba), "signed": signed, "lo": lo, "hi": hi, "cmap": cmap, "colorbar": bar, "note": note}


def diverging(values: np.ndarray) -> np.ndarray:
    """(H, W) signed values -> uint8 RGB, zero white, negative blue, positive red (symmetric)."""
    v = np.asarray(values, dtype=np.float32)
    finite = np.abs(v[np.isfinite(v)])
    m = float(finite.max()) if finite.size else 0.0
    return _lut("RdBu_r")[to_uint8(v, lo=-(m or 1.0), hi=m or 1.0)]
