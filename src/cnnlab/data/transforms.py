"""Batched tensor transforms: uint8 arrays to model input, and augmentation on the device.

Everything here works on a whole batch at once on the training device (the airbench
habit: data lives on the device as one tensor, augmentation is a few batched tensor
functions), so there is no per-sample Python work and no DataLoader in the hot path.

Layout: models take float tensors (N, C, H, W). ``to_tensor`` returns them in
``channels_last`` memory order (a permuted view of the NHWC uint8 array), which is the
layout the CPU (oneDNN) and GPU convolution kernels run fastest on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cnnlab.errors import CnnlabError


def to_tensor(
    images: np.ndarray,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """uint8 images (N, H, W, C) -> float32 (N, C, H, W) in [0, 1], then (x - mean) / std.

    ``mean``/``std`` are per-channel, in [0, 1] units (as ``cnnlab.data.channel_stats``
    returns them); leave them out for plain [0, 1] input, as the tutorials use.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise CnnlabError(
            f"expected uint8 images of shape (N, H, W, C), got {images.dtype} {images.shape}; "
            "add a channel axis with images[..., None] for greyscale"
        )
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # (N, C, H, W), channels_last memory
    if mean is not None or std is not None:
        channels = x.shape[1]
        m = torch.as_tensor(mean if mean is not None else [0.0] * channels, dtype=x.dtype, device=x.device)
        s = torch.as_tensor(std if std is not None else [1.0] * channels, dtype=x.dtype, device=x.device)
        if m.numel() != channels or s.numel() != channels:
            raise CnnlabError(
                f"mean/std have {m.numel()}/{s.numel()} values but the images have {channels} channels; "
                "give one value per channel"
            )
        if bool((s <= 0).any()):
            raise CnnlabError(f"std must be positive, got {s.tolist()}")
        x.sub_(m.view(1, -1, 1, 1)).div_(s.view(1, -1, 1, 1))
    return x


@dataclass(frozen=True)
class Augment:
    """Random augmentation, Keras ``ImageDataGenerator``-style, applied per batch.

    shift: largest shift as a fraction of width/height (Keras' width_shift_range);
    crop: pad by this many pixels and crop back at a random offset (the CIFAR standard);
    flip_h / flip_v: mirror half of the images; rotation: largest angle in degrees;
    resized_crop: the photo standard (torchvision's RandomResizedCrop, Inception's
    augmentation): a random box of ``resized_crop``..100% of the area and aspect ratio
    3/4..4/3, scaled back to the full size (bilinear); a box wider than the image is
    clipped to it instead of redrawn. 0 turns it off; 0.35 suits fine-tuning on small photos.
    Shifts fill with the nearest edge pixel (Keras' default fill_mode="nearest");
    crops fill with zeros, as padding does.
    """

    shift: float = 0.0
    crop: int = 0
    flip_h: bool = False
    flip_v: bool = False
    rotation: float = 0.0
    resized_crop: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.shift < 1.0:
            raise CnnlabError(f"shift must be a fraction in [0, 1), got {self.shift}")
        if self.crop < 0:
            raise CnnlabError(f"crop padding must be >= 0, got {self.crop}")
        if not 0.0 <= self.rotation <= 180.0:
            raise CnnlabError(f"rotation must be in degrees in [0, 180], got {self.rotation}")
        if not 0.0 <= self.resized_crop <= 1.0:
            raise CnnlabError(f"resized_crop is the smallest area fraction in [0, 1], got {self.resized_crop}")

    @property
    def active(self) -> bool:
        return bool(self.shift or self.crop or self.flip_h or self.flip_v or self.rotation or self.resized_crop)

    @classmethod
    def parse(cls, text: str | None) -> Augment:
        """Parse ``"shift=0.1,flip-h,rotation=10,crop=4,resized-crop=0.35"`` (the CLI's --augment)."""
        if not text or text == "none":
            return cls()
        kwargs: dict = {}
        for token in text.split(","):
            key, _, value = token.strip().partition("=")
            key = key.replace("-", "_")
            try:
                if key in ("flip_h", "flip_v"):
                    kwargs[key] = True
                elif key in ("shift", "rotation", "resized_crop"):
                    kwargs[key] = float(value)
                elif key == "crop":
                    kwargs[key] = int(value)
                else:
                    raise KeyError(key)
            except (KeyError, ValueError):
                raise CnnlabError(
                    f"bad augmentation {token!r} in {text!r}; "
                    "use shift=F, crop=N, flip-h, flip-v, rotation=DEG, resized-crop=F"
                ) from None
        return cls(**kwargs)


def augment(x: torch.Tensor, aug: Augment, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply ``aug`` to a batch (N, C, H, W); each image gets its own random draw."""
    if not aug.active:
        return x
    draws = augment_draws(aug, len(x), generator)
    if x.device.type == "cuda":  # through pinned memory: the copy is queued, the host does not wait
        draws = draws.pin_memory().to(x.device, non_blocking=True)
    return apply_augment(x, aug, draws.to(x.device))


def augment_draws(aug: Augment, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The uniform random numbers ``apply_augment`` needs for ``n`` images, shape (k, n).

    Drawn on the CPU, so a seed gives the same images on any device; kept apart from the
    arithmetic so that a CUDA graph can replay ``apply_augment`` on fresh draws each step.
    """
    if n < 0:
        raise CnnlabError(f"number of images must be >= 0, got {n}")
    return torch.rand(_draw_rows(aug), n, device="cpu", generator=generator)


def _draw_rows(aug: Augment) -> int:
    return (int(aug.flip_h) + int(aug.flip_v) + int(bool(aug.rotation)) + 2 * int(bool(aug.shift))
            + 2 * int(bool(aug.crop)) + 4 * int(bool(aug.resized_crop)))


def apply_augment(x: torch.Tensor, aug: Augment, draws: torch.Tensor) -> torch.Tensor:
    """``augment`` with its random numbers given (rows of ``draws``, from ``augment_draws``)."""
    n, _, h, w = x.shape
    if tuple(draws.shape) != (_draw_rows(aug), n):
        raise CnnlabError(
            f"augmentation draws of shape {tuple(draws.shape)} do not fit {aug} on {n} images; "
            f"expected {(_draw_rows(aug), n)} (use augment_draws)"
        )
    rows = iter(draws)
    if aug.resized_crop:
        x = _resized_crop(x, aug.resized_crop, *(next(rows) for _ in range(4)))
    if aug.flip_h:
        x = torch.where(next(rows).view(n, 1, 1, 1) < 0.5, x.flip(3), x)
    if aug.flip_v:
        x = torch.where(next(rows).view(n, 1, 1, 1) < 0.5, x.flip(2), x)
    if aug.rotation:
        x = _rotate(x, (next(rows) * 2 - 1) * aug.rotation)
    if aug.shift:
        dy = torch.round((next(rows) * 2 - 1) * aug.shift * h).long()
        dx = torch.round((next(rows) * 2 - 1) * aug.shift * w).long()
        x = _translate(x, dy, dx, fill="nearest")
    if aug.crop:
        p = aug.crop
        dy = torch.floor(next(rows) * (2 * p + 1)).long() - p
        dx = torch.floor(next(rows) * (2 * p + 1)).long() - p
        x = _translate(x, dy, dx, fill="zeros")
    return x


def _translate(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, *, fill: str) -> torch.Tensor:
    """Shift image i by (dy[i], dx[i]) whole pixels, with one gather for the batch."""
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h) - dy.view(n, 1)  # (N, H) source row
    cols = torch.arange(w, device=x.device).view(1, w) - dx.view(n, 1)  # (N, W) source column
    b = torch.arange(n, device=x.device).view(n, 1, 1)
    out = x[b, :, rows.clamp(0, h - 1).view(n, h, 1), cols.clamp(0, w - 1).view(n, 1, w)]  # (N, H, W, C)
    out = out.permute(0, 3, 1, 2)  # (N, C, H, W), channels_last memory like the input
    if fill == "zeros":
        inside = ((rows >= 0) & (rows < h)).view(n, 1, h, 1) & ((cols >= 0) & (cols < w)).view(n, 1, 1, w)
        out = out * inside
    return out


def _resized_crop(x: torch.Tensor, min_area: float, u_area, u_ratio, u_x, u_y) -> torch.Tensor:
    """Crop box i (area fraction and aspect from the uniforms) of each image, resized to (H, W)."""
    area = min_area + (1.0 - min_area) * u_area  # (N,) fraction of the image
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u_ratio
    ratio = torch.exp(log_ratio)  # width / height of the box
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # box size as a fraction of the image
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx, cy = (u_x * 2 - 1) * (1 - w), (u_y * 2 - 1) * (1 - h)  # centre, in [-1, 1] grid units
    zeros = torch.zeros_like(w)
    affine = torch.stack([torch.stack([w, zeros, cx], 1), torch.stack([zeros, h, cy], 1)], 1)  # (N, 2, 3)
    grid = torch.nn.functional.affine_grid(affine.to(x.dtype), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image about its centre (bilinear, edge pixels fill the corners)."""
    theta = degrees * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zeros = torch.zeros_like(cos)
    affine = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)  # (N, 2, 3)
    grid = torch.nn.functional.affine_grid(affine.to(x.dtype), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
