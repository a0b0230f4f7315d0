"""The image side of feature visualisation: how an image is parameterised and transformed.

Olah et al., *Feature Visualization* (Distill, 2017), and their Lucid library: the optimiser
moves a 1/f-scaled Fourier spectrum (``fft_image``) whose channels are decorrelated ImageNet
colours (``to_valid_rgb``), squashed to [0, 1] by a sigmoid; each step sees the image
randomly jittered, scaled and rotated. ``cnnlab.insight.featurevis`` runs the optimisation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["IMAGENET_COLOUR_SQRT", "Setup", "colour_matrix", "init_param", "random_affine", "spectrum_scale",
           "to_image"]

# Lucid's ``color_correlation_svd_sqrt`` (lucid/optvis/param/color.py): a square root of the
# covariance of ImageNet's RGB pixels. We use the Cholesky factor of that covariance instead
# (another square root: it maps white noise to the same colour statistics), normalised like
# Lucid by its largest column norm so the decorrelated values keep unit scale.
IMAGENET_COLOUR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


def colour_matrix() -> torch.Tensor:
    cholesky = np.linalg.cholesky(IMAGENET_COLOUR_SQRT @ IMAGENET_COLOUR_SQRT.T)  # (3, 3) lower triangular
    return torch.tensor(cholesky / np.linalg.norm(cholesky, axis=0).max(), dtype=torch.float32)


@dataclass(frozen=True)
class Setup:
    """How one visualisation runs (built and validated by ``cnnlab.insight.featurevis``)."""

    size: tuple[int, int]
    channels_in: int
    steps: int
    lr: float
    mean: torch.Tensor  # (1, C, 1, 1)
    std: torch.Tensor
    robust: bool
    fourier: bool
    jitter: int  # pixels; scale and rotation ranges are below
    scale: tuple[float, float] = (0.9, 1.1)  # Lucid's random_scale: 1 + (i - 5) / 50, i = 0..10
    rotate: float = 10.0  # degrees either way, as Lucid's random_rotate(range(-10, 11))


# --------------------------------------------------------------------------- image parameterisation


def spectrum_scale(h: int, w: int) -> torch.Tensor:
    """(h, w // 2 + 1) weights 1/f for rfft2 coefficients, clipped at the lowest frequency
    (Lucid's ``fft_image``); times sqrt(h w) so that irfft2's 1/(h w) leaves unit-scale pixels."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    freqs = torch.sqrt(fx * fx + fy * fy)
    return 1.0 / freqs.clamp(min=1.0 / max(h, w)) * math.sqrt(h * w)


def init_param(setup: Setup, n: int, gen: torch.Generator) -> torch.Tensor:
    h, w = setup.size
    if setup.fourier:  # real and imaginary parts of the spectrum, Lucid's sd=0.01
        return torch.randn((n, setup.channels_in, h, w // 2 + 1, 2), generator=gen) * 0.01
    return torch.randn((n, setup.channels_in, h, w), generator=gen) * 0.01


def to_image(param: torch.Tensor, setup: Setup, scale: torch.Tensor | None) -> torch.Tensor:
    """The parameters -> images (B, C, H, W) in [0, 1]."""
    if setup.fourier:
        spectrum = torch.view_as_complex(param) * scale  # (B, C, H, W//2+1)
        x = torch.fft.irfft2(spectrum, s=setup.size) / 4.0  # Lucid's /4: the sigmoid starts near its linear part
    else:
        x = param
    if setup.channels_in == 3:  # decorrelated colours -> RGB
        x = torch.einsum("ij,bjhw->bihw", colour_matrix().to(x.device), x)
    return torch.sigmoid(x)


def random_affine(x: torch.Tensor, setup: Setup, gen: torch.Generator) -> torch.Tensor:
    """Each image jittered by up to ``jitter`` pixels, scaled and rotated (drawn from ``gen``)."""
    b, _, h, w = x.shape
    u = torch.rand((b, 4), generator=gen)
    angle = (u[:, 0] * 2 - 1) * math.radians(setup.rotate)
    s = setup.scale[0] + u[:, 1] * (setup.scale[1] - setup.scale[0])
    shift = torch.floor(u[:, 2:] * (2 * setup.jitter + 1)) - setup.jitter  # whole pixels, (B, 2) x then y
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    # affine_grid works in [-1, 1] coordinates: on a non-square image a rotation needs the
    # aspect ratio (h / w) to stay a rotation in pixels.
    theta = torch.stack([torch.stack([cos, -sin * h / w, shift[:, 0] * 2 / w], 1),
                         torch.stack([sin * w / h, cos, shift[:, 1] * 2 / h], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    # Reflection: no constant border whose edge a channel could learn to love.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
