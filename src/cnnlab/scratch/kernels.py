"""Named classic kernels, a plain dict: name -> Kernel(description, weights).

Weights are written for :func:`cnnlab.scratch.conv.correlate2d`, which is what CNN layers compute
(no flip): ``sobel-x`` is positive where brightness increases to the right, ``sobel-y``
where it increases downwards. Grey kernels are ``(kh, kw)``; the colour kernel ``brown`` is
``(kh, kw, C)`` with the colour channel last and sums R, G, B into one map. The arrays are
read-only; :func:`get_kernel` returns a writable copy.
"""

from __future__ import annotations

import difflib
import numbers
from typing import NamedTuple

import numpy as np

from cnnlab.errors import CnnlabError

__all__ = ["ALIASES", "KERNELS", "Kernel", "get_kernel", "random_kernels", "resolve_name"]


class Kernel(NamedTuple):
    description: str
    weights: np.ndarray


def _frozen(rows, scale=1.0) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float64) * scale
    array.setflags(write=False)
    return array


_SOBEL_X = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
_SCHARR_X = [[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]]
_PREWITT_X = [[-1, 0, 1], [-1, 0, 1], [-1, 0, 1]]
_EDGE_HORIZONTAL = [[1, 1, 1], [0, 0, 0], [-1, -1, -1]]

# The tutorials' 3x3x3 colour filter, as they print it: colour channel first (R, G, B),
# each a 3x3 grid of (row, column). Red weighs positive, green a little, blue negative, so
# the filter lights up on reddish-brown, blue-poor regions.
_BROWN_CHANNEL_FIRST = [
    [[0.13871045, 0.17157242, 0.12934428], [0.16168842, 0.20229845, 0.14835016],
     [0.135694, 0.16206263, 0.11727387]],
    [[0.04231958, 0.05471011, 0.03167877], [0.0462575, 0.06581022, 0.03104937],
     [0.04185439, 0.04734124, 0.02087744]],
    [[-0.15704881, -0.16666673, -0.16600266], [-0.17439997, -0.17757156, -0.18760149],
     [-0.15435153, -0.17037505, -0.17269668]],
]

KERNELS: dict[str, Kernel] = {
    "identity": Kernel("leaves the image unchanged (a single 1 in the centre)",
                       _frozen([[0, 0, 0], [0, 1, 0], [0, 0, 0]])),
    "box-blur": Kernel("mean of the 3x3 neighbourhood", _frozen(np.ones((3, 3)), 1 / 9)),
    "gaussian-blur": Kernel("3x3 binomial approximation of a Gaussian blur (sigma ~0.7)",
                            _frozen([[1, 2, 1], [2, 4, 2], [1, 2, 1]], 1 / 16)),
    "sharpen": Kernel("boosts the centre against its 4 neighbours (identity minus laplacian-4)",
                      _frozen([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])),
    "laplacian-4": Kernel("second derivative over the 4 neighbours: edges in every direction",
                          _frozen([[0, 1, 0], [1, -4, 1], [0, 1, 0]])),
    "laplacian-8": Kernel("second derivative over all 8 neighbours, centre positive",
                          _frozen([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]])),
    "sobel-x": Kernel("horizontal gradient (finds vertical edges), smoothed 1-2-1 vertically",
                      _frozen(_SOBEL_X)),
    "sobel-y": Kernel("vertical gradient (finds horizontal edges), smoothed 1-2-1 horizontally",
                      _frozen(np.transpose(_SOBEL_X))),
    "scharr-x": Kernel("horizontal gradient like sobel-x, with 3-10-3 weights that are more rotation-invariant",
                       _frozen(_SCHARR_X)),
    "scharr-y": Kernel("vertical gradient like sobel-y, with 3-10-3 weights", _frozen(np.transpose(_SCHARR_X))),
    "prewitt-x": Kernel("horizontal gradient (finds vertical edges), unweighted rows", _frozen(_PREWITT_X)),
    "prewitt-y": Kernel("vertical gradient (finds horizontal edges), unweighted columns",
                        _frozen(np.transpose(_PREWITT_X))),
    "edge-horizontal": Kernel("finds horizontal edges: positive where the top is brighter than the bottom",
                              _frozen(_EDGE_HORIZONTAL)),
    "edge-vertical": Kernel("finds vertical edges: positive where the left is brighter than the right",
                            _frozen(np.transpose(_EDGE_HORIZONTAL))),
    "emboss": Kernel("relief: bright where the bottom right is brighter than the top left",
                     _frozen([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])),
    "brown": Kernel("the tutorials' 3x3x3 colour filter (kh, kw, RGB): red minus blue, lights up brown",
                    _frozen(np.transpose(_BROWN_CHANNEL_FIRST, (1, 2, 0)))),
}

# Short names people type; each points at an entry of KERNELS.
ALIASES: dict[str, str] = {
    "laplacian": "laplacian-4",
    "gaussian": "gaussian-blur",
    "blur": "box-blur",
    "box": "box-blur",
}


def resolve_name(name: str) -> str:
    """The KERNELS key a typed name means: case, spaces and underscores are forgiven
    (``Sobel_X`` -> ``sobel-x``) and ALIASES apply (``laplacian`` -> ``laplacian-4``).

    An unknown name raises CnnlabError that suggests the closest names and lists all of them.
    """
    if not isinstance(name, str):
        raise CnnlabError(f"kernel name must be a string; got {name!r}")
    key = "-".join(name.strip().lower().replace("_", " ").replace("-", " ").split())
    key = ALIASES.get(key, key)
    if key not in KERNELS:
        close = difflib.get_close_matches(key, [*KERNELS, *ALIASES], n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise CnnlabError(f"unknown kernel {name!r}; {hint}known kernels: {', '.join(KERNELS)}")
    return key


def get_kernel(name: str) -> np.ndarray:
    """A writable copy of the weights of a named kernel; names as in :func:`resolve_name`."""
    return KERNELS[resolve_name(name)].weights.copy()


def random_kernels(n: int, size: int = 3, channels: int | None = None, seed: int = 0) -> np.ndarray:
    """``n`` random kernels, uniform in [-1, 0), as a bank ``(n, size, size[, channels])``.

    The tutorials use them to show that untrained filters find nothing in particular.
    ``channels=None`` gives grey kernels; seeded, so the same call gives the same bank.
    """
    for label, value, least in (("n", n, 1), ("size", size, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise CnnlabError(f"{label} must be an integer >= {least}; got {value!r}")
    if channels is not None and (
        isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1
    ):
        raise CnnlabError(f"channels must be None (grey) or an integer >= 1; got {channels!r}")
    shape = (n, size, size) if channels is None else (n, size, size, channels)
    return np.random.default_rng(seed).uniform(-1.0, 0.0, size=shape)
