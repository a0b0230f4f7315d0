"""Image files fed to a trained model: read by cnnlab's one reader
(``cnnlab.scratch.images.read_image``), converted and resized to the model's input."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cnnlab.errors import CnnlabError


def read_image(path: str | Path, input_shape: Sequence[int], *, invert: bool = False) -> tuple[np.ndarray, str]:
    """Read one image file as uint8 ``(H, W, C)`` for a model whose ``input_shape`` is [H, W, C].

    Decoded by cnnlab's one reader (``cnnlab.scratch.images.read_image``), converted to grey
    (C=1, BT.601 luma) or RGB (C=3) and resized to H×W (bilinear; the aspect ratio is not
    kept, so the model sees its training size). ``invert`` flips grey levels (dark ink on
    white paper -> MNIST's white on black). Returns the array and a note saying what was
    converted ("" when nothing was).
    """
    from PIL import Image

    from cnnlab.scratch.images import read_image as read_pixels
    from cnnlab.scratch.images import to_uint8

    h, w, c = (int(v) for v in input_shape)
    if c not in (1, 3):
        raise CnnlabError(f"cannot feed image files to a model with {c} input channels; it needs 1 (grey) or 3 (RGB)")
    pixels = read_pixels(path)  # float (H, W) grey or (H, W, 3) colour, in [0, 1]
    notes = []
    if (pixels.ndim == 3) != (c == 3):
        notes.append("RGB -> grey" if c == 1 else "grey -> RGB")
        pixels = read_pixels(path, colour="grey" if c == 1 else "rgb")
    img = Image.fromarray(to_uint8(pixels))
    if img.size != (w, h):
        notes.append(f"resized {img.size[0]}x{img.size[1]} -> {w}x{h}")
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8).reshape(h, w, c)
    if invert:
        notes.append("inverted")
        arr = 255 - arr
    return arr, ", ".join(notes)


def load_images(paths: Sequence[str | Path], input_shape: Sequence[int], *, invert: bool = False) -> np.ndarray:
    """Image files as uint8 ``(N, H, W, C)`` matching ``input_shape`` [H, W, C] (see :func:`read_image`)."""
    h, w, c = (int(v) for v in input_shape)
    out = np.empty((len(paths), h, w, c), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = read_image(path, input_shape, invert=invert)[0]
    return out
