"""``load(name)``: locate -> (download) -> verify -> parse (or read the parsed cache) -> split."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from cnnlab.data import cache, cifar, digits, folder, idx, sources
from cnnlab.data.archive import extract_archive
from cnnlab.data.dataset import Dataset, Split
from cnnlab.data.download import DownloadError, fetch, md5_of
from cnnlab.data.registry import ARCHIVES, DATASETS, DatasetSpec, get_spec
from cnnlab.errors import CnnlabError

# Where each dataset came from and whether the parsed cache answered: silent unless the caller
# configures logging (logging.getLogger("cnnlab")); ``Dataset.source`` says where, too.
log = logging.getLogger(__name__)


def load(
    name: str,
    *,
    root: str | os.PathLike | None = None,
    download: bool = True,
    train_size: int | None = None,
    val_size: int | float = 0,
    seed: int = 0,
    progress: bool = True,
    verify: bool = True,
    cache: bool = True,
    image_size: int | tuple[int, int] | None = None,
    mode: str | None = None,
    test_size: float = 0.2,
) -> Dataset:
    """Load a dataset as uint8 (N, H, W, C) splits with int64 labels and class names.

    name: "mnist", "fashion-mnist", "cifar10" (see ``DATASETS``), "folder:PATH", or "digits"
        (scikit-learn's bundled 8×8 digits, the offline fallback of ``cnnlab demo``).
    root: a folder searched first (then $CNNLAB_DATA, the user cache, /usr/share/datasets).
    download: when not found, download from the official site into the user cache.
    train_size: keep only the FIRST ``train_size`` training images (official order).
    val_size: a count, or a fraction of the (truncated) training set, moved to ``val`` by a
        seeded random choice (both parts keep their original order).
    verify: check published content checksums (MNIST) and the expected image counts on the
        first parse; ``verify=False`` accepts modified copies.
    cache: keep parsed arrays as .npy in the user cache (see ``cnnlab.data.cache``).
    image_size, mode, test_size: folder datasets only (see ``cnnlab.data.folder``):
        common (H, W) or int, "L" or "RGB", and the per-class test fraction used when the
        folder has no test/ part. Folder splits come back in a seeded random order.
    """
    if not isinstance(name, str):
        raise CnnlabError(f"dataset name must be a string, got {name!r}; e.g. 'mnist' or 'folder:PATH'")
    _check_options(train_size, val_size, seed, test_size)
    if name.startswith("folder:"):
        train, test, classes, source = _load_folder(
            name, image_size=image_size, mode=mode, test_size=test_size, seed=seed,
            progress=progress, use_cache=cache,
        )
    elif name == "digits":
        train, test, classes, source = digits.load_digits(seed=seed, test_size=test_size)
    else:
        spec = get_spec(name)
        found = sources.find(spec, root) or _download(spec, root, download, progress)
        arrays, classes, source = _parsed(spec, found, verify=verify, use_cache=cache)
        train = Split(arrays["train_images"], arrays["train_labels"])
        test = Split(arrays["test_images"], arrays["test_labels"])
    if train_size is not None:
        if train_size > len(train):
            raise CnnlabError(
                f"train_size={train_size} is more than the {len(train):,} training images of {name}; "
                f"use at most {len(train)}"
            )
        train = Split(train.images[:train_size], train.labels[:train_size])
    train, val = _carve_val(train, val_size, seed)
    log.info("%s: %d train, %d val and %d test images from %s", name, len(train), len(val) if val else 0,
             len(test), source)
    return Dataset(name=name, train=train, test=test, classes=tuple(classes), val=val, source=str(source))


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_options(train_size, val_size, seed, test_size) -> None:
    if train_size is not None and (not _is_int(train_size) or train_size < 1):
        raise CnnlabError(f"train_size must be a positive int or None, got {train_size!r}")
    if _is_int(val_size):
        if val_size < 0:
            raise CnnlabError(f"val_size must be >= 0, got {val_size}")
    elif not isinstance(val_size, float) or not 0.0 <= val_size < 1.0:
        raise CnnlabError(f"val_size must be a count (int) or a fraction in [0, 1), got {val_size!r}")
    if not _is_int(seed):
        raise CnnlabError(f"seed must be an int, got {seed!r}")
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)) or not 0.0 <= test_size < 1.0:
        raise CnnlabError(f"test_size must be a fraction in [0, 1), got {test_size!r}")


def _carve_val_indices(idx: np.ndarray, val_size: int | float, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Split the indices of a training set into (train indices, val indices or None), both
    sorted. A float ``val_size`` is a fraction. The one split for in-memory and streamed data,
    so both train on the same images for the same seed."""
    n = len(idx)
    k = int(round(val_size * n)) if isinstance(val_size, float) else int(val_size)
    if k == 0:
        return idx, None
    if k >= n:
        raise CnnlabError(f"val_size={val_size} takes {k:,} of only {n:,} training images; leave some to train on")
    order = np.random.default_rng(seed).permutation(n)
    return idx[np.sort(order[k:])], idx[np.sort(order[:k])]


def _carve_val(train: Split, val_size: int | float, seed: int) -> tuple[Split, Split | None]:
    train_idx, val_idx = _carve_val_indices(np.arange(len(train)), val_size, seed)
    if val_idx is None:
        return train, None
    return (Split(train.images[train_idx], train.labels[train_idx]),
            Split(train.images[val_idx], train.labels[val_idx]))


def _download(spec: DatasetSpec, root, download: bool, progress: bool) -> sources.Found:
    if not download:
        raise CnnlabError(sources.not_found_message(spec, root, "downloading is off (download=False, --no-download)"))
    try:
        fetch(spec.name, root=root, progress=progress)
    except DownloadError as exc:
        raise CnnlabError(sources.not_found_message(spec, root, f"download failed: {exc}")) from None
    found, _ = sources.find_in(spec, sources.cache_dir() / spec.name)
    if found is None:  # pragma: no cover - fetch checks this
        raise CnnlabError(sources.not_found_message(spec, root, "the download did not produce the files"))
    return found


def _extracted(spec: DatasetSpec, archive: Path, verify: bool) -> sources.Found:
    """A CIFAR-10 archive found in a search folder, extracted (once) into the user cache."""
    st = archive.stat()
    key = hashlib.sha1(f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
    target = sources.cache_dir() / "extracted" / key
    found, _ = sources.find_in(spec, target)
    if found is not None:
        return found
    published = ARCHIVES[archive.name].md5
    if verify and (got := md5_of(archive)) != published:
        raise CnnlabError(
            f"{archive}: md5 {got} does not match the published {published}; the archive is corrupt "
            "or modified; delete it and download it again (or load(..., verify=False))"
        )
    extract_archive(archive, target)
    found, _ = sources.find_in(spec, target)
    if found is None or found.layout == "archive":
        raise CnnlabError(f"{archive}: holds no cifar-10-batches-bin/ or cifar-10-batches-py/ folder; download it again")
    return found


def _parsed(spec: DatasetSpec, found: sources.Found, *, verify: bool, use_cache: bool):
    """(arrays, classes, source) for a found dataset, from the parsed cache when possible."""
    source = found.path
    if found.layout == "archive":
        found = _extracted(spec, found.files["archive"], verify)
    files = sorted(found.files.values())
    key = cache.key_for(spec.name, files, {"layout": found.layout, "verify": verify})
    if use_cache and (hit := cache.read(spec.name, key)) is not None:
        log.info("%s: parsed arrays read from the cache %s", spec.name, cache.entry_dir(spec.name, key))
        arrays, meta = hit
        return arrays, tuple(meta["classes"]), source
    if spec.format == "idx":
        arrays = _read_idx(spec, found, verify)
    else:
        arrays = cifar.read_cifar10(found.files, found.layout, spec.classes)
    classes = arrays.pop("classes")
    if verify:
        _check_counts(spec, found.path, arrays)
    if use_cache and not cache.write(spec.name, key, arrays, {"classes": list(classes),
                                                             "sources": [str(f) for f in files]}):
        _not_cached(spec.name, key)
    return arrays, classes, source


def _not_cached(name: str, key: str) -> None:
    log.info("%s: could not write the parsed cache %s (read-only or full disk); the next load parses again",
             name, cache.entry_dir(name, key))


def _read_idx(spec: DatasetSpec, found: sources.Found, verify: bool) -> dict:
    arrays: dict = {"classes": spec.classes}
    for part in ("train", "test"):
        images, labels, digests = idx.read_idx_pair(
            found.files[f"{part}_images"], found.files[f"{part}_labels"], len(spec.classes)
        )
        if verify:
            for role in (f"{part}_images", f"{part}_labels"):
                path = found.files[role]
                _check_content(spec, spec.files[role], path, digests[path])
        arrays[f"{part}_images"], arrays[f"{part}_labels"] = images, labels
    return arrays


def _check_content(spec: DatasetSpec, base: str, path: Path, digest: str) -> None:
    expected = spec.content_md5.get(base)
    if expected and digest != expected:
        raise CnnlabError(
            f"{path}: content md5 {digest} does not match {spec.name}'s published {expected}; the file is "
            "corrupt or from another dataset; delete it and download it again (or load(..., verify=False))"
        )
    for other in DATASETS.values():
        if other is not spec and other.content_md5.get(base) == digest:
            raise CnnlabError(
                f"{path} is {other.name}'s {base}, not {spec.name}'s; point root or $CNNLAB_DATA at a folder "
                f"holding {spec.name} (e.g. <root>/{spec.dirnames[0]}/)"
            )


def _check_counts(spec: DatasetSpec, where: Path, arrays: dict) -> None:
    got = (len(arrays["train_labels"]), len(arrays["test_labels"]))
    shape = tuple(arrays["train_images"].shape[1:])
    if got != spec.counts or shape != spec.shape:
        raise CnnlabError(
            f"{where}: {spec.name} should have {spec.counts[0]:,} training and {spec.counts[1]:,} test images "
            f"of shape {spec.shape}, found {got[0]:,} and {got[1]:,} of shape {shape}; a file is truncated or "
            "from another dataset; download it again (or load(..., verify=False))"
        )


def folder_split(name: str, labels: np.ndarray, split: np.ndarray, n_classes: int, *, test_size: float,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices) of a scanned folder: its own train/test folders, and a
    per-class seeded split of the images no test/ folder claimed, each in a seeded order."""
    rng = np.random.default_rng(seed)
    split = split.copy()
    for c in range(n_classes):
        pool = np.flatnonzero((split == folder.UNSPLIT) & (labels == c))
        chosen = rng.permutation(pool)
        n_test = int(round(test_size * len(pool)))
        split[chosen[:n_test]] = folder.TEST
        split[chosen[n_test:]] = folder.TRAIN
    # A seeded random order, so "the first N training images" is a sample of every class.
    train_idx = rng.permutation(np.flatnonzero(split == folder.TRAIN))
    test_idx = rng.permutation(np.flatnonzero(split == folder.TEST))
    if len(train_idx) == 0:
        raise CnnlabError(f"{name}: no training images remain after the test split; add images or lower test_size")
    return train_idx, test_idx


def _load_folder(name: str, *, image_size, mode, test_size, seed, progress, use_cache):
    path = Path(name[len("folder:") :]).expanduser()
    classes, files, labels, split = folder.scan(path)
    options = {"image_size": image_size, "mode": mode}
    key = cache.key_for(name, files, options) if use_cache else ""
    hit = cache.read(name, key) if use_cache else None
    if hit is not None:
        log.info("%s: decoded images read from the cache %s", name, cache.entry_dir(name, key))
        images = hit[0]["images"]
    else:
        images = folder.read_images(files, image_size=image_size, mode=mode, progress=progress)
        if use_cache and not cache.write(name, key, {"images": images}, {"classes": list(classes),
                                                                          "root": str(path.resolve())}):
            _not_cached(name, key)
    train_idx, test_idx = folder_split(name, labels, split, len(classes), test_size=test_size, seed=seed)
    train = Split(images[train_idx], labels[train_idx])
    test = Split(images[test_idx], labels[test_idx])
    return train, test, classes, path.resolve()
