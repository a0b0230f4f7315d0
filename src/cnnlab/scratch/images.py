"""Read and write images, sample images, tile arrays into grids, and a filter gallery.

Layout used everywhere in cnnlab's NumPy half: float64 in [0, 1], ``(H, W)`` for grey and
``(H, W, 3)`` for RGB, channels last; with ``alpha=True`` the alpha channel is appended
(``(H, W, 2)`` grey + alpha, ``(H, W, 4)`` RGBA). Pillow does the decoding and encoding.
Matplotlib is imported only by :func:`gallery`.
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cnnlab.errors import CnnlabError
from cnnlab.files import write_bytes
from cnnlab.scratch.conv import correlate2d

__all__ = [
    "COLOURS",
    "SAMPLES",
    "apply_kernel",
    "gallery",
    "grace_hopper",
    "load_image",
    "read_image",
    "rgb_to_grey",
    "tile",
    "to_8bit",
    "to_uint8",
    "write_image",
]

COLOURS = ("auto", "grey", "rgb")
# Luma weights of ITU-R BT.601, the ones Pillow's convert("L") uses.
_LUMA = np.array([0.299, 0.587, 0.114])


def _grace_hopper_path() -> Path:
    # The tutorials' portrait ships inside matplotlib (US Navy photo, public domain).
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


# Built-in sample images: name -> function returning the file's path.
SAMPLES = {"grace_hopper": _grace_hopper_path}


def read_image(path, *, colour: str = "auto", alpha: bool = False) -> np.ndarray:
    """Read a PNG, JPEG, BMP (anything Pillow decodes) into float64 in [0, 1].

    cnnlab's one image-file reader: commands that need uint8 at a model's size
    (``cnnlab.insight.image_files.read_image``, ``cnnlab.models.pretrained.open_image``) start
    from it, so every command reads a file the same way and fails with the same message.

    ``colour="auto"`` keeps what the file holds: ``(H, W)`` for grey, ``(H, W, 3)`` for
    colour (palette, CMYK and YCbCr become RGB); ``"grey"`` forces ``(H, W)`` (BT.601 luma),
    ``"rgb"`` forces ``(H, W, 3)``. Alpha is dropped unless ``alpha=True``, which appends it
    as a last channel (1.0 where the file has none). 8-bit values are divided by 255, 16-bit
    by 65535; the EXIF orientation is applied.
    """
    if colour not in COLOURS:
        raise CnnlabError(f"colour must be one of {', '.join(map(repr, COLOURS))}; got {colour!r}")
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "not found"
        raise CnnlabError(f"image file '{path}' {what}; give a PNG, JPEG or BMP file "
                          f"or a sample name ({', '.join(SAMPLES)})")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            pixels, has_alpha = _to_float(im)
    except Exception as exc:  # Pillow's decoders fail in many ways on damaged files (ValueError, struct.error, ...)
        raise CnnlabError(f"'{path}' is not a readable image ({_one_line(exc)}); "
                          "give a PNG, JPEG or BMP file") from exc
    if has_alpha:
        pixels, opacity = pixels[..., :-1], pixels[..., -1]
    else:
        opacity = np.ones(pixels.shape[:2])
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    if colour == "grey" and pixels.ndim == 3:
        pixels = rgb_to_grey(pixels)
    elif colour == "rgb" and pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    if alpha:
        pixels = np.dstack([pixels, opacity])
    return pixels


def _to_float(im: Image.Image) -> tuple[np.ndarray, bool]:
    """Decoded Pillow image -> (float64 array in [0, 1] with alpha last if any, has_alpha)."""
    mode = im.mode
    if _is_deep(mode):  # 16-bit, 32-bit integer or floating-point grey
        return _deep_to_unit(im), False
    if mode == "1":
        return np.asarray(im).astype(np.float64), False
    if mode == "P":
        mode = "RGBA" if "transparency" in im.info else "RGB"
    target = {"L": "L", "LA": "LA", "La": "LA", "PA": "LA", "RGB": "RGB", "RGBA": "RGBA",
              "RGBa": "RGBA"}.get(mode, "RGB")
    if im.mode != target:
        im = im.convert(target)
    return np.asarray(im).astype(np.float64) / 255, target in ("LA", "RGBA")


def _is_deep(mode: str) -> bool:
    return mode in ("F", "I") or mode.startswith("I;16")


def _deep_to_unit(im: Image.Image) -> np.ndarray:
    """A grey image of more than 8 bits -> float64 (H, W) in [0, 1], scaled by its range.

    Pillow's ``convert("L")`` casts these, which turns a float TIFF in [0, 1] black and a
    16-bit PNG white. Instead: floats up to 1 are taken as [0, 1] (scientific and
    rendering tools write them so), floats up to 255 as 8-bit levels, anything larger
    as 16-bit; 16-bit integers are divided by 65535, 32-bit ones by 65535 unless they
    fit in 8 bits. NaN counts as 0.
    """
    x = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(x.max(initial=0.0))
    if im.mode == "F":
        full = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
    else:
        full = 255.0 if im.mode == "I" and top <= 255 else 65535.0
    return np.clip(x / full, 0.0, 1.0)


def to_8bit(im: Image.Image) -> Image.Image:
    """A Pillow image safe to ``convert()``: deep grey modes ("F", "I", "I;16") scaled into "L".

    Every other mode is returned as it is. See :func:`_deep_to_unit` for the scaling.
    """
    if not _is_deep(im.mode):
        return im
    return Image.fromarray(np.round(_deep_to_unit(im) * 255).astype(np.uint8), "L")


def load_image(path_or_sample_name, *, colour: str = "auto", alpha: bool = False) -> np.ndarray:
    """:func:`read_image` of a file, or of a built-in sample named in SAMPLES.

    An existing file wins over a sample of the same name.
    """
    name = str(path_or_sample_name)
    if name in SAMPLES and not Path(name).exists():
        return read_image(SAMPLES[name](), colour=colour, alpha=alpha)
    return read_image(path_or_sample_name, colour=colour, alpha=alpha)


def grace_hopper(*, colour: str = "auto") -> np.ndarray:
    """The tutorials' Grace Hopper portrait, ``(600, 512, 3)`` float64 RGB in [0, 1]."""
    return load_image("grace_hopper", colour=colour)


def rgb_to_grey(image) -> np.ndarray:
    """``(H, W, 3)`` RGB -> ``(H, W)`` luma with BT.601 weights (0.299 R + 0.587 G + 0.114 B)."""
    x = np.asarray(image)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise CnnlabError(f"rgb_to_grey needs an (H, W, 3) image; got shape {x.shape}")
    return x @ _LUMA


def write_image(path, image, *, scale: str = "clip") -> Path:
    """Write an array as an 8-bit image; the format follows the file's extension.

    Layouts: ``(H, W)`` or ``(H, W, 1)`` grey, ``(H, W, 2)`` grey + alpha, ``(H, W, 3)`` RGB,
    ``(H, W, 4)`` RGBA. uint8 arrays are written unchanged. Anything else is scaled to
    0..255: ``scale="clip"`` takes values as [0, 1] and clips the rest, ``"minmax"``
    stretches the array's min..max to 0..255 (a constant array becomes 0). The file is
    encoded in memory first and written atomically (``cnnlab.files``), so a failure leaves
    nothing on disk and an existing file is replaced only by a complete one. Returns the path.
    """
    if scale not in ("clip", "minmax"):
        raise CnnlabError(f"scale must be 'clip' or 'minmax'; got {scale!r}")
    x = np.asarray(image)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    if not (x.ndim == 2 or (x.ndim == 3 and x.shape[-1] in (2, 3, 4))) or x.size == 0:
        raise CnnlabError(f"image of shape {x.shape} cannot be written; give (H, W) or (H, W, 1..4)")
    if x.dtype != np.uint8:
        x = _to_uint8(x, scale)
    path = Path(path)
    file_format = Image.registered_extensions().get(path.suffix.lower())
    if file_format is None:
        raise CnnlabError(f"cannot tell an image format from '{path}'; end the name in .png, .jpg or .bmp")
    buffer = io.BytesIO()
    try:
        Image.fromarray(x).save(buffer, format=file_format)
    except (KeyError, ValueError, OSError) as exc:
        raise CnnlabError(f"cannot write {x.shape} image as '{path}' ({_one_line(exc)}); "
                          "use a .png file name") from exc
    return write_bytes(path, buffer.getvalue())


def to_uint8(image) -> np.ndarray:
    """Float image in [0, 1] (what :func:`read_image` returns) -> uint8 0..255, rounded, clipped.

    The way from the one reader's contract to what Pillow and the data pipeline use."""
    return _to_uint8(np.asarray(image), "clip")


def _to_uint8(x: np.ndarray, scale: str) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise CnnlabError(f"image must hold real numbers; got dtype {x.dtype}")
    x = x.astype(np.float64)
    if np.isnan(x).any():
        raise CnnlabError("image contains NaN; replace it before writing, e.g. np.nan_to_num(image)")
    if scale == "minmax":
        low, high = x.min(), x.max()
        x = (x - low) / (high - low) if high > low else np.zeros_like(x)
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)


def tile(images, *, ncols: int | None = None, padding: int = 1, pad_value: float = 1.0,
         normalize: str = "none") -> np.ndarray:
    """Lay N same-shaped images out in a grid: one ``(rows*H + gaps, cols*W + gaps[, C])`` array.

    ``images`` is a sequence of ``(H, W)`` / ``(H, W, C)`` arrays or one ``(N, H, W[, C])``
    array. ``ncols`` defaults to ceil(sqrt(N)) (a square, like the tutorials' vis_square);
    ``padding`` pixels of ``pad_value`` separate tiles and fill empty slots. ``normalize``:
    ``"none"`` keeps values, ``"all"`` maps the global min..max to 0..1 (vis_square),
    ``"each"`` does so per tile (a constant tile becomes 0).
    """
    try:
        stack = np.asarray(images, dtype=np.float64)  # (N, H, W[, C])
    except ValueError as exc:
        raise CnnlabError(f"tile needs images of one shape; got shapes "
                          f"{sorted({np.shape(i) for i in images})}") from exc
    if stack.ndim not in (3, 4) or stack.shape[0] == 0:
        raise CnnlabError(f"tile needs N images (N, H, W) or (N, H, W, C); got shape {stack.shape}")
    if normalize not in ("none", "all", "each"):
        raise CnnlabError(f"normalize must be 'none', 'all' or 'each'; got {normalize!r}")
    for label, value, least in (("padding", padding, 0), ("ncols", 1 if ncols is None else ncols, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise CnnlabError(f"{label} must be an integer >= {least}; got {value!r}")
    n, h, w = stack.shape[:3]
    if normalize != "none":
        axes = tuple(range(stack.ndim)) if normalize == "all" else tuple(range(1, stack.ndim))
        low, high = stack.min(axis=axes, keepdims=True), stack.max(axis=axes, keepdims=True)
        stack = np.divide(stack - low, high - low, out=np.zeros_like(stack), where=high > low)
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.full((nrows * h + (nrows - 1) * padding, ncols * w + (ncols - 1) * padding,
                    *stack.shape[3:]), float(pad_value))
    for index, tile_ in enumerate(stack):
        top, left = (index // ncols) * (h + padding), (index % ncols) * (w + padding)
        grid[top : top + h, left : left + w] = tile_
    return grid


def apply_kernel(image, kernel, *, mode: str = "same", boundary: str = "symm", fillvalue: float = 0):
    """Filter an image for display with :func:`cnnlab.scratch.conv.correlate2d` -> ``(H', W')``.

    A grey ``(kh, kw)`` kernel on a colour image filters the image's grey version; a colour
    ``(kh, kw, C)`` kernel sums over the channels (the tutorials' ``brown``) and needs a
    colour image. The defaults keep the image's size with mirrored edges.
    """
    x, k = np.asarray(image), np.asarray(kernel)
    if x.ndim == 3 and k.ndim == 2:
        x = rgb_to_grey(x[..., :3]) if x.shape[-1] >= 3 else x[..., 0]
    elif x.ndim == 2 and k.ndim == 3:
        raise CnnlabError(f"colour kernel of shape {k.shape} needs a colour image; got a grey image "
                          f"of shape {x.shape}; read the image in colour (without --grey)")
    return correlate2d(x, k, mode, boundary, fillvalue)


def gallery(image, maps: Mapping[str, np.ndarray], *, image_title: str = "original",
            ncols: int | None = None, panel_inches: float = 3.0):
    """A matplotlib Figure: ``image`` first, then one titled panel per ``title -> map`` entry.

    The image is shown as it is (RGB, or grey on 0..1). Each ``(H, W)`` map is shown in grey
    with limits from its 0.5th..99.5th percentiles, so a few extreme pixels do not wash it
    out, made symmetric around 0 when the map has both signs (0 is mid-grey; edges of either
    sign show dark or light). Each map's title carries its actual min and max.
    """
    from cnnlab.scratch.figure import Figure

    x = np.asarray(image, dtype=np.float64)
    if x.ndim not in (2, 3):
        raise CnnlabError(f"gallery needs an (H, W) or (H, W, C) image; got shape {x.shape}")
    if not isinstance(maps, Mapping):
        raise CnnlabError(f"gallery needs a mapping of title -> map; got {type(maps).__name__}")
    n = 1 + len(maps)
    ncols = ncols or min(4, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(panel_inches * ncols, panel_inches * nrows * 1.15), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    if x.ndim == 3:
        axes[0].imshow(np.clip(x[..., :3], 0, 1))
    else:
        axes[0].imshow(x, cmap="gray", vmin=0, vmax=1)
    axes[0].set_title(image_title, fontsize=9)
    for ax, (title, array) in zip(axes[1:], maps.items(), strict=False):  # spare axes stay blank
        m = np.asarray(array, dtype=np.float64)
        if m.ndim != 2:
            raise CnnlabError(f"map {title!r} must be 2-D (H, W); got shape {m.shape}")
        vmin, vmax = _display_limits(m)
        ax.imshow(m, cmap="gray", vmin=vmin, vmax=vmax)
        ax.set_title(f"{title}\n[{m.min():.3g}, {m.max():.3g}]", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    return fig


def _display_limits(x: np.ndarray) -> tuple[float, float]:
    low, high = (float(v) for v in np.percentile(x, [0.5, 99.5]))
    if low < 0 < high:
        low, high = -max(-low, high), max(-low, high)
    if high <= low:  # a flat map: show it mid-grey rather than fail
        low, high = low - 0.5, low + 0.5
    return low, high


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
