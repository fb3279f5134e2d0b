"""ShuffleNet V2: Ma, Zhang, Zheng and Sun 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN
Architecture Design", ECCV, at the widths 0.5x, 1.0x, 1.5x and 2.0x of its Table 5. The implementation is
torchvision's (`torchvision.models.shufflenet_v2_x*`).

in_chans: the first convolution (3x3, stride 2) is replaced by a fresh one taking `in_chans` channels.
Small inputs (< 64 px): that convolution gets stride 1 and the max-pool after it is removed, so 28x28
images go through the three stages at 14, 7 and 4 px (the paper: 28, 14 and 7 at 224 px).
No drop_rate: torchvision's ShuffleNet V2 has no dropout.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn
import torchvision.models as tvm

from cnnkit.models.adapt import check_args, is_small, new_conv, zoo_input_size
from cnnkit.registry import register_model


def _shufflenet(builder: Callable[..., nn.Module], num_classes: int = 1000, in_chans: int = 3,
                input_size: int | tuple[int, int] = 224) -> nn.Module:
    check_args(num_classes, in_chans)
    model = builder(weights=None, num_classes=num_classes)
    if is_small(zoo_input_size(input_size)):
        model.conv1[0] = new_conv(model.conv1[0], in_chans, stride=1)
        model.maxpool = nn.Identity()
    elif in_chans != 3:
        model.conv1[0] = new_conv(model.conv1[0], in_chans)
    return model


@register_model(family="shufflenet", source="torchvision")
def shufflenet_v2_x0_5(**kwargs) -> nn.Module:
    """ShuffleNet V2 0.5x (Ma et al. 2018): channel split and shuffle, 1.4M parameters on ImageNet."""
    return _shufflenet(tvm.shufflenet_v2_x0_5, **kwargs)


@register_model(family="shufflenet", source="torchvision")
def shufflenet_v2_x1_0(**kwargs) -> nn.Module:
    """ShuffleNet V2 1.0x (Ma et al. 2018): channel split and shuffle, 2.3M parameters on ImageNet."""
    return _shufflenet(tvm.shufflenet_v2_x1_0, **kwargs)


@register_model(family="shufflenet", source="torchvision")
def shufflenet_v2_x1_5(**kwargs) -> nn.Module:
    """ShuffleNet V2 1.5x (Ma et al. 2018): channel split and shuffle, 3.5M parameters on ImageNet."""
    return _shufflenet(tvm.shufflenet_v2_x1_5, **kwargs)


@register_model(family="shufflenet", source="torchvision")
def shufflenet_v2_x2_0(**kwargs) -> nn.Module:
    """ShuffleNet V2 2.0x (Ma et al. 2018): channel split and shuffle, 7.4M parameters on ImageNet."""
    return _shufflenet(tvm.shufflenet_v2_x2_0, **kwargs)
