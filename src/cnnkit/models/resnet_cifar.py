"""Small-input residual networks: the CIFAR ResNets and the Wide ResNets.

CIFAR ResNet: He, Zhang, Ren and Sun 2015, "Deep Residual Learning for Image Recognition", section 4.2.
    3x3 conv, 16 channels (no max pooling) -> 3 stages of n basic blocks with 16, 32, 64 channels
    (the first block of stages 2 and 3 has stride 2) -> global average pooling -> linear.
    depth = 6n + 2: resnet20/32/44/56/110 have n = 3/5/7/9/18.
    Shortcuts are option A by default, as in the paper's CIFAR experiments: identity, and where the
    shape changes, stride-2 subsampling plus zero channels appended (no parameters). Parameter counts
    then match the paper: 0.27M (resnet20), 0.46M, 0.66M, 0.85M (resnet56), 1.7M (resnet110).
    `shortcut="B"` uses a 1x1 convolution + BN projection where the shape changes (the paper's option B,
    used there only for ImageNet; +2,752 parameters).

Wide ResNet: Zagoruyko and Komodakis 2016, "Wide Residual Networks".
    3x3 conv, 16 channels -> 3 groups of n pre-activation blocks (BN-ReLU-conv3x3-dropout-BN-ReLU-conv3x3)
    with 16k, 32k, 64k channels -> BN-ReLU -> global average pooling -> linear; depth = 6n + 4.
    Where the shape changes, the shortcut is a 1x1 convolution applied to the block's pre-activated input,
    as in the authors' code. WRN-28-10 has 36.5M parameters (36,479,194 for 3x32x32, 10 classes, the
    count of common reimplementations), WRN-40-4 8.9M, WRN-16-4 2.7M, as in the paper's results tables.
    `drop_rate` is the paper's dropout between the two convolutions (0.3 in its experiments; 0 by default
    here, like its main tables).

Additions to both papers (off by default, so the defaults are the papers' networks):
- `drop_path_rate`: stochastic depth (Huang et al. 2016) on the residual branches, rising linearly with
  the block index to `drop_path_rate` at the last block; timm's DropPath.
- CIFAR ResNet `drop_rate`: dropout before the classifier (the paper has no dropout).
- Weights start from He (Kaiming) normal init, fan-out mode, as in torchvision; BN weight 1, bias 0.

Both work at any input size (global average pooling); 28x28 gives 28 -> 14 -> 7 feature maps and 32x32
gives 32 -> 16 -> 8, the paper's. Written here because neither torchvision nor timm has the CIFAR variants.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.errors import ModelError
from cnnkit.layers import ConvBnAct, DropPath, drop_path_rates
from cnnkit.models._utils import check_positive, check_probability, image_size
from cnnkit.registry import register_model


def _init_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class PadShortcut(nn.Module):
    """Option A shortcut: subsample by `stride` and append zero channels up to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]  # (B, C, H, W) -> (B, C, ceil(H/s), ceil(W/s))
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # (B, C, h, w) -> (B, C + extra, h, w)


class BasicBlock(nn.Module):
    """He et al.'s basic block: conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str,
                 drop_path_rate: float) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(in_channels, out_channels, kernel_size=3, stride=stride)
        self.conv2 = ConvBnAct(out_channels, out_channels, kernel_size=3, act_layer=None)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = ConvBnAct(in_channels, out_channels, kernel_size=1, stride=stride, act_layer=None)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.shortcut(x) + self.drop_path(self.conv2(self.conv1(x))))


class CifarResNet(nn.Module):
    """ResNet for small images (He et al. 2015, section 4.2): depth = 6n + 2.

    Args:
        depth: Number of weighted layers, 6n + 2 (20, 32, 44, 56, 110 ...).
        num_classes: Number of output logits.
        in_chans: Input image channels.
        input_size: (height, width) of the input images; any size works (global average pooling).
        shortcut: "A" (zero-padding identity, the paper's CIFAR choice) or "B" (1x1 conv projection).
        widths: Channels of the stem and the three stages' first ... last stage.
        drop_rate: Dropout before the classifier.
        drop_path_rate: Stochastic depth rate of the last block, rising linearly from the first.
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_chans: int = 1,
        input_size: int | tuple[int, int] = 28,
        shortcut: str = "A",
        widths: tuple[int, int, int] = (16, 32, 64),
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ModelError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110), "
                             f"got {depth}")
        if shortcut not in ("A", "B"):
            raise ModelError(f"shortcut must be 'A' (zero padding) or 'B' (projection), got {shortcut!r}")
        check_positive("num_classes", num_classes)
        check_positive("in_chans", in_chans)
        check_probability("drop_rate", drop_rate)
        self.input_size = image_size(input_size)  # recorded only: global pooling takes any size
        blocks_per_stage = (depth - 2) // 6
        rates = iter(drop_path_rates(drop_path_rate, 3 * blocks_per_stage))

        self.stem = ConvBnAct(in_chans, widths[0], kernel_size=3)
        stages, in_channels = [], widths[0]
        for stage_index, out_channels in enumerate(widths):
            blocks = []
            for block_index in range(blocks_per_stage):
                stride = 2 if stage_index > 0 and block_index == 0 else 1
                blocks.append(BasicBlock(in_channels, out_channels, stride, shortcut, next(rates)))
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, C, H, W) -> (B, C)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(self.stages(self.stem(x)))))


class WideBlock(nn.Module):
    """Pre-activation block of Zagoruyko and Komodakis: BN-ReLU-conv3x3-dropout-BN-ReLU-conv3x3."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, drop_rate: float,
                 drop_path_rate: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(drop_rate)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.projection = None
        if stride != 1 or in_channels != out_channels:
            self.projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        # The projection shortcut reads the pre-activated input, as in the authors' code.
        shortcut = x if self.projection is None else self.projection(activated)
        out = self.conv1(activated)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return shortcut + self.drop_path(out)


class WideResNet(nn.Module):
    """Wide ResNet WRN-depth-k (Zagoruyko and Komodakis 2016): depth = 6n + 4, widths 16k, 32k, 64k.

    Args:
        depth: Number of weighted layers, 6n + 4 (16, 22, 28, 40 ...).
        widen_factor: k, the width multiplier of the three groups.
        num_classes: Number of output logits.
        in_chans: Input image channels.
        input_size: (height, width) of the input images; any size works (global average pooling).
        drop_rate: Dropout between the two convolutions of each block (the paper used 0.3).
        drop_path_rate: Stochastic depth rate of the last block, rising linearly from the first.
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_chans: int = 1,
        input_size: int | tuple[int, int] = 28,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ModelError(f"Wide ResNet depth must be 6n + 4 with n >= 1 (16, 22, 28, 40), got {depth}")
        check_positive("widen_factor", widen_factor)
        check_positive("num_classes", num_classes)
        check_positive("in_chans", in_chans)
        check_probability("drop_rate", drop_rate)
        self.input_size = image_size(input_size)  # recorded only: global pooling takes any size
        blocks_per_group = (depth - 4) // 6
        rates = iter(drop_path_rates(drop_path_rate, 3 * blocks_per_group))

        self.stem = nn.Conv2d(in_chans, 16, 3, padding=1, bias=False)
        groups, in_channels = [], 16
        for group_index, width in enumerate((16, 32, 64)):
            out_channels = width * widen_factor
            blocks = []
            for block_index in range(blocks_per_group):
                stride = 2 if group_index > 0 and block_index == 0 else 1
                blocks.append(WideBlock(in_channels, out_channels, stride, drop_rate, next(rates)))
                in_channels = out_channels
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.head_bn = nn.BatchNorm2d(in_channels)  # the last blocks end in a conv: normalise first
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, C, H, W) -> (B, C)
        self.fc = nn.Linear(in_channels, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.stem(x))
        return self.fc(self.pool(F.relu(self.head_bn(x))))


@register_model(family="resnet_cifar")
def resnet20(**kwargs) -> CifarResNet:
    """ResNet-20 for small images (He et al. 2015, CIFAR variant), 0.27M parameters."""
    return CifarResNet(depth=20, **kwargs)


@register_model(family="resnet_cifar")
def resnet32(**kwargs) -> CifarResNet:
    """ResNet-32 for small images (He et al. 2015, CIFAR variant), 0.46M parameters."""
    return CifarResNet(depth=32, **kwargs)


@register_model(family="resnet_cifar")
def resnet44(**kwargs) -> CifarResNet:
    """ResNet-44 for small images (He et al. 2015, CIFAR variant), 0.66M parameters."""
    return CifarResNet(depth=44, **kwargs)


@register_model(family="resnet_cifar")
def resnet56(**kwargs) -> CifarResNet:
    """ResNet-56 for small images (He et al. 2015, CIFAR variant), 0.85M parameters."""
    return CifarResNet(depth=56, **kwargs)


@register_model(family="resnet_cifar")
def resnet110(**kwargs) -> CifarResNet:
    """ResNet-110 for small images (He et al. 2015, CIFAR variant), 1.7M parameters."""
    return CifarResNet(depth=110, **kwargs)


@register_model(family="wide_resnet")
def wrn16_4(**kwargs) -> WideResNet:
    """Wide ResNet WRN-16-4 (Zagoruyko and Komodakis 2016), 2.7M parameters."""
    return WideResNet(depth=16, widen_factor=4, **kwargs)


@register_model(family="wide_resnet")
def wrn28_10(**kwargs) -> WideResNet:
    """Wide ResNet WRN-28-10 (Zagoruyko and Komodakis 2016), 36.5M parameters."""
    return WideResNet(depth=28, widen_factor=10, **kwargs)


@register_model(family="wide_resnet")
def wrn40_4(**kwargs) -> WideResNet:
    """Wide ResNet WRN-40-4 (Zagoruyko and Komodakis 2016), 8.9M parameters."""
    return WideResNet(depth=40, widen_factor=4, **kwargs)
