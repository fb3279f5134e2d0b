"""ResNet for ImageNet: He, Zhang, Ren and Sun 2016, "Deep Residual Learning for Image Recognition", CVPR,
Table 1: ResNet-18/34 (basic blocks) and ResNet-50/101/152 (bottleneck blocks). The implementation is
torchvision's (`torchvision.models.resnet*`), which puts the bottleneck's stride on its 3x3 convolution
("ResNet v1.5") instead of the paper's first 1x1; same parameters, better accuracy.
The paper's CIFAR networks (resnet20 ... resnet110) are cnnkit's own, in resnet_cifar.py.

in_chans: the first convolution (7x7, stride 2) is replaced by a fresh one taking `in_chans` channels.
Small inputs (< 64 px): that convolution becomes 3x3 with stride 1 and the max-pool after it is removed,
like the paper's CIFAR networks, so 28x28 images go through the four stages at 28, 14, 7 and 4 px
(the paper: 56, 28, 14 and 7 at 224 px).
torchvision's ResNets have neither dropout nor stochastic depth, so there is no drop_rate here.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn
import torchvision.models as tvm

from cnnkit.models.adapt import check_args, is_small, new_conv, zoo_input_size
from cnnkit.registry import register_model


def _resnet(builder: Callable[..., nn.Module], num_classes: int = 1000, in_chans: int = 3,
            input_size: int | tuple[int, int] = 224) -> nn.Module:
    check_args(num_classes, in_chans)
    model = builder(weights=None, num_classes=num_classes)
    if is_small(zoo_input_size(input_size)):
        model.conv1 = new_conv(model.conv1, in_chans, kernel_size=3, stride=1)
        model.maxpool = nn.Identity()
    elif in_chans != 3:
        model.conv1 = new_conv(model.conv1, in_chans)
    return model


@register_model(family="resnet", source="torchvision")
def resnet18(**kwargs) -> nn.Module:
    """ResNet-18 (He et al. 2016): basic blocks [2, 2, 2, 2], 11.7M parameters on ImageNet."""
    return _resnet(tvm.resnet18, **kwargs)


@register_model(family="resnet", source="torchvision")
def resnet34(**kwargs) -> nn.Module:
    """ResNet-34 (He et al. 2016): basic blocks [3, 4, 6, 3], 21.8M parameters on ImageNet."""
    return _resnet(tvm.resnet34, **kwargs)


@register_model(family="resnet", source="torchvision")
def resnet50(**kwargs) -> nn.Module:
    """ResNet-50 (He et al. 2016): bottleneck blocks [3, 4, 6, 3], 25.6M parameters on ImageNet."""
    return _resnet(tvm.resnet50, **kwargs)


@register_model(family="resnet", source="torchvision")
def resnet101(**kwargs) -> nn.Module:
    """ResNet-101 (He et al. 2016): bottleneck blocks [3, 4, 23, 3], 44.5M parameters on ImageNet."""
    return _resnet(tvm.resnet101, **kwargs)


@register_model(family="resnet", source="torchvision")
def resnet152(**kwargs) -> nn.Module:
    """ResNet-152 (He et al. 2016): bottleneck blocks [3, 8, 36, 3], 60.2M parameters on ImageNet."""
    return _resnet(tvm.resnet152, **kwargs)
