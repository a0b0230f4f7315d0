"""VGG-16 (Simonyan & Zisserman 2014, configuration "D"), keyed exactly like torchvision.

The architecture is data: ``VGG16_WIDTHS`` lists the conv widths with ``"M"`` for a 2x2
max-pool, and ``make_layers`` turns it into ``features``. The model splits into
``features`` (conv maps, easy to reach for inspection), ``avgpool`` and ``classifier``,
and the state-dict keys (``features.0.weight`` ... ``classifier.6.bias``) match
``torchvision.models.vgg16`` so its official weights load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

# torchvision's cfg "D": 13 conv layers (3x3, padding 1) in five blocks, each ending in a pool.
VGG16_WIDTHS: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                 512, 512, 512, "M", 512, 512, 512, "M"]


def make_layers(widths: list[int | str], in_channels: int = 3) -> nn.Sequential:
    """Conv 3x3 'same' + ReLU for each width, MaxPool2d(2) for each "M"."""
    layers: list[nn.Module] = []
    for v in widths:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))  # (N, C, H/2, W/2)
        else:
            # Not in-place (torchvision's is): forward hooks on the conv must see its output
            # before the ReLU; the state dict is the same either way.
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.ReLU()]  # (N, v, H, W)
            in_channels = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """features -> avgpool (to 7x7) -> flatten -> classifier; returns logits (N, num_classes)."""

    def __init__(self, features: nn.Sequential, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = features
        # Adaptive pooling makes the classifier independent of the input size: at 224x224
        # the features are already 7x7 and this is the identity.
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        _init_like_torchvision(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 512, H/32, W/32): 7x7 at 224x224
        x = self.avgpool(x)  # (N, 512, 7, 7)
        x = torch.flatten(x, 1)  # (N, 25088)
        return self.classifier(x)  # (N, num_classes)


def _init_like_torchvision(model: nn.Module) -> None:
    # torchvision's VGG init: Kaiming-normal (fan_out) convs, N(0, 0.01) linears, zero biases.
    if model.classifier[0].weight.is_meta:
        return  # no values to fill; and torch's meta normal_ imports its compiler (~2 s)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def vgg16(input_shape=(224, 224, 3), num_classes=1000) -> VGG:
    """VGG-16 for ImageNet: 13 3x3 convs + 3 dense layers, 138,357,544 params at 1,000 classes."""
    return VGG(make_layers(VGG16_WIDTHS, in_channels=input_shape[2]), num_classes=num_classes)
