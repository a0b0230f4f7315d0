"""Fast modern networks: batch norm, pooling early, few but wide layers.

These are the architectures behind cnnlab's time-to-accuracy recipes (see
benchmarks/bench_time_to_accuracy.py and BENCHMARKS.md). Both follow the airbench habit
(Keller Jordan's CIFAR-10 speed records): conv → max-pool → batch norm → activation, so
the normalisation and activation run on the pooled, 4× smaller map; biases are dropped
before batch norm (it subtracts the mean anyway); the last layer's logits are scaled down
(airbench multiplies by 1/9) so the softmax starts soft and Adam/SGD steps stay stable.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.errors import CnnlabError


class Scale(nn.Module):
    """Multiply by a constant (no parameters)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def _block(cin: int, cout: int, *, pool: bool, act: type[nn.Module] = nn.ReLU) -> list[nn.Module]:
    """conv 3×3 (same) → [max-pool 2] → batch norm → activation."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers + [nn.BatchNorm2d(cout), act()]


def _mnist_convs(input_shape) -> tuple[list[nn.Module], int]:
    """Two 5×5 conv blocks of 24 and 32 channels, then Flatten; returns (layers, features)."""
    h, w, c = input_shape
    oh, ow = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2  # two (valid 5×5 conv, pool 2) stages
    layers = [
        nn.Conv2d(c, 24, 5, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(24), nn.ReLU(),  # (N, 24, 12, 12)
        nn.Conv2d(24, 32, 5, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(32), nn.ReLU(),  # (N, 32, 4, 4)
        nn.Flatten(),
    ]
    return layers, 32 * oh * ow


def mnist_fast(input_shape=(28, 28, 1), num_classes: int = 10) -> nn.Sequential:
    """Two 5×5 conv blocks of 24 and 32 channels, batch-normed: 99% on MNIST in 160 steps.

    28×28 → conv24 (valid) → 24×24 → pool → 12×12 → conv32 (valid) → 8×8 → pool → 4×4 → linear.
    About 3 MFLOP forward per image (mnist-cnn: 8), the widths of the published fast-MNIST
    recipe; batch norm lets Adam run at lr 0.015 with a one-cycle schedule (the mnist-fast recipe).
    """
    layers, features = _mnist_convs(input_shape)
    return nn.Sequential(*layers, nn.Linear(features, num_classes, bias=False), Scale(1 / 4))


def mnist_fast_plus(input_shape=(28, 28, 1), num_classes: int = 10) -> nn.Sequential:
    """mnist-fast with a batch-normed 128-unit hidden layer: 99.6% on MNIST with augmentation.

    The hidden layer costs ~66 k mult-adds (4% of the convolutions) and lifts the ceiling of
    mnist-fast's linear classifier: with ±2-pixel shifts for 10 epochs, 99.62% where
    mnist-fast stops at 99.49%.
    """
    layers, features = _mnist_convs(input_shape)
    return nn.Sequential(
        *layers,
        nn.Linear(features, 128, bias=False), nn.BatchNorm1d(128), nn.ReLU(),
        nn.Linear(128, num_classes, bias=False),
        Scale(1 / 4),
    )


def cifar_fast(input_shape=(32, 32, 3), num_classes: int = 10, widths=(48, 96, 192)) -> nn.Sequential:
    """airbench-style: a 3×3 stem, then three stages of two convs each, the first pooling.

    32×32 → stem → 32×32 → stage 1 → 16×16 → stage 2 → 8×8 → stage 3 → 4×4 → global max.
    Widths 48/96/192 (airbench94: 64/256/256) fit 8 epochs into ~12 minutes on 2 CPU cores;
    64/128/256 managed only 5 epochs in that time and ended lower (87.9% vs 89.8%).
    """
    _, _, c = input_shape
    layers: list[nn.Module] = [nn.Conv2d(c, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.GELU()]
    cin = 32
    for width in widths:
        layers += _block(cin, width, pool=True, act=nn.GELU) + _block(width, width, pool=False, act=nn.GELU)
        cin = width
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes, bias=False), Scale(1 / 9)]
    return nn.Sequential(*layers)


class Whiten(nn.Conv2d):
    """A fixed convolution that whitens ``size`` x ``size`` image patches (airbench's first layer).

    ``adapt(images)`` sets its filters from the data, as Keras' preprocessing layers are
    adapted: the eigenvectors of the patch covariance, each divided by the square root of
    its eigenvalue (plus ``eps``), and their negatives (so the GELU after it keeps both
    signs). Its output channels are then uncorrelated with unit variance. The filters
    never train (``requires_grad`` is off); the bias does. ``fit`` adapts it to the first
    5,000 training images before the first step of a new run.
    """

    adapt_before_fit = True  # fit calls adapt() on a new run (cnnlab.train.session.adapt_layers)

    def __init__(self, channels: int = 3, size: int = 2, eps: float = 5e-4) -> None:
        super().__init__(channels, 2 * channels * size * size, size, bias=True)
        self.weight.requires_grad_(False)
        self.eps = eps

    @torch.no_grad()
    def adapt(self, images: torch.Tensor) -> None:
        """Fit the filters to ``images`` (N, C, H, W), normalised as the network will see them."""
        c, (h, w) = self.in_channels, self.kernel_size
        if images.ndim != 4 or images.shape[1] != c or images.shape[2] < h or images.shape[3] < w or not len(images):
            raise CnnlabError(f"Whiten.adapt needs images (N, {c}, H >= {h}, W >= {w}), got {tuple(images.shape)}")
        patches = images.float().unfold(2, h, 1).unfold(3, w, 1)  # (N, C, H', W', h, w)
        flat = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * h * w).double()
        covariance = flat.T @ flat / len(flat)
        values, vectors = torch.linalg.eigh(covariance)
        filters = vectors.T.reshape(-1, c, h, w) / torch.sqrt(values.clamp_min(0) + self.eps).view(-1, 1, 1, 1)
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", eps={self.eps}"


def _airbench_bn(channels: int) -> nn.BatchNorm2d:
    """Batch norm as airbench94 has it: a shift but no trained scale (the next conv's filter
    norm is fixed by Muon anyway), running statistics that forget fast (momentum 0.4)."""
    bn = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    bn.weight.requires_grad_(False)
    return bn


def _dirac_conv(cin: int, cout: int) -> nn.Conv2d:
    """3x3 conv whose first ``cin`` filters start as the identity (the rest PyTorch's default):
    the block starts close to passing its input through."""
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:cin])
    return conv


def cifar_94(input_shape=(32, 32, 3), num_classes: int = 10, widths=(64, 256, 256)) -> nn.Sequential:
    """airbench94's net: a fitted 2x2 whitening layer, three conv groups of 64/256/256, 94% on CIFAR-10.

    32x32 -> whiten (2x2, valid) -> 31x31 -> group 1 -> 15x15 -> group 2 -> 7x7 -> group 3 -> 3x3
    -> max-pool 3 -> linear. Each group: conv, max-pool 2, batch norm, GELU, conv, batch norm,
    GELU. About 0.24 GFLOP forward per image. Train it with ``--recipe cifar-94`` (Muon).
    """
    _, _, c = input_shape
    whiten = Whiten(c)
    layers: list[nn.Module] = [whiten, nn.GELU()]
    cin = whiten.out_channels
    for width in widths:
        layers += [_dirac_conv(cin, width), nn.MaxPool2d(2), _airbench_bn(width), nn.GELU(),
                   _dirac_conv(width, width), _airbench_bn(width), nn.GELU()]
        cin = width
    head = nn.Linear(cin, num_classes, bias=False)
    with torch.no_grad():
        head.weight /= head.weight.std()
    # Global max over the last 3x3 map; logits divided by the width, as airbench does.
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), head, Scale(1 / cin)]
    return nn.Sequential(*layers)


FAST_MODELS = {
    "mnist-fast": mnist_fast,
    "mnist-fast-plus": mnist_fast_plus,
    "cifar-fast": cifar_fast,
    "cifar-94": cifar_94,
}
