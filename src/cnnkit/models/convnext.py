"""ConvNeXt: Liu, Mao, Wu, Feichtenhofer, Darrell and Xie 2022, "A ConvNet for the 2020s", CVPR: the
Tiny, Small and Base networks. The implementation is torchvision's (`torchvision.models.convnext_*`).

in_chans: the "patchify" stem (4x4 convolution, stride 4) is replaced by a fresh one taking `in_chans`.
Small inputs (< 64 px): the stem becomes a 3x3 convolution with stride 1, so 28x28 images go through the
four stages at 28, 14, 7 and 3 px (the paper: 56, 28, 14 and 7 at 224 px); a 4x4 patchify stem would
leave a 28x28 image 7x7 tokens and the last stage nothing to work on.
`drop_path_rate` is the stochastic depth rate (torchvision's `stochastic_depth_prob`): the paper's 0.1,
0.4 and 0.5 for T, S and B when left unset. ConvNeXt has no dropout, so there is no drop_rate.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn
import torchvision.models as tvm

from cnnkit.models.adapt import adapted_stem, check_args, given
from cnnkit.registry import register_model


def _convnext(builder: Callable[..., nn.Module], num_classes: int = 1000, in_chans: int = 3,
              input_size: int | tuple[int, int] = 224, drop_path_rate: float | None = None) -> nn.Module:
    check_args(num_classes, in_chans, drop_path_rate=drop_path_rate)
    model = builder(weights=None, num_classes=num_classes, **given(stochastic_depth_prob=drop_path_rate))
    stem = model.features[0][0]  # Conv2dNormActivation: conv 4x4 stride 4, LayerNorm2d
    model.features[0][0] = adapted_stem(stem, in_chans, input_size, kernel_size=3, stride=1)
    return model


@register_model(family="convnext", source="torchvision")
def convnext_tiny(**kwargs) -> nn.Module:
    """ConvNeXt-T (Liu et al. 2022): blocks [3, 3, 9, 3], widths 96 ... 768, 28.6M parameters on ImageNet."""
    return _convnext(tvm.convnext_tiny, **kwargs)


@register_model(family="convnext", source="torchvision")
def convnext_small(**kwargs) -> nn.Module:
    """ConvNeXt-S (Liu et al. 2022): blocks [3, 3, 27, 3], widths 96 ... 768, 50.2M parameters on ImageNet."""
    return _convnext(tvm.convnext_small, **kwargs)


@register_model(family="convnext", source="torchvision")
def convnext_base(**kwargs) -> nn.Module:
    """ConvNeXt-B (Liu et al. 2022): blocks [3, 3, 27, 3], widths 128 ... 1024, 88.6M parameters on ImageNet."""
    return _convnext(tvm.convnext_base, **kwargs)
