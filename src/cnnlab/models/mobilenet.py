"""MobileNetV3-Small (Howard et al. 2019, "Searching for MobileNetV3"), keyed like torchvision.

Inverted residual blocks: a 1x1 conv expands the channels, a depthwise kxk conv filters
each channel alone, an optional squeeze-and-excitation gate rescales the channels, and a
linear 1x1 conv projects back down (plus the input when the shape allows). Activations
are ReLU early and hard-swish ``x * relu6(x + 3) / 6`` later (a cheap swish); the SE gate
is a hard sigmoid ``relu6(x + 3) / 6``. State-dict keys (``features.0.0.weight``,
``features.1.block.1.fc1.weight``, ``classifier.3.bias``, ...) match
``torchvision.models.mobilenet_v3_small``: 2,542,856 parameters for 1,000 classes.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

# (in, kernel, expanded, out, SE, activation, stride) per block: Table 2 of the paper, as
# torchvision's _mobilenet_v3_conf("mobilenet_v3_small") lists it.
SMALL_BLOCKS = (
    (16, 3, 16, 16, True, "RE", 2),
    (16, 3, 72, 24, False, "RE", 2),
    (24, 3, 88, 24, False, "RE", 1),
    (24, 5, 96, 40, True, "HS", 2),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 240, 40, True, "HS", 1),
    (40, 5, 120, 48, True, "HS", 1),
    (48, 5, 144, 48, True, "HS", 1),
    (48, 5, 288, 96, True, "HS", 2),
    (96, 5, 576, 96, True, "HS", 1),
    (96, 5, 576, 96, True, "HS", 1),
)
# The paper's batch norm (TensorFlow's momentum 0.99 is PyTorch's 0.01), as torchvision.
_BatchNorm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of ``divisor`` without going below 90% of ``value``
    (the TF reference's rule; torchvision uses it for the SE widths)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act=None) -> nn.Sequential:
    """conv (no bias: BN has one) -> BN -> optional activation: torchvision's Conv2dNormActivation keys."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False), _BatchNorm(cout)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """Channel gate: global average -> 1x1 conv -> ReLU -> 1x1 conv -> hard sigmoid, times the input."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.activation = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))  # (N, C, 1, 1)
        return scale * x


class InvertedResidual(nn.Module):
    """[expand 1x1] -> depthwise kxk -> [SE] -> project 1x1 (linear), + input when stride 1 and same width."""

    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, se: bool, act: str, stride: int):
        super().__init__()
        activation = nn.Hardswish if act == "HS" else nn.ReLU
        layers = [] if expanded == cin else [conv_bn(cin, expanded, 1, act=activation)]
        layers.append(conv_bn(expanded, expanded, kernel, stride, groups=expanded, act=activation))
        if se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4)))
        layers.append(conv_bn(expanded, cout, 1))
        self.block = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_res_connect else out


class MobileNetV3(nn.Module):
    """features (stem, inverted residuals, 1x1 to 576) -> average pool -> classifier (576 -> 1024 -> classes)."""

    def __init__(self, blocks=SMALL_BLOCKS, in_channels: int = 3, num_classes: int = 1000,
                 last_channel: int = 1024, dropout: float = 0.2):
        super().__init__()
        stem = conv_bn(in_channels, blocks[0][0], 3, stride=2, act=nn.Hardswish)  # (N, 16, 112, 112) at 224
        last_in = blocks[-1][3]
        self.features = nn.Sequential(stem, *(InvertedResidual(*b) for b in blocks),
                                      conv_bn(last_in, 6 * last_in, 1, act=nn.Hardswish))  # (N, 576, 7, 7)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * last_in, last_channel), nn.Hardswish(inplace=True),
                                        nn.Dropout(p=dropout, inplace=True), nn.Linear(last_channel, num_classes))
        # torchvision's init: He-normal convs (fan_out), zero biases, BN 1/0, dense N(0, 0.01).
        for m in () if self.classifier[0].weight.is_meta else self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))  # (N, 576, 1, 1)
        return self.classifier(torch.flatten(x, 1))  # (N, classes)


def mobilenet_v3_small(input_shape=(224, 224, 3), num_classes=1000) -> MobileNetV3:
    """MobileNetV3-Small for ImageNet: inverted residuals, SE gates, hard-swish, 2,542,856 params."""
    return MobileNetV3(in_channels=input_shape[2], num_classes=num_classes)
