"""DenseNet: Huang, Liu, van der Maaten and Weinberger 2017, "Densely Connected Convolutional Networks",
CVPR, the ImageNet DenseNet-BC networks of Table 1 (growth rate 32, compression 0.5). The implementation is
torchvision's (`torchvision.models.densenet*`).

in_chans: the first convolution (7x7, stride 2) is replaced by a fresh one taking `in_chans` channels.
Small inputs (< 64 px): that convolution becomes 3x3 with stride 1 and the max-pool after it is removed
(the paper's CIFAR DenseNets also start with a stride-1 3x3 convolution), so 28x28 images go through the
four dense blocks at 28, 14, 7 and 3 px (the paper: 56, 28, 14 and 7 at 224 px).
No drop_rate: torchvision's DenseNet has no dropout before the classifier (its `drop_rate` is the paper's
dropout inside the dense layers, for datasets without augmentation).
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn
import torchvision.models as tvm

from cnnkit.models.adapt import check_args, is_small, new_conv, zoo_input_size
from cnnkit.registry import register_model


def _densenet(builder: Callable[..., nn.Module], num_classes: int = 1000, in_chans: int = 3,
              input_size: int | tuple[int, int] = 224) -> nn.Module:
    check_args(num_classes, in_chans)
    model = builder(weights=None, num_classes=num_classes)
    if is_small(zoo_input_size(input_size)):
        model.features.conv0 = new_conv(model.features.conv0, in_chans, kernel_size=3, stride=1)
        model.features.pool0 = nn.Identity()
    elif in_chans != 3:
        model.features.conv0 = new_conv(model.features.conv0, in_chans)
    return model


@register_model(family="densenet", source="torchvision")
def densenet121(**kwargs) -> nn.Module:
    """DenseNet-121 (Huang et al. 2017): dense blocks [6, 12, 24, 16], growth 32, 8.0M parameters on ImageNet."""
    return _densenet(tvm.densenet121, **kwargs)


@register_model(family="densenet", source="torchvision")
def densenet169(**kwargs) -> nn.Module:
    """DenseNet-169 (Huang et al. 2017): dense blocks [6, 12, 32, 32], growth 32, 14.1M parameters on ImageNet."""
    return _densenet(tvm.densenet169, **kwargs)


@register_model(family="densenet", source="torchvision")
def densenet201(**kwargs) -> nn.Module:
    """DenseNet-201 (Huang et al. 2017): dense blocks [6, 12, 48, 32], growth 32, 20.0M parameters on ImageNet."""
    return _densenet(tvm.densenet201, **kwargs)
