"""Explain a pretrained ImageNet network's decision on a photo, at the photo's own size.

The network sees a centre crop (short side resized to 256, centre 224x224, as
``cnnlab.models.pretrained.preprocess``); the map is computed there and placed back over
the crop's box in the original photo, 0 outside it, so it overlays the original directly.
Huge photos are decoded at a reduced size (JPEG DCT scaling via ``Image.draft``, else
``Image.reduce`` before any mode conversion), never held as two full bitmaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.insight import attribution
from cnnlab.models.pretrained import URLS, imagenet_classes, load_pretrained, preprocess, top_k
from cnnlab.scratch.images import to_8bit

__all__ = ["PhotoExplanation", "display_pair", "explain_photo", "load_photo"]

CROP = 224
SHORT_SIDE = CROP * 256 // 224
# Decode at no less than twice the size the network needs, so the bilinear resize that
# follows still averages over real pixels (DCT scaling alone would alias a little).
DECODE_MARGIN = 2


@dataclass(frozen=True)
class PhotoExplanation:
    """``map``: float32 (H, W) at the photo's size, 0 outside ``crop`` (left, top, right,
    bottom in photo pixels); ``top``: the top classes (index, name, probability)."""

    map: np.ndarray
    crop: tuple[int, int, int, int]
    target: int
    target_name: str
    top: list[tuple[int, str, float]]
    method: str
    layer: str | None
    sweep: dict[str, np.ndarray] | None = None


def load_photo(path) -> tuple[Image.Image, tuple[int, int]]:
    """The photo as an RGB image decoded at a reduced size when it is much larger than the
    network needs, and its original (width, height)."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"photo {str(path)!r} not found")
    need = SHORT_SIDE * DECODE_MARGIN
    try:
        with Image.open(path) as img:
            size = img.size
            scale = min(size) / need
            if img.format == "JPEG" and scale >= 2:
                img.draft("RGB", (int(size[0] / scale), int(size[1] / scale)))  # decodes at 1/2, 1/4 or 1/8
            img.load()
            factor = int(min(img.size) / need)
            if factor >= 2:
                img = img.reduce(factor)  # box-filter shrink of the decoded bitmap, before converting
            return to_8bit(img).convert("RGB"), size  # to_8bit: a float TIFF is scaled, not cast to black
    except Exception as exc:  # Pillow's decoders fail in many ways on damaged files (ValueError, struct.error, ...)
        raise CnnlabError(f"{str(path)!r} is not a readable image ({exc}); give a PNG, JPEG or BMP photo") from exc


def _crop_box(width: int, height: int, decoded: tuple[int, int]) -> tuple[int, int, int, int]:
    """The centre crop of ``preprocess`` (computed on the ``decoded`` size) in original pixels."""
    dw, dh = decoded
    new_w, new_h = (SHORT_SIDE, int(SHORT_SIDE * dh / dw)) if dw <= dh else (int(SHORT_SIDE * dw / dh), SHORT_SIDE)
    top, left = int(round((new_h - CROP) / 2.0)), int(round((new_w - CROP) / 2.0))
    sx, sy = width / new_w, height / new_h
    return (round(left * sx), round(top * sy), round((left + CROP) * sx), round((top + CROP) * sy))


def _place(crop_map: np.ndarray, box: tuple[int, int, int, int], size: tuple[int, int]) -> np.ndarray:
    left, top, right, bottom = box
    out = np.zeros((size[1], size[0]), dtype=np.float32)
    resized = F.interpolate(torch.from_numpy(crop_map)[None, None], size=(bottom - top, right - left),
                            mode="bilinear", align_corners=False)[0, 0]
    out[top:bottom, left:right] = resized.numpy()
    return out


def _target(target, names: list[str]):
    if isinstance(target, str) and target != "predicted":
        if target not in names:
            raise CnnlabError(f"target {target!r} is not 'predicted', a class index or an ImageNet class name "
                              "like 'tabby' or 'Egyptian_cat'")
        return names.index(target)
    if isinstance(target, int) and not isinstance(target, bool) and not 0 <= target < len(names):
        raise CnnlabError(f"target {str(target)[:40]} is out of range: the model has {len(names)} classes (indices "
                          f"0..{len(names) - 1}); give an index in that range, an ImageNet class name or 'predicted'")
    return target


def _crop_maps(net: nn.Module, x: torch.Tensor, method: str, target, layer: str, options: dict):
    """({layer or method: (224, 224) map}, targets (1,), scores (1, K), the layer used or None)."""
    if method in ("gradcam", "gradcam++"):
        maps, targets, chosen, logits = attribution.gradcam_maps(net, x, target, layers=[layer],
                                                                 plus=method == "gradcam++", **options)
        return {name: m[0] for name, m in maps.items()}, targets, logits, chosen[-1]
    if layer == "sweep":
        raise CnnlabError(f"a layer sweep needs method gradcam or gradcam++, not {method!r}")
    logits = attribution.scores(net, x)
    targets = logits.argmax(1) if target == "predicted" else torch.tensor([target])
    return {method: attribution.METHODS[method](net, x, targets.tolist(), **options)[0]}, targets, logits, None


def explain_photo(path, *, model="squeezenet1_1", weights=None, method: str = "gradcam", target="predicted",
                  layer: str = "auto", top: int = 5, **options) -> PhotoExplanation:
    """Why a pretrained ImageNet network classifies the photo at ``path`` as it does.

    ``model``: a name ('squeezenet1_1', 'vgg16', ...; ``weights`` a state-dict file, None to
    download the official one) or a loaded network. ``method``: a key of
    ``attribution.METHODS``; ``target``: 'predicted', a class index or a class name;
    ``layer``: for Grad-CAM(++), a layer (see ``attribution.gradcam``), 'auto', or 'sweep' for
    every conv layer's rectified unit (then
    ``sweep`` holds each layer's map and ``map`` the last one's). Extra ``options`` go to
    the method (e.g. ``steps=`` for integrated gradients).
    """
    if method not in attribution.METHODS:
        raise CnnlabError(f"unknown method {method!r}; choose one of {', '.join(attribution.METHODS)}")
    if not isinstance(model, nn.Module) and model not in URLS:
        raise CnnlabError(f"no pretrained network {model!r}; choose one of {', '.join(URLS)}")
    img, size = load_photo(path)
    x = preprocess(img)[None]  # (1, 3, 224, 224)
    net = model if isinstance(model, nn.Module) else load_pretrained(model, weights=weights, progress=False)
    names = imagenet_classes()
    maps, targets, logits, used_layer = _crop_maps(net, x, method, _target(target, names), layer, options)
    if logits.shape[1] != len(names):
        raise CnnlabError(f"the network returns {logits.shape[1]} scores, not the 1,000 ImageNet classes")
    box = _crop_box(*size, img.size)
    placed = {name: _place(m, box, size) for name, m in maps.items()}
    t = int(targets[0])
    return PhotoExplanation(map=next(reversed(placed.values())), crop=box, target=t, target_name=names[t],
                            top=top_k(logits.detach().float().softmax(1), top)[0], method=method, layer=used_layer,
                            sweep=placed if layer == "sweep" else None)


def display_pair(path, heatmap: np.ndarray, *, longest: int = 800) -> tuple[np.ndarray, np.ndarray]:
    """The photo as uint8 RGB and ``heatmap`` (at the photo's size), both shrunk so the
    longer side is at most ``longest`` pixels: for figures of large photos."""
    img, size = load_photo(path)
    scale = min(1.0, longest / max(size))
    shape = (max(1, round(size[1] * scale)), max(1, round(size[0] * scale)))
    image = np.asarray(img.resize(shape[::-1], Image.BILINEAR), dtype=np.uint8)
    heat = F.interpolate(torch.from_numpy(np.asarray(heatmap, np.float32))[None, None], size=shape,
                         mode="bilinear", align_corners=False)[0, 0].numpy()
    return image, heat
