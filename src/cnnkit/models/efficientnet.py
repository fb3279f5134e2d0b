"""EfficientNet-B0 ... B7: Tan and Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks", ICML. B0 comes from neural architecture search; B1 ... B7 scale its depth, width and
resolution together (compound scaling, phi = 1 ... 7). The implementation is torchvision's
(`torchvision.models.efficientnet_b*`), which also carries the per-variant dropout (0.2 for B0 rising to
0.5 for B7) and stochastic depth (0.2) of the paper's training setup.

The paper's resolutions are 224, 240, 260, 300, 380, 456, 528 and 600 px for B0 ... B7; the architecture
(and so the parameter count) does not depend on it, and the default input_size is 224 for all.

in_chans: the stem's 3x3 stride-2 convolution is replaced by a fresh one taking `in_chans` channels.
Small inputs (< 64 px): that convolution gets stride 1, so 28x28 images end at 2x2 before the head
(overall stride 16 instead of 32).
`drop_rate` is the dropout before the classifier, `drop_path_rate` the stochastic depth rate of the last
block (torchvision's `stochastic_depth_prob`); left unset, both are the paper's.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn
import torchvision.models as tvm

from cnnkit.models.adapt import adapted_stem, check_args, given
from cnnkit.registry import register_model


def _efficientnet(builder: Callable[..., nn.Module], num_classes: int = 1000, in_chans: int = 3,
                  input_size: int | tuple[int, int] = 224, drop_rate: float | None = None,
                  drop_path_rate: float | None = None) -> nn.Module:
    check_args(num_classes, in_chans, drop_rate, drop_path_rate)
    model = builder(weights=None, num_classes=num_classes,
                    **given(dropout=drop_rate, stochastic_depth_prob=drop_path_rate))
    stem = model.features[0][0]  # Conv2dNormActivation: conv 3x3 stride 2, BN, SiLU
    model.features[0][0] = adapted_stem(stem, in_chans, input_size, stride=1)
    return model


@register_model(family="efficientnet", source="torchvision")
def efficientnet_b0(**kwargs) -> nn.Module:
    """EfficientNet-B0 (Tan and Le 2019), the searched baseline (224 px in the paper), 5.3M parameters on ImageNet."""
    return _efficientnet(tvm.efficientnet_b0, **kwargs)


@register_model(family="efficientnet", source="torchvision")
def efficientnet_b1(**kwargs) -> nn.Module:
    """EfficientNet-B1 (Tan and Le 2019): width 1.0, depth 1.1, 240 px in the paper, 7.8M parameters on ImageNet."""
    return _efficientnet(tvm.efficientnet_b1, **kwargs)


@register_model(family="efficientnet", source="torchvision")
def efficientnet_b2(**kwargs) -> nn.Module:
    """EfficientNet-B2 (Tan and Le 2019): width 1.1, depth 1.2, 260 px in the paper, 9.1M parameters on ImageNet."""
    return _efficientnet(tvm.efficientnet_b2, **kwargs)


@register_model(family="efficientnet", source="torchvision")
def efficientnet_b3(**kwargs) -> nn.Module:
    """EfficientNet-B3 (Tan and Le 2019): width 1.2, depth 1.4, 300 px in the paper, 12.2M parameters on ImageNet."""
    return _efficientnet(tvm.efficientnet_b3, **kwargs)


@register_model(family="efficientnet", source="torchvision")
def efficientnet_b4(**kwargs) -> nn.Module:
    """EfficientNet-B4 (Tan and Le 2019): width 1.4, depth 1.8, 380 px in the paper, 19.3M parameters on ImageNet."""
    return _efficientnet(tvm.efficientnet_b4, **kwargs)


@register_model(family="efficientnet", source="torchvision")
def efficientnet_b5(**kwargs) -> nn.Module:
    """EfficientNet-B5 (Tan and Le 2019): width 1.6, depth 2.2, 456 px in the paper, 30.4M parameters on ImageNet."""
    return _efficientnet(tvm.efficientnet_b5, **kwargs)


@register_model(family="efficientnet", source="torchvision")
def efficientnet_b6(**kwargs) -> nn.Module:
    """EfficientNet-B6 (Tan and Le 2019): width 1.8, depth 2.6, 528 px in the paper, 43.0M parameters on ImageNet."""
    return _efficientnet(tvm.efficientnet_b6, **kwargs)


@register_model(family="efficientnet", source="torchvision")
def efficientnet_b7(**kwargs) -> nn.Module:
    """EfficientNet-B7 (Tan and Le 2019): width 2.0, depth 3.1, 600 px in the paper, 66.3M parameters on ImageNet."""
    return _efficientnet(tvm.efficientnet_b7, **kwargs)
