"""IDX files (MNIST, Fashion-MNIST), gzipped or not.

Format (http://yann.lecun.com/exdb/mnist/): a 4-byte magic number ``00 00 TT DD`` where TT is
the element type (0x08 = unsigned byte, the only one these datasets use) and DD the number of
dimensions; then DD big-endian uint32 sizes; then the elements, row-major. Images files have
3 dimensions (N, rows, cols), label files 1 (N,).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import zlib
from pathlib import Path

import numpy as np

from cnnlab.errors import CnnlabError

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08
_FIX = "delete it and download it again"


def read_bytes(path: Path) -> bytes:
    """The file's IDX bytes, gunzipped when the file starts with the gzip magic number."""
    raw = Path(path).read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        # gzip.decompress handles multi-member files; 0.12 s for MNIST's 47 MB of train images.
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise CnnlabError(f"{path}: gzip data is truncated or corrupt ({exc}); {_FIX}") from None


def parse(data: bytes, path: Path, ndim: int) -> np.ndarray:
    """IDX bytes -> a writable uint8 array of ``ndim`` dimensions, every size checked."""
    kind = "images" if ndim == 3 else "labels"
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != _UBYTE:
        raise CnnlabError(
            f"{path}: magic number {data[:4].hex() or 'missing'} is not an IDX unsigned-byte header "
            f"(expected 000008{ndim:02x}); the file is not IDX {kind} or is corrupt; {_FIX}"
        )
    if data[3] != ndim:
        raise CnnlabError(
            f"{path}: IDX file has {data[3]} dimensions but {kind} files have {ndim}; it is misnamed "
            f"or corrupt; {_FIX}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CnnlabError(f"{path}: {len(data)} bytes is shorter than its IDX header; the file is truncated; {_FIX}")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", ndim, 4))
    # Python ints: np.prod in int64 wraps (2**24 * 2**25 * 3 * 2**24 is 0 mod 2**64), which let a
    # 16-byte header claiming a 2**73-byte file through to reshape (found by fuzz/fuzz_parsers.py).
    expected = header + math.prod(shape)
    if len(data) != expected:
        raise CnnlabError(
            f"{path}: {len(data):,} bytes but its header promises {expected:,} for shape {shape}; "
            f"the file is truncated or corrupt; {_FIX}"
        )
    # .copy(): frombuffer over bytes is read-only, and torch.from_numpy warns about that.
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape).copy()


def read_idx(path: Path, ndim: int) -> tuple[np.ndarray, str]:
    """Read one IDX file; return the array and the MD5 of its uncompressed bytes."""
    data = read_bytes(path)
    return parse(data, path, ndim), hashlib.md5(data).hexdigest()


def check_labels(labels: np.ndarray, num_classes: int, path: Path) -> np.ndarray:
    """(N,) labels as int64, each checked to lie in 0..num_classes-1."""
    labels = labels.astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        i = int(bad[0])
        raise CnnlabError(
            f"{path}: label {labels[i]} at index {i} is outside 0..{num_classes - 1}; "
            f"the file is corrupt or from another dataset; {_FIX}"
        )
    return labels


def read_idx_pair(images_path: Path, labels_path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """An images file and its labels file -> (N, H, W, 1) uint8, (N,) int64, {path: content md5}."""
    images, images_md5 = read_idx(images_path, 3)
    labels, labels_md5 = read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise CnnlabError(
            f"{images_path} holds {len(images):,} images but {labels_path} holds {len(labels):,} labels; "
            "one of them is truncated or from another dataset; fetch both again"
        )
    labels = check_labels(labels, num_classes, labels_path)
    return images[..., None], labels, {images_path: images_md5, labels_path: labels_md5}
