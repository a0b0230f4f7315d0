"""Folders larger than memory: images decoded in DataLoader worker processes, per batch.

``load("folder:PATH")`` decodes every image into one uint8 array (and training then holds
it as float32, four times larger). ``stream_folder`` instead returns ``torch.utils.data``
datasets whose items are decoded on demand with Pillow in the loader's worker processes;
JPEGs much larger than needed are decoded at a reduced scale (``Image.draft``: the JPEG
decoder skips the DCT detail it would throw away, 2-8x less work). The same seeded
train/test split and order as ``load`` apply, so an image lands in the same split either way.

The rule ``cnnlab train`` follows (``should_stream``): stream when ``--stream`` says so, or
when the decoded training data (uint8 plus its float32 copy: 5 bytes per value) would pass
``--max-memory`` GiB (default: half the memory available when the run starts, so the
machine stays usable).

Before training a first pass opens every file and reads only its header (Pillow's
``Image.open`` is lazy): files that are not images are listed up front instead of failing
an hour in. ``skip_bad=True`` leaves them out and reports how many; it also decodes every
file once in that pass (JPEGs at 1/8 scale: the decoder still reads all their data), so an
image whose header reads but whose pixels are truncated is left out too. Without it such
a file stops training with one line naming it (:class:`UndecodableImage`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cnnlab.cpu import available_memory
from cnnlab.errors import CnnlabError

BYTES_PER_VALUE = 5  # a uint8 copy and the float32 training copy

log = logging.getLogger(__name__)


def check_batch_memory(batch_size: int, size: tuple[int, int], channels: int) -> None:
    """Refuse, before anything is decoded, an image size at which one batch cannot fit in memory."""
    need = batch_size * size[0] * size[1] * channels * BYTES_PER_VALUE
    have = available_memory()
    if need > have:
        raise CnnlabError(f"images of {size[0]}x{size[1]}x{channels}: one batch of {batch_size} would take "
                          f"{need / 2**30:,.1f} GiB, more than the {have / 2**30:,.1f} GiB available; "
                          "use a smaller --image-size or --batch-size")


def should_stream(n_images: int, size: tuple[int, int], channels: int, *, max_memory_gib: float | None) -> bool:
    """True when ``n_images`` decoded would need more than the budget (default: half of what is available)."""
    budget = available_memory() / 2 if max_memory_gib is None else max_memory_gib * 2**30
    return n_images * size[0] * size[1] * channels * BYTES_PER_VALUE > budget


def check_headers(files: list[Path], *, pixels: bool = False) -> tuple[list[int], list[tuple[Path, str]], Counter, set]:
    """(indices of readable files, [(unreadable file, why)], Counter of (H, W), modes), headers only;
    ``pixels=True`` also decodes each file (JPEGs at a reduced scale), finding truncated pixel data."""
    from PIL import Image, UnidentifiedImageError

    ok, bad, sizes, modes = [], [], Counter(), set()
    for i, file in enumerate(files):
        try:
            with Image.open(file) as im:
                size, mode = (im.height, im.width), im.mode
                if pixels:
                    if im.format == "JPEG":
                        im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                    im.load()
            sizes[size] += 1
            modes.add(mode)
            ok.append(i)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
            bad.append((file, type(exc).__name__ if not pixels else f"{type(exc).__name__}: {str(exc)[:60]}"))
    return ok, bad, sizes, modes


class UndecodableImage(CnnlabError):
    """An image that fails to decode in a DataLoader worker, as one line naming the file.

    DataLoader re-raises a worker's exception in the main process as ``type(exc)(header +
    the worker's traceback)``; built that way, this keeps only the original message."""

    def __init__(self, message: str) -> None:
        marker = f"{UndecodableImage.__module__}.{UndecodableImage.__qualname__}: "
        if "Traceback" in message and marker in message:
            message = message.rsplit(marker, 1)[1].strip().splitlines()[0]
        super().__init__(message)


class FolderStream(Dataset):
    """A map-style dataset: item i is (uint8 tensor (C, H, W), label), decoded when asked for.

    ``mean``/``std`` (per channel, [0, 1] units) are applied on the training device by
    ``cnnlab.train.feed``, batched; ``loader_options`` are the DataLoader settings fit uses.
    """

    def __init__(self, files, labels, *, size: tuple[int, int], mode: str, mean=None, std=None,
                 workers: int = 2) -> None:
        self.files, self.labels = [str(f) for f in files], np.asarray(labels, np.int64)
        self.size, self.mode, self.mean, self.std = size, mode, mean, std
        # Workers decode in parallel and ahead of the step; persistent ones keep their
        # Python and Pillow warm across epochs.
        self.loader_options = {"num_workers": workers, "persistent_workers": workers > 0}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return torch.from_numpy(decode(self.files[i], self.size, self.mode)).permute(2, 0, 1), int(self.labels[i])


def decode(file: str, size: tuple[int, int], mode: str) -> np.ndarray:
    """One image as uint8 (H, W, C) at ``size`` (H, W) in ``mode``: as ``folder.read_images`` decodes it,
    with JPEGs of twice the size or more decoded at a reduced scale first."""
    from PIL import Image

    h, w = size
    try:
        with Image.open(file) as im:
            if im.format == "JPEG":
                im.draft(mode, (w, h))  # a scale of 1/2, 1/4 or 1/8 still at least (w, h)
            im = im.convert(mode)
            if (im.height, im.width) != (h, w):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            return np.array(im, np.uint8).reshape(h, w, -1)  # a writable copy, as torch wants
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:120]
        raise UndecodableImage(f"{file}: cannot decode ({first}); the image is truncated or corrupt; replace it "
                               "or pass --skip-bad to leave out such files") from None


@dataclass
class StreamedFolder:
    """A folder dataset as streams: ``train``, ``test`` and optional ``val`` FolderStreams."""

    classes: tuple[str, ...]
    train: FolderStream
    test: FolderStream
    val: FolderStream | None
    input_shape: tuple[int, int, int]
    skipped: list[tuple[Path, str]]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def scan_folder(name: str, *, image_size=None, mode: str | None = None, skip_bad: bool = False):
    """(classes, files, labels, split codes, (H, W), mode, skipped) after the header pass."""
    from cnnlab.data import folder

    path = Path(name[len("folder:"):]).expanduser()
    classes, files, labels, split = folder.scan(path)
    ok, bad, sizes, modes = check_headers(files, pixels=skip_bad)
    if bad and not skip_bad:
        listed = ", ".join(f"{f} ({why})" for f, why in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise CnnlabError(f"{len(bad)} of {len(files)} files in {path} are not readable images: {listed}; "
                          "remove them or pass --skip-bad to leave them out")
    if not ok:
        raise CnnlabError(f"no readable images in {path}")
    if bad:  # skip_bad: said once, before training, with the first few names (all are in ``skipped``)
        listed = ", ".join(Path(f).relative_to(path).as_posix() for f, _ in bad[:3]) + (", ..." if len(bad) > 3 else "")
        log.warning("left out %d of %d files in %s that are not readable images: %s", len(bad), len(files), path,
                    listed)
    size = folder._parse_size(image_size) or sizes.most_common(1)[0][0]
    mode = mode or ("L" if modes <= folder.GREY_MODES else "RGB")
    keep = np.asarray(ok)
    return classes, [files[i] for i in ok], labels[keep], split[keep], size, mode, bad


def stream_folder(name: str, *, image_size=None, mode: str | None = None, test_size: float = 0.2, seed: int = 0,
                  train_size: int | None = None, val_size: int | float = 0, skip_bad: bool = False,
                  mean=None, std=None, workers: int = 2) -> StreamedFolder:
    """``load(name)``'s splits of a ``folder:PATH`` dataset, as FolderStreams (nothing decoded yet)."""
    from cnnlab.data.loading import _carve_val_indices, folder_split

    classes, files, labels, split, size, mode, bad = scan_folder(name, image_size=image_size, mode=mode,
                                                                 skip_bad=skip_bad)
    train_idx, test_idx = folder_split(name, labels, split, len(classes), test_size=test_size, seed=seed)
    if train_size is not None:
        train_idx = train_idx[:train_size]
    train_idx, val_idx = _carve_val_indices(train_idx, val_size, seed)

    def part(idx):
        return FolderStream([files[i] for i in idx], labels[idx], size=size, mode=mode, mean=mean, std=std,
                            workers=workers)

    channels = 1 if mode == "L" else 3
    return StreamedFolder(tuple(classes), part(train_idx), part(test_idx),
                          part(val_idx) if val_idx is not None else None, (size[0], size[1], channels), bad)
