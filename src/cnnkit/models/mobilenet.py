"""MobileNet V2 and V3.

MobileNetV2: Sandler, Howard, Zhu, Zhmoginov and Chen 2018, "MobileNetV2: Inverted Residuals and Linear
    Bottlenecks", CVPR (width 1.0, 3.5M parameters).
MobileNetV3: Howard et al. 2019, "Searching for MobileNetV3", ICCV: the Large and Small networks
    (width 1.0, 5.5M and 2.5M parameters).
The implementations are torchvision's (`torchvision.models.mobilenet_v2`, `mobilenet_v3_large`,
`mobilenet_v3_small`).

in_chans: the stem's 3x3 stride-2 convolution is replaced by a fresh one taking `in_chans` channels.
Small inputs (< 64 px): that convolution gets stride 1, so 28x28 images end at 2x2 before the head
(overall stride 16 instead of 32).
`drop_rate` is the dropout before the (last) classifier layer, 0.2 by default as in torchvision.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn
import torchvision.models as tvm

from cnnkit.models.adapt import adapted_stem, check_args, given
from cnnkit.registry import register_model


def _mobilenet(builder: Callable[..., nn.Module], num_classes: int = 1000, in_chans: int = 3,
               input_size: int | tuple[int, int] = 224, drop_rate: float | None = None) -> nn.Module:
    check_args(num_classes, in_chans, drop_rate)
    model = builder(weights=None, num_classes=num_classes, **given(dropout=drop_rate))
    stem = model.features[0][0]  # Conv2dNormActivation: conv 3x3 stride 2, BN, activation
    model.features[0][0] = adapted_stem(stem, in_chans, input_size, stride=1)
    return model


@register_model(family="mobilenet", source="torchvision")
def mobilenet_v2(**kwargs) -> nn.Module:
    """MobileNetV2 (Sandler et al. 2018): inverted residuals with linear bottlenecks, 3.5M parameters on ImageNet."""
    return _mobilenet(tvm.mobilenet_v2, **kwargs)


@register_model(family="mobilenet", source="torchvision")
def mobilenet_v3_large(**kwargs) -> nn.Module:
    """MobileNetV3-Large (Howard et al. 2019): searched blocks with SE and hard-swish, 5.5M parameters on ImageNet."""
    return _mobilenet(tvm.mobilenet_v3_large, **kwargs)


@register_model(family="mobilenet", source="torchvision")
def mobilenet_v3_small(**kwargs) -> nn.Module:
    """MobileNetV3-Small (Howard et al. 2019): the low-resource searched network, 2.5M parameters on ImageNet."""
    return _mobilenet(tvm.mobilenet_v3_small, **kwargs)
