"""ResNet-18 (He et al. 2015, "Deep Residual Learning"), keyed like torchvision.

A 7x7 stride-2 stem and a max-pool, then four stages of two BasicBlocks (two 3x3 convs
with batch norm, added to the block's input); the first block of stages 2-4 halves the
size and doubles the width, and its shortcut is a strided 1x1 conv + BN ("option B" of
the paper). Global average pooling and one dense layer classify. State-dict keys
(``conv1.weight``, ``layer1.0.bn1.running_mean``, ``layer2.0.downsample.0.weight``,
``fc.bias``, ...) match ``torchvision.models.resnet18``, so its official weights load
unchanged: 11,689,512 parameters for 1,000 classes.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus the (projected) input, then ReLU."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:  # the shortcut must match the new shape
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet with BasicBlocks; ``layers`` gives the blocks per stage ((2, 2, 2, 2) for ResNet-18)."""

    def __init__(self, layers=(2, 2, 2, 2), in_channels: int = 3, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)  # (N, 64, 112, 112) at 224
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)  # (N, 64, 56, 56)
        widths, inplanes = (64, 128, 256, 512), 64
        for i, (planes, blocks) in enumerate(zip(widths, layers, strict=True)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(inplanes, planes, stride)] + [BasicBlock(planes, planes) for _ in range(blocks - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*stage))  # (N, 512, 7, 7) after layer4 at 224
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)
        # torchvision's init: He-normal convs (fan_out), BN scale 1 and shift 0; fc keeps
        # nn.Linear's default. Skipped on the meta device (nothing to fill).
        for m in () if self.fc.weight.is_meta else self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 512, H/32, W/32)
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (N, classes)


def resnet18(input_shape=(224, 224, 3), num_classes=1000) -> ResNet:
    """ResNet-18 for ImageNet: residual 3x3 blocks with batch norm, 11,689,512 params."""
    return ResNet((2, 2, 2, 2), in_channels=input_shape[2], num_classes=num_classes)
