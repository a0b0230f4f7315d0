"""Pretrained ImageNet networks: weights, preprocessing, class names, top-k predictions.

``vgg16``, ``squeezenet1_1``, ``resnet18`` and ``mobilenet_v3_small`` are keyed exactly
like torchvision, so torchvision's official weight files load unchanged. Weights come
from a file you name (``weights=PATH``), else from torch hub's cache
(``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``: where
``torch.hub.load_state_dict_from_url`` and torchvision keep them, so files a user already
has are not fetched again), else they are downloaded once from torchvision's URLs into
``$XDG_CACHE_HOME/cnnlab/models`` (default ``~/.cache/cnnlab/models``), verified against
the sha256 prefix in the file name (as ``torch.hub`` does with ``check_hash=True``) and
written atomically. Files are always read with
``torch.load(..., weights_only=True)``: a weights file cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from cnnlab import fast as fast_paths
from cnnlab import files
from cnnlab.errors import CnnlabError
from cnnlab.models import MODELS
from cnnlab.models.squeezenet import SqueezeNet
from cnnlab.models.weights import check_state_dict
from cnnlab.precision import autocast, resolve_precision

URLS = {
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "squeezenet1_1": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "mobilenet_v3_small": "https://download.pytorch.org/models/mobilenet_v3_small-047dcff4.pth",
}
# torchvision's ImageNet statistics (RGB, images scaled to [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe's (and Keras' "caffe" preprocess_input) BGR pixel means, images in 0..255.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
STYLES = ("torchvision", "caffe")

# What a weights download did (URL, verified digest), for a caller's logging; silent by default.
log = logging.getLogger(__name__)

# Networks that "auto" keeps in fp32 although the hardware has bf16, and why (bf16 inference
# must keep the top-1 of >= 99.9% of images). SqueezeNet 1.1, measured
# (tests/test_pretrained.py): the reference pair and the cat keep their top-1, but
# grace_hopper's flips (mortarboard 20.2% vs bow tie 19.1% in fp32, a tie in bf16) and so
# does that of 61 of 1,000 CIFAR-10 test images upscaled to 224 (93.9% agreement): its
# small fire modules leave many near-ties, and bf16's 8-bit mantissa moves the scores
# by about a point. It is also cheap (0.35 GFLOP an image), so fp32 costs little.
FP32_UNDER_AUTO = {"squeezenet1_1": "bf16 changes its top-1 on near-ties (93.9% agreement measured)"}

# The opener used for downloads; tests replace it to serve local bytes.
_urlopen = urllib.request.urlopen


@lru_cache(maxsize=1)
def _class_names() -> tuple[str, ...]:
    return tuple(json.loads((Path(__file__).with_name("imagenet_classes.json")).read_text("utf-8")))


def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet-1k class names in index order (Keras' names, e.g. 'Egyptian_cat')."""
    return list(_class_names())


# ---------------------------------------------------------------------------- weights


def cache_dir() -> Path:
    """Where downloaded weights live: ``cnnlab.files.cache_dir("models")``."""
    return files.cache_dir("models")


def hub_checkpoint(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url(url)`` keeps its copy of ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def download_weights(url: str, *, progress: bool = True, download: bool = True) -> Path:
    """Return a cached copy of ``url`` (torch hub's, else cnnlab's), downloading it first if needed.

    The file name must carry a sha256 prefix (``name-<hex>.pth``, torch.hub's convention);
    the download is verified against it and renamed into place only when it matches, so
    a failed or corrupt download leaves nothing behind. ``download=False`` (``--offline``)
    refuses to download a file that is in neither cache.
    """
    filename = url.rsplit("/", 1)[-1]
    match = re.search(r"-([a-f0-9]+)\.", filename)
    if match is None:
        raise CnnlabError(f"weights URL {url!r} has no sha256 prefix in its file name (name-<hex>.pth)")
    for cached in (hub_checkpoint(url), cache_dir() / filename):
        if cached.is_file():
            return cached
    target = cache_dir() / filename
    if not download:
        raise CnnlabError(f"{filename} is not in {hub_checkpoint(url).parent} or {cache_dir()} and downloading is off "
                          "(--offline); run once online, or pass a file with --weights PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s into %s", url, target.parent)
    try:
        with files.atomic_open(target) as tmp, _urlopen(url, timeout=30) as response:
            sha = _stream_into(tmp, response, filename, progress)
            if not sha.startswith(match.group(1)):
                raise CnnlabError(f"download of {url} is corrupt: sha256 {sha[:16]}... does not start "
                                  f"with {match.group(1)}; try again, or pass a file with --weights PATH")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise CnnlabError(f"cannot download {url} ({reason}); offline? fetch that file elsewhere and pass it "
                          "with --weights PATH (weights=PATH in Python)") from exc
    log.info("%s: sha256 %s... verified", filename, sha[:16])
    return target


def _stream_into(out, response, desc: str, progress: bool) -> str:
    """Copy ``response`` into ``out`` with a progress bar; return the sha256 hex digest."""
    sha = hashlib.sha256()
    size = response.headers.get("Content-Length")
    with tqdm(total=int(size) if size else None, unit="B", unit_scale=True, unit_divisor=1024,
              desc=desc, disable=not progress) as bar:
        while chunk := response.read(1 << 20):
            out.write(chunk)
            sha.update(chunk)
            bar.update(len(chunk))
    return sha.hexdigest()


def load_state_dict(path) -> dict[str, torch.Tensor]:
    """Read a state dict with ``torch.load(weights_only=True)``; CnnlabError if unreadable.

    Accepts a plain state dict, a checkpoint holding one under ``"state_dict"``, or a
    ``.safetensors`` file (as ``cnnlab export --format safetensors`` writes)."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"weights file {str(path)!r} not found; pass an existing .pth file")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged zip or pickle fails in many ways (IndexError, struct.error, ...)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CnnlabError(f"cannot read weights {str(path)!r} ({reason[:200]}); the file is truncated or not "
                          "a PyTorch state dict: download it again") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CnnlabError(f"weights {str(path)!r} hold a {type(state).__name__}, not a state dict of tensors; "
                          "save them with torch.save(model.state_dict(), path)")
    return state


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from cnnlab.extras import require

    st = require("safetensors.torch", extra="export", package="safetensors", purpose="reading .safetensors weights")
    try:
        return st.load_file(str(path))
    except Exception as exc:  # safetensors' own SafetensorError for a damaged header
        raise CnnlabError(f"cannot read weights {str(path)!r} as safetensors ({str(exc).splitlines()[0][:150]}); "
                          "the file is truncated or not a .safetensors file") from exc


def load_pretrained(name: str = "squeezenet1_1", *, weights=None, progress: bool = True,
                    winograd: bool = False, download: bool = True, fast: str = "auto") -> nn.Module:
    """The ImageNet network ``name`` (one of ``URLS``) with its weights, in eval mode.

    ``weights``: a state-dict file keyed like torchvision; None downloads torchvision's
    official file on first use (see ``download_weights``). The model is built on the meta
    device and takes the loaded tensors as they are (no random init of 138 M parameters).
    ``winograd``: compute the wide 3×3 convolutions with Winograd F(4×4, 3×3) for faster
    CPU inference (``cnnlab.fast.winograd``, a fast path: ``fast="off"`` leaves it out); the
    model's state-dict keys then differ from torchvision's. Process-wide malloc tuning is
    the caller's choice (``cnnlab.fast.keep_freed_memory``; the CLI applies it).
    """
    if name not in URLS:
        raise CnnlabError(f"no pretrained network {name!r}; choose one of {', '.join(URLS)}")
    path = download_weights(URLS[name], progress=progress, download=download) if weights is None else Path(weights)
    state = load_state_dict(path)
    with torch.device("meta"):
        model = MODELS[name]()
    check_state_dict(model, state, source=repr(str(path)), name=name,
                     fix=f"pass {name} weights (torchvision keys) or pick the matching --model")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(state, assign=True)
    return fast_paths.winograd_model(model, fast) if winograd else model.eval()


# ----------------------------------------------------------------------- preprocessing


def open_image(image) -> Image.Image:
    """A path (str/Path; 'grace_hopper' names matplotlib's sample portrait), a PIL image or a
    uint8 array (H, W) / (H, W, 3) -> RGB PIL image. Files are read by cnnlab's one reader
    (``cnnlab.scratch.images.load_image``); CnnlabError names a file that is not an image."""
    from cnnlab.scratch.images import load_image, to_8bit, to_uint8

    if isinstance(image, Image.Image):
        return to_8bit(image).convert("RGB")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise CnnlabError(f"image array of dtype {image.dtype} and shape {image.shape} is not uint8 (H, W) "
                              "or (H, W, 3); convert with (x * 255).astype(np.uint8)")
        return Image.fromarray(image).convert("RGB")
    if not isinstance(image, (str, os.PathLike)):
        raise CnnlabError(f"image {image!r} is not a path, PIL image or uint8 array")
    return Image.fromarray(to_uint8(load_image(image, colour="rgb")))


def preprocess(image, *, style: str = "torchvision", size: int = 224) -> torch.Tensor:
    """One photo -> a (3, size, size) float32 tensor, as the ImageNet nets were trained.

    Resize the short side to ``size * 8 / 7`` (256 for 224) with bilinear filtering, crop
    the centre ``size`` x ``size`` (torchvision's Resize + CenterCrop), then
    ``style='torchvision'``: RGB in [0, 1], minus IMAGENET_MEAN, over IMAGENET_STD;
    ``style='caffe'``: BGR in 0..255 minus CAFFE_BGR_MEAN (weights converted from Keras/Caffe).
    """
    if style not in STYLES:
        raise CnnlabError(f"style {style!r} is not one of {', '.join(STYLES)}")
    img = open_image(image)
    short = size * 256 // 224
    w, h = img.size
    # torchvision truncates the long side: int(256 * long / short).
    new_w, new_h = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    img = img.resize((new_w, new_h), Image.BILINEAR)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)  # (3, H, W) RGB 0..255
    if style == "torchvision":
        mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return (x / 255 - mean) / std
    return x.flip(0) - torch.tensor(CAFFE_BGR_MEAN).view(3, 1, 1)


# ------------------------------------------------------------------------- prediction


def top_k(probabilities: torch.Tensor, k: int = 5) -> list[list[tuple[int, str, float]]]:
    """(N, 1000) probabilities -> per image the k best (class index, name, probability)."""
    names = _class_names()
    values, indices = probabilities.topk(k, dim=1)
    return [[(int(i), names[int(i)], float(p)) for p, i in zip(vs.tolist(), ids.tolist(), strict=True)]
            for vs, ids in zip(values, indices, strict=True)]


def inference_precision(model, precision: str = "auto", device: torch.device | str = "cpu") -> str:
    """What ``precision`` means for the pretrained network ``model`` (a name in ``URLS`` or a
    loaded network) on ``device``: "auto" is bf16 where the hardware has it
    (``cnnlab.precision``) except for the networks in ``FP32_UNDER_AUTO``."""
    resolved = resolve_precision(precision, device)
    name = "squeezenet1_1" if isinstance(model, SqueezeNet) else model
    return "fp32" if precision == "auto" and name in FP32_UNDER_AUTO else resolved


def classify(images_or_paths, *, model="squeezenet1_1", weights=None, top: int = 5,
             style: str = "torchvision", batch_size: int = 8, progress: bool = True, winograd: bool = False,
             download: bool = True, device: torch.device | str | None = None,
             precision: str = "auto", fast: str = "auto") -> list[list[tuple[int, str, float]]]:
    """Top-``top`` ImageNet classes for each photo: a list (one per photo) of lists of
    ``(class_index, name, probability)``, probabilities from a softmax over the 1,000 scores.

    ``images_or_paths``: one photo or a sequence (paths, PIL images, uint8 arrays).
    ``model``: 'squeezenet1_1', 'vgg16', or an already loaded network (then ``weights`` is
    ignored). ``style``: the preprocessing the weights expect (see ``preprocess``).
    ``winograd``: faster CPU inference of a network loaded by name (see ``load_pretrained``).
    ``download=False``: never download weights. ``device``: where the network runs (default: where it is).
    ``precision``: "auto" (bf16 autocast where the hardware computes bf16 natively, except the
    networks pinned to fp32 in ``FP32_UNDER_AUTO``; see ``inference_precision``), "fp32" or "bf16".
    ``fast``: "auto" arranges a network loaded by name for inference (``cnnlab.fast``), "off" runs
    it as plain PyTorch layers.
    """
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 1000:
        raise CnnlabError(f"top {top!r} is not an int in 1..1000; use e.g. 5")
    resolve_precision(precision, "cpu")  # a bad precision or fast setting fails before any photo is read
    fast_paths.enabled(fast)
    if isinstance(images_or_paths, (str, os.PathLike, Image.Image, np.ndarray)):
        images_or_paths = [images_or_paths]
    if not isinstance(images_or_paths, Sequence) or not images_or_paths:
        raise CnnlabError(f"images_or_paths {images_or_paths!r} is empty or not a list of photos")
    x = torch.stack([preprocess(im, style=style) for im in images_or_paths])  # (N, 3, 224, 224)
    net = model if isinstance(model, nn.Module) else load_pretrained(model, weights=weights, progress=progress,
                                                                     winograd=winograd, download=download,
                                                                     fast=fast)
    if device is not None:
        net = net.to(device)
    where = next(net.parameters(), torch.empty(0)).device
    chosen = inference_precision(model, precision, where)
    if not isinstance(model, nn.Module):
        # classify's own network, arranged as for any repeated inference (cnnlab.fast.fused:
        # conv + ReLU as one call, bf16 weights cast once; autocast's results). A network passed
        # in is left as it is: call cnnlab.fast.inference_model on it to keep it arranged.
        net = fast_paths.inference_model(net, chosen, where, fast)
    with torch.inference_mode(), autocast(where, chosen):
        logits = torch.cat([net(chunk.to(where)) for chunk in x.split(batch_size)]).cpu()  # (N, 1000)
    if logits.ndim != 2 or logits.shape[1] != 1000:
        raise CnnlabError(f"the network returns shape {tuple(logits.shape)}, not (N, 1000) ImageNet scores")
    return top_k(logits.float().softmax(dim=1), top)


def plot_predictions(predictions, *, images=None, titles: Sequence[str] | None = None):
    """A matplotlib Figure: for each photo a horizontal bar chart of its top-k probabilities,
    next to the photo itself when ``images`` (paths, PIL images or arrays) are given."""
    from cnnlab.scratch.figure import Figure

    n = len(predictions)
    if n == 0:
        raise CnnlabError("predictions is empty; pass classify(...)'s result")
    if images is not None and len(images) != n:
        raise CnnlabError(f"{len(images)} images for {n} predictions; pass one image per prediction")
    cols = 2 if images is not None else 1
    fig = Figure(figsize=(4 * cols + 1, 2.6 * n), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    for row, preds in enumerate(predictions):
        ax = axes[row, -1]
        names = [name.replace("_", " ") for _, name, _ in preds][::-1]
        probs = [p for _, _, p in preds][::-1]
        ax.barh(names, probs, color="tab:blue")
        ax.set_xlim(0, 1)
        ax.set_xlabel("probability")
        for y, p in enumerate(probs):
            ax.text(min(p + 0.01, 0.85), y, f"{p:.1%}", va="center", fontsize=8)
        if titles is not None:
            ax.set_title(str(titles[row]), fontsize=9)
        if images is not None:
            axes[row, 0].imshow(open_image(images[row]))
            axes[row, 0].axis("off")
    return fig
