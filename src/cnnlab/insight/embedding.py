"""The embedding map: where a network puts each example just before it decides.

The features are the input of the model's last ``nn.Linear`` layer (its penultimate
representation), caught with a forward pre-hook in eval mode, batch by batch. A network
without one (SqueezeNet's classifier is a 1x1 conv) gives the input of its last conv layer,
globally average-pooled: the output of its last convolutional block, as torchvision's
feature extractors take it (SqueezeNet: ``features``, 512 values per image). They are
projected to 2-D with PCA (exact, or randomised for wide features; equal to scikit-learn's
up to the sign of each axis), t-SNE (scikit-learn) or UMAP (``umap-learn``, the optional
``explain`` extra). :func:`run_embedding` caches a run's map in the run directory.

:func:`sprite_sheet` tiles thumbnails the way TensorBoard's projector reads them: a square
sheet, thumbnails of one square size row by row, and never more than 8192 px a side (the
projector fails on larger or non-square sheets). Each image is letterboxed into its square
cell, so any size and aspect ratio works.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.files import write_with
from cnnlab.insight.featurevis import frozen_model
from cnnlab.insight.stream_images import image_batches, load_test_images, take

__all__ = ["METHODS", "Embedding", "SpriteSheet", "embed", "pca_2d", "penultimate_features", "project",
           "run_embedding", "sprite_sheet", "sprite_thumb"]

METHODS = ("pca", "tsne", "umap")
UMAP_MISSING = "UMAP needs the 'explain' extra: pip install 'cnnlab[explain]'"
MAX_SPRITE_SIDE = 8192  # TensorBoard's projector refuses larger sprite sheets (WebGL texture limit)


@dataclass(frozen=True, eq=False)
class Embedding:
    """A 2-D map of examples: ``coords`` (N, 2) float32, ``labels`` and ``predictions`` (N,)
    int64, ``wrong`` (N,) bool (prediction differs from label), ``method`` ('pca', 'tsne'
    or 'umap') and ``indices`` (N,) int64: which examples of the split these are."""

    coords: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    method: str
    indices: np.ndarray
    wrong: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "wrong", np.asarray(self.predictions) != np.asarray(self.labels))


# --------------------------------------------------------------------------- features


def _feature_layer(model: nn.Module) -> tuple[nn.Module, bool]:
    """(the module whose input is the features, whether to pool them globally): the last
    ``nn.Linear``, else the last ``nn.Conv2d`` (its input pooled over H and W)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears:
        return linears[-1], False
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise CnnlabError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d layer, so it has no penultimate "
                          "features to map; use a model with a dense or convolutional classifier")
    return convs[-1], True


def penultimate_features(model: nn.Module, images, *, preprocess: Callable | None = None,
                         batch_size: int = 512, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(features (N, F) float32, predictions (N,) int64)``: the input of the model's last
    ``nn.Linear`` layer (none: the input of its last ``nn.Conv2d``, averaged over H and W)
    and the argmax of the model's output, for every image.

    ``images``: a float tensor (N, C, H, W) as the model takes it, or anything ``preprocess``
    turns into one batch by batch (e.g. uint8 (N, H, W, C) with ``Run.preprocess``, or a
    streamed split's ``StreamImages``, decoded batch by batch), so only one batch of float32
    (and of decoded images) is held at a time. Eval mode, ``torch.inference_mode``; the model's
    modes and hooks are as before afterwards. ``progress``: a tqdm bar of the batches.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise CnnlabError(f"batch_size must be a positive int, got {batch_size!r}")
    if preprocess is None and not (isinstance(images, torch.Tensor) and images.ndim == 4):
        raise CnnlabError(f"images must be a float tensor (N, C, H, W), or pass preprocess=; got {type(images).__name__}")
    layer, pool = _feature_layer(model)
    device = next(model.parameters(), torch.empty(0)).device
    caught: list[torch.Tensor] = []
    feats, preds = [], []
    handle = layer.register_forward_pre_hook(lambda mod, inputs: caught.append(inputs[0]))
    try:
        with frozen_model(model), torch.inference_mode():
            batches = image_batches(images, batch_size)
            if progress:
                from tqdm.auto import tqdm

                batches = tqdm(batches, total=-(-len(images) // batch_size), desc="features", unit="batch",
                               leave=False)
            for batch in batches:  # a streamed split: decoded batch by batch
                x = preprocess(batch) if preprocess is not None else batch
                caught.clear()
                out = model(x.to(device))  # (B, classes)
                f = caught[-1].mean((2, 3)) if pool and caught[-1].ndim == 4 else caught[-1]  # last call: its input
                feats.append(f.reshape(len(x), -1).float().cpu())
                preds.append(out.reshape(len(x), -1).argmax(1).cpu())
    finally:
        handle.remove()
    if not feats:
        raise CnnlabError("no images given; pass at least one image")
    return torch.cat(feats).numpy(), torch.cat(preds).numpy().astype(np.int64)


# --------------------------------------------------------------------------- projections


def _check_features(features) -> np.ndarray:
    x = np.asarray(features)
    if x.ndim != 2 or x.shape[0] < 3 or not np.issubdtype(x.dtype, np.number):
        raise CnnlabError(f"features must be a numeric (N, F) array with N >= 3, got {x.dtype} {x.shape}")
    if not np.isfinite(x).all():
        raise CnnlabError("features hold NaN or inf; the model diverged or its weights are damaged")
    return x


def pca_2d(features, *, seed: int = 0) -> np.ndarray:
    """The first two principal-component scores (N, 2) float32 of ``features`` (N, F):
    scikit-learn's ``PCA`` (its solver chosen by size, randomised ones seeded with ``seed``;
    each axis signed so its largest loading is positive, scikit-learn's ``svd_flip``). With a
    single feature (or sample) the second axis is all zeros.
    """
    from sklearn.decomposition import PCA

    x = _check_features(features).astype(np.float64)
    n = min(2, *x.shape)
    if not np.ptp(x, axis=0).any():  # every row the same (e.g. all dead ReLUs): no direction to find
        return np.zeros((len(x), 2), dtype=np.float32)
    scores = PCA(n_components=n, random_state=seed).fit_transform(x)
    if n < 2:
        scores = np.pad(scores, ((0, 0), (0, 2 - n)))
    return scores.astype(np.float32)


def _tsne(x: np.ndarray, seed: int, perplexity: float) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if x.shape[1] > 50:  # t-SNE's usual first step (van der Maaten 2008): PCA to 50 dims, much faster
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    perplexity = min(float(perplexity), (len(x) - 1) / 3)  # scikit-learn needs perplexity < N
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    return tsne.fit_transform(x).astype(np.float32)


def _umap(x: np.ndarray, seed: int) -> np.ndarray:
    try:
        import umap
    except ImportError as exc:
        raise CnnlabError(UMAP_MISSING) from exc
    with warnings.catch_warnings():  # "n_jobs overridden to 1 by setting random_state": seeded means serial
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=seed)
        return reducer.fit_transform(x).astype(np.float32)


def project(features, *, method: str = "pca", seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """``features`` (N, F) -> 2-D coordinates (N, 2) float32 by ``method``: 'pca' (see
    :func:`pca_2d`), 'tsne' (scikit-learn, PCA init, features first reduced to 50 dims by
    PCA when wider) or 'umap' (``umap-learn``). Seeded: the same call gives the same map."""
    if method not in METHODS:
        raise CnnlabError(f"method {method!r} is not one of {', '.join(METHODS)}")
    x = _check_features(features).astype(np.float32)
    if method == "pca":
        return pca_2d(x, seed=seed)
    if method == "tsne":
        return _tsne(x, seed, perplexity)
    return _umap(x, seed)


def embed(model: nn.Module, images, labels, *, method: str = "pca", preprocess: Callable | None = None,
          seed: int = 0, batch_size: int = 512, indices=None, progress: bool = False) -> Embedding:
    """The embedding map of ``images`` (see :func:`penultimate_features`) with their ``labels``
    (N,), projected by ``method`` (see :func:`project`). ``indices`` (default 0..N-1) records
    which examples of a larger split these are."""
    if method not in METHODS:
        raise CnnlabError(f"method {method!r} is not one of {', '.join(METHODS)}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (len(images),):
        raise CnnlabError(f"got {len(images)} images but labels of shape {labels.shape}; pass one label per image")
    features, preds = penultimate_features(model, images, preprocess=preprocess, batch_size=batch_size,
                                           progress=progress)
    coords = project(features, method=method, seed=seed)
    idx = np.arange(len(labels), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    return Embedding(coords=coords, labels=labels, predictions=preds, method=method, indices=idx)


# --------------------------------------------------------------------------- a run's map, cached


def _cache_matches(path: Path, meta: dict) -> Embedding | None:
    """The cached embedding when its file exists, reads and was made for ``meta``."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if any(str(z[key]) != str(value) for key, value in meta.items()):
                return None
            return Embedding(coords=z["coords"], labels=z["labels"], predictions=z["predictions"],
                             method=str(z["method"]), indices=z["indices"])
    except (OSError, ValueError, KeyError, EOFError):  # damaged or from another version: compute again
        return None


def run_embedding(run_dir, *, method: str = "pca", limit: int | None = None, seed: int = 0,
                  batch_size: int = 512, refresh: bool = False, model: nn.Module | None = None,
                  data=None, progress: bool = False) -> Embedding:
    """The embedding map of a run's test split, computed once and cached as
    ``RUN_DIR/embedding-<method>.npz`` (written atomically).

    The cache is used while it was made from the same checkpoint file (its modification
    time is stored: retraining invalidates it) with the same ``limit`` and ``seed``;
    ``refresh=True`` recomputes. ``limit``: map a seeded random subset of that many test
    examples (t-SNE of 10,000 takes minutes on a laptop CPU). ``model`` (the run's best
    weights) and ``data`` (``run.load_data()`` or ``run.load_stream()``) save loading them
    again when the caller has. A streamed run's test images are decoded batch by batch (only
    the sampled ones with ``limit``), never all at once; what is kept is one feature row each.
    """
    from cnnlab.runs.directory import load_run

    if method not in METHODS:
        raise CnnlabError(f"method {method!r} is not one of {', '.join(METHODS)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 3):
        raise CnnlabError(f"limit must be an int >= 3 (examples to map), got {limit!r}")
    run = load_run(run_dir)
    weights = run.weights_path("best")
    meta = {"weights": weights.name, "weights_mtime_ns": weights.stat().st_mtime_ns, "limit": limit or 0,
            "seed": seed}
    path = run.path / f"embedding-{method}.npz"
    cached = None if refresh else _cache_matches(path, meta)
    if cached is not None:
        return cached
    images, labels = load_test_images(run, data)  # a streamed run's: nothing decoded yet
    idx = np.arange(len(labels))
    if limit is not None and limit < len(idx):
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), size=limit, replace=False))
    model = model if model is not None else run.build_model("best")
    result = embed(model, take(images, idx), labels[idx], method=method, preprocess=run.preprocess,
                   seed=seed, batch_size=batch_size, indices=idx, progress=progress)
    write_with(path, lambda f: np.savez(f, coords=result.coords, labels=result.labels, predictions=result.predictions,
                                        indices=result.indices, method=method, **meta))
    return result


# --------------------------------------------------------------------------- sprite sheet


class SpriteSheet(NamedTuple):
    """``sheet`` uint8 (S, S, C), square; ``cells`` (N, 4) int64 ``(x, y, width, height)`` of
    each image's pixels on the sheet (its letterboxed box inside its square cell); ``thumb``
    the cell size in pixels (TensorBoard's ``single_image_dim``)."""

    sheet: np.ndarray
    cells: np.ndarray
    thumb: int


def sprite_thumb(n: int, *, thumb: int = 64, max_side: int = MAX_SPRITE_SIDE) -> int:
    """The cell size for ``n`` images: ``thumb``, shrunk so a square grid of ceil(sqrt(n))
    cells a side fits in ``max_side`` pixels (100,000 images: 25 px in 8192)."""
    per_row = math.ceil(math.sqrt(n))
    best = min(int(thumb), max_side // per_row)
    if n < 1 or best < 1:
        raise CnnlabError(f"cannot fit {n} images in a {max_side}x{max_side} sprite sheet "
                          f"(at most {max_side ** 2}); pass fewer images")
    return best


def _as_uint8(images) -> np.ndarray:
    """uint8 as it is; floats in [0, 1] scaled to 0..255."""
    a = np.asarray(images)
    if a.dtype == np.uint8:
        return a
    if not np.issubdtype(a.dtype, np.number):
        raise CnnlabError(f"images must be uint8 or floats in [0, 1], got dtype {a.dtype}")
    return (np.clip(a.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)


def _groups(images) -> tuple[int, list[tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]]]:
    """(channels, [(indices, load)]): images of one size go together so they resize as a batch;
    ``load(chunk)`` gives uint8 (b, h, w, channels)."""
    if isinstance(images, np.ndarray):  # one size for all: converted a chunk at a time
        if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4)):
            raise CnnlabError(f"images must be (N, H, W) or (N, H, W, C) with C in 1, 3, 4; got {images.shape}")
        channels = 1 if images.ndim == 3 or images.shape[-1] == 1 else 3

        def load_array(chunk: np.ndarray) -> np.ndarray:
            return _as_uint8(images[chunk]).reshape(len(chunk), *images.shape[1:3], -1)[..., :3]

        return channels, [(np.arange(len(images)), load_array)]
    arrays = []
    for a in images:
        a = _as_uint8(a)
        a = a[..., None] if a.ndim == 2 else a
        if a.ndim != 3 or a.shape[-1] not in (1, 3, 4) or min(a.shape[:2]) < 1:
            raise CnnlabError(f"each image must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {np.shape(a)}")
        arrays.append(a[..., :3])
    channels = 3 if any(a.shape[-1] == 3 for a in arrays) else 1
    by_shape: dict[tuple, list[int]] = {}
    for i, a in enumerate(arrays):
        by_shape.setdefault(a.shape[:2], []).append(i)

    def load(chunk: np.ndarray) -> np.ndarray:
        batch = np.stack([arrays[i] for i in chunk])
        return np.repeat(batch, 3, axis=-1) if batch.shape[-1] == 1 and channels == 3 else batch

    return channels, [(np.asarray(members), load) for members in by_shape.values()]


def _letterbox(group: np.ndarray, thumb: int, background: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Same-size uint8 images (n, h, w, c) -> (n, thumb, thumb, c) with the image resized to fit
    (aspect kept, antialiased) and centred; returns the box (x, y, w, h) inside the cell."""
    n, h, w, c = group.shape
    scale = thumb / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    x = torch.from_numpy(np.ascontiguousarray(group)).permute(0, 3, 1, 2).float()  # (n, c, h, w)
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    out = np.full((n, thumb, thumb, c), background, dtype=np.uint8)
    top, left = (thumb - nh) // 2, (thumb - nw) // 2
    out[:, top:top + nh, left:left + nw] = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out, (left, top, nw, nh)


def sprite_sheet(images, *, thumb: int = 64, max_side: int = MAX_SPRITE_SIDE, background: int = 0) -> SpriteSheet:
    """Tile ``images`` into a square sprite sheet for TensorBoard's projector (see module doc).

    ``images``: a uint8 or [0, 1] float array (N, H, W[, C]), or a list of images of any
    sizes and aspect ratios (grey ones become RGB when colours are mixed). Each becomes a
    ``thumb``-pixel square cell, letterboxed on ``background``; ``thumb`` is lowered when
    needed so the sheet stays within ``max_side`` (8192: 100,000 images get 25 px cells).
    Cells run row by row from the top left, ceil(sqrt(N)) a row, as TensorBoard expects.
    """
    n = len(images)
    if n == 0:
        raise CnnlabError("no images given for the sprite sheet")
    size = sprite_thumb(n, thumb=thumb, max_side=max_side)
    per_row = math.ceil(math.sqrt(n))
    channels, groups = _groups(images)
    cells = np.full((per_row * per_row, size, size, channels), background, dtype=np.uint8)
    boxes = np.zeros((n, 4), dtype=np.int64)
    for members, load in groups:
        for chunk in np.array_split(members, math.ceil(len(members) / 4096)):  # bounded float32 memory
            cells[chunk], box = _letterbox(load(chunk), size, background)
            boxes[chunk] = box
    rows, cols = np.divmod(np.arange(n), per_row)
    boxes[:, 0] += cols * size
    boxes[:, 1] += rows * size
    sheet = cells.reshape(per_row, per_row, size, size, channels).transpose(0, 2, 1, 3, 4)  # (row, y, col, x, c)
    return SpriteSheet(sheet=sheet.reshape(per_row * size, per_row * size, channels), cells=boxes, thumb=size)
