"""A grid of sample images titled with their class names, as the TensorFlow tutorials draw.

matplotlib is imported lazily (it takes ~0.3 s), and the figure is built with
``matplotlib.figure.Figure`` rather than pyplot, so no GUI backend or global state is touched.
"""

from __future__ import annotations

import math

import numpy as np

from cnnlab.errors import CnnlabError


def plot_dataset_grid(images: np.ndarray, labels: np.ndarray, classes, *, n: int = 25,
                      ncols: int | None = None, cmap: str = "binary", title: str | None = None,
                      cell_inches: float = 2.0):
    """The first ``n`` images in a near-square grid (5x5 for 25), each titled with its class.

    images: (N, H, W, C) uint8 with C = 1 or 3; labels: (N,) ints indexing ``classes``.
    Greyscale images use ``cmap`` ("binary", as the tutorials do: dark ink on white).
    Returns a matplotlib Figure; save it with ``fig.savefig(path)``.
    """
    from cnnlab.scratch.figure import Figure

    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise CnnlabError(f"plot_dataset_grid expects (N, H, W, 1 or 3) images, got shape {images.shape}")
    if len(labels) != len(images):
        raise CnnlabError(f"plot_dataset_grid got {len(images)} images but {len(labels)} labels; give one each")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CnnlabError(f"n must be a positive int, got {n!r}")
    n = min(n, len(images))
    if n == 0:
        raise CnnlabError("plot_dataset_grid got 0 images; pass a non-empty split")
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(cell_inches * ncols, cell_inches * nrows + (0.4 if title else 0)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.set_axis_off()
            continue
        image = images[i]
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap=cmap, vmin=0, vmax=255)
        else:
            ax.imshow(image)
        label = int(labels[i])
        ax.set_title(classes[label] if 0 <= label < len(classes) else str(label), fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
