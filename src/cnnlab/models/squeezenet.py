"""SqueezeNet 1.1 (Iandola et al. 2016; v1.1 from the authors' repo), keyed like torchvision.

Fire modules squeeze the channels with 1x1 convs, then expand with parallel 1x1 and 3x3
convs whose outputs are concatenated. The classifier is a 1x1 conv to ``num_classes``
maps, ReLU and global average pooling: no dense layer, hence only 1.2 M parameters.
State-dict keys (``features.0.weight`` ... ``classifier.1.bias``, Fire children
``squeeze``/``expand1x1``/``expand3x3``) match ``torchvision.models.squeezenet1_1``.
"""

from __future__ import annotations

import torch
from torch import nn


class Fire(nn.Module):
    """squeeze 1x1 -> ReLU -> [expand 1x1 -> ReLU, expand 3x3 -> ReLU] concatenated on channels."""

    def __init__(self, inplanes: int, squeeze_planes: int, expand1x1_planes: int, expand3x3_planes: int):
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze_planes, kernel_size=1)
        self.squeeze_activation = nn.ReLU()
        self.expand1x1 = nn.Conv2d(squeeze_planes, expand1x1_planes, kernel_size=1)
        self.expand1x1_activation = nn.ReLU()
        self.expand3x3 = nn.Conv2d(squeeze_planes, expand3x3_planes, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))  # (N, s, H, W)
        return torch.cat(  # (N, e1 + e3, H, W)
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


class SqueezeNet(nn.Module):
    """SqueezeNet 1.1: features -> classifier (dropout, 1x1 conv, ReLU, global average pool)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        # Shapes for a 224x224 input; pools use ceil_mode like the original Caffe model.
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=3, stride=2),  # (N, 64, 111, 111)
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),  # (N, 64, 55, 55)
            Fire(64, 16, 64, 64),  # (N, 128, 55, 55)
            Fire(128, 16, 64, 64),  # (N, 128, 55, 55)
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),  # (N, 128, 27, 27)
            Fire(128, 32, 128, 128),  # (N, 256, 27, 27)
            Fire(256, 32, 128, 128),  # (N, 256, 27, 27)
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),  # (N, 256, 13, 13)
            Fire(256, 48, 192, 192),  # (N, 384, 13, 13)
            Fire(384, 48, 192, 192),  # (N, 384, 13, 13)
            Fire(384, 64, 256, 256),  # (N, 512, 13, 13)
            Fire(512, 64, 256, 256),  # (N, 512, 13, 13)
        )
        final_conv = nn.Conv2d(512, num_classes, kernel_size=1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            final_conv,  # (N, classes, 13, 13)
            nn.ReLU(),
            nn.AdaptiveAvgPool2d((1, 1)),  # (N, classes, 1, 1)
        )
        # torchvision's init: Kaiming-uniform convs, N(0, 0.01) for the final conv, zero biases.
        # Skipped on the meta device: no values to fill, and torch's meta normal_ imports its
        # compiler (~2 s).
        for m in () if final_conv.weight.is_meta else self.modules():
            if isinstance(m, nn.Conv2d):
                if m is final_conv:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 512, 13, 13) at 224x224
        x = self.classifier(x)  # (N, classes, 1, 1)
        return torch.flatten(x, 1)  # (N, classes)


def squeezenet1_1(input_shape=(224, 224, 3), num_classes=1000) -> SqueezeNet:
    """SqueezeNet 1.1 for ImageNet: Fire modules, 1x1-conv classifier, 1,235,496 params."""
    return SqueezeNet(in_channels=input_shape[2], num_classes=num_classes)
