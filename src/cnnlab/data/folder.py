"""``folder:PATH`` datasets: a directory of ``<class>/<image>`` files, decoded with Pillow.

Layouts: ``PATH/<class>/<image>`` (a seeded, per-class split makes the test set), or
``PATH/train/<class>/...`` and ``PATH/test/<class>/...`` (the folders are the split; with only
``train/``, it is split as above). Class names are the sorted class-folder names of the training
part; ``test/`` may lack a class but not add one. Files and folders whose names start with "."
are skipped (``.DS_Store``, ``.ipynb_checkpoints``); any other file must be an image Pillow can
decode, and every class folder must hold at least one.

Common size: every image is resized (Pillow bilinear, which low-pass filters when shrinking) to
the most common (height, width) among the images, or to ``image_size``. Common mode: "L"
(1 channel) when every image is greyscale, else "RGB" (3 channels), or ``mode``. Conversion is
Pillow's ``Image.convert``: alpha is dropped, palettes are expanded; 16-bit, 32-bit and float
greyscale are scaled by their range first (``cnnlab.scratch.images.to_8bit``). EXIF orientation
tags are ignored (pixels as stored).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.scratch.images import to_8bit
from cnnlab.text import printable

GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
MODES = {"L": 1, "RGB": 3}
# Split codes stored per image before the seeded split: the folders' own split, or none.
TRAIN, TEST, UNSPLIT = 0, 1, -1


def _visible(entries) -> list[Path]:
    return sorted(p for p in entries if not p.name.startswith("."))


def _class_files(split_dir: Path, label: str) -> dict[str, list[Path]]:
    """{class name: sorted image paths} for one split folder, with its layout checked."""
    entries = _visible(split_dir.iterdir())
    stray = [p for p in entries if not p.is_dir()]
    if stray:
        raise CnnlabError(
            f"{stray[0]} is a file outside any class folder of {label}; move it into {split_dir}/<class>/ or delete it"
        )
    if not entries:
        raise CnnlabError(f"{split_dir} has no class folders; lay images out as {split_dir}/<class>/<image>")
    out = {}
    for class_dir in entries:
        files = [p for p in sorted(class_dir.rglob("*")) if p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)]
        if not files:
            raise CnnlabError(f"class folder {class_dir} is empty; add images to it or delete it")
        out[class_dir.name] = files
    return out


def scan(path: Path) -> tuple[tuple[str, ...], list[Path], np.ndarray, np.ndarray]:
    """List a folder dataset: (classes, files, labels, split codes), in a fixed sorted order."""
    if not path.is_dir():
        raise CnnlabError(f"folder:{path}: {path} is not a directory; pass folder:PATH with PATH/<class>/<image>")
    label = f"folder:{path}"
    parts = {TRAIN: path / "train", TEST: path / "test"}
    if parts[TRAIN].is_dir():
        by_split = {TRAIN: _class_files(parts[TRAIN], label)}
        if parts[TEST].is_dir():
            by_split[TEST] = _class_files(parts[TEST], label)
        elif parts[TEST].exists():
            raise CnnlabError(f"{parts[TEST]} is not a folder; make it PATH/test/<class>/<image> or remove it")
        codes = {TRAIN: TRAIN if TEST in by_split else UNSPLIT, TEST: TEST}
    else:
        by_split = {UNSPLIT: _class_files(path, label)}
        codes = {UNSPLIT: UNSPLIT}
    folders = tuple(sorted(next(iter(by_split.values()))))  # as the file system names them
    files, labels, split = [], [], []
    for key, per_class in by_split.items():
        extra = sorted(set(per_class) - set(folders))
        if extra:
            raise CnnlabError(
                f"{parts[TEST]}/{extra[0]} is a class the training folder lacks; add it to train/ or remove it"
            )
        for name, paths in per_class.items():
            files += paths
            labels += [folders.index(name)] * len(paths)
            split += [codes[key]] * len(paths)
    return display_names(folders), files, np.asarray(labels, np.int64), np.asarray(split, np.int8)


def display_names(folders) -> tuple[str, ...]:
    """Class names fit to show and save: undecodable bytes become U+FFFD, as a browser shows them.

    On Linux a folder name that is not valid UTF-8 arrives as a str holding lone surrogates
    (Python's surrogateescape), which matplotlib, JSON files and HTML pages cannot encode.
    Two folders that differ only in their undecodable bytes would then share a name, so those
    keep their bytes visible as ``\\xe9`` escapes instead.
    """
    shown = [printable(name) for name in folders]
    clashes = {name for name in shown if shown.count(name) > 1}
    return tuple(name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                 if seen in clashes else seen for name, seen in zip(folders, shown, strict=True))


def _open(file: Path):
    from PIL import Image

    try:
        return Image.open(file)
    # Pillow's header parsers also raise ValueError, SyntaxError, struct.error, ... on damaged files.
    except Exception as exc:
        raise CnnlabError(
            f"{file} is not an image Pillow can read ({type(exc).__name__}); remove it from the folder"
        ) from None


def _parse_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise CnnlabError(f"image_size must be an int or (height, width) of positive ints, got {image_size!r}")
    return size


def read_images(files: list[Path], *, image_size=None, mode: str | None = None,
                progress: bool = True) -> np.ndarray:
    """Decode ``files`` into one (N, H, W, C) uint8 array at a common size and mode."""
    from PIL import Image
    from tqdm.auto import tqdm

    size = _parse_size(image_size)
    if mode is not None and mode not in MODES:
        raise CnnlabError(f"mode must be 'L' or 'RGB', got {mode!r}")
    if size is None or mode is None:  # first pass: headers only (Image.open is lazy)
        sizes, modes = Counter(), set()
        for file in files:
            with _open(file) as im:
                sizes[(im.height, im.width)] += 1
                modes.add(im.mode)
        size = size or sizes.most_common(1)[0][0]
        mode = mode or ("L" if modes <= GREY_MODES else "RGB")
    h, w = size
    out = np.empty((len(files), h, w, MODES[mode]), np.uint8)
    for i, file in enumerate(tqdm(files, desc="decoding images", unit="img", disable=not progress, leave=False)):
        with _open(file) as im:
            try:
                im = to_8bit(im).convert(mode)  # a float TIFF in [0, 1] is scaled, not cast to black
                if (im.height, im.width) != (h, w):
                    im = im.resize((w, h), Image.Resampling.BILINEAR)
                out[i] = np.asarray(im, np.uint8).reshape(h, w, -1)
            except Exception as exc:  # a damaged file fails in whatever part of Pillow reads it
                raise CnnlabError(f"{file}: cannot decode ({exc}); the image is truncated or corrupt; replace it") from None
    return out

