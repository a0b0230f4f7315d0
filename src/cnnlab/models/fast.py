"""Fast modern networks: batch norm, pooling early, few but wide layers.

These are the architectures behind cnnlab's time-to-accuracy recipes (see
benchmarks/bench_time_to_accuracy.py and BENCHMARKS.md). Both follow the airbench habit
(Keller Jordan's CIFAR-10 speed records): conv → max-pool → batch norm → activation, so
the normalisation and activation run on the pooled, 4× smaller map; biases are dropped
before batch norm (it subtracts the mean anyway); the last layer's logits are scaled down
(airbench multiplies by 1/9) so the softmax starts soft and Adam/SGD steps stay stable.
"""

from __future__ import annotations

from torch import nn


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


def mnist_fast(input_shape=(28, 28, 1), num_classes: int = 10) -> nn.Sequential:
    """Two conv blocks of 32 and 64 channels, batch-normed, then a linear classifier.

    28×28 → conv32 + pool → 14×14 → conv64 + pool → 7×7 → pool → 3×3 → linear.
    About 8 MFLOP forward per image: one epoch of MNIST in a few seconds on 2 CPU cores.
    """
    h, w, c = input_shape
    return nn.Sequential(
        *_block(c, 32, pool=True),  # (N, 32, H/2, W/2)
        *_block(32, 64, pool=True),  # (N, 64, H/4, W/4)
        nn.MaxPool2d(2),  # (N, 64, H/8, W/8)
        nn.Flatten(),
        nn.Linear(64 * (h // 8) * (w // 8), num_classes, bias=False),
        Scale(1 / 4),
    )


def cifar_fast(input_shape=(32, 32, 3), num_classes: int = 10, widths=(64, 128, 256)) -> nn.Sequential:
    """airbench-style: a 3×3 stem, then three stages of two convs each, the first pooling.

    32×32 → stem → 32×32 → stage 1 → 16×16 → stage 2 → 8×8 → stage 3 → 4×4 → global max.
    """
    _, _, c = input_shape
    layers: list[nn.Module] = [nn.Conv2d(c, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.GELU()]
    cin = 32
    for width in widths:
        layers += _block(cin, width, pool=True, act=nn.GELU) + _block(width, width, pool=False, act=nn.GELU)
        cin = width
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes, bias=False), Scale(1 / 9)]
    return nn.Sequential(*layers)


FAST_MODELS = {
    "mnist-fast": mnist_fast,
    "cifar-fast": cifar_fast,
}
