"""CoAtNet: Dai, Liu, Le and Tan 2021, "CoAtNet: Marrying Convolution and Attention for All Data Sizes",
NeurIPS: CoAtNet-0 and CoAtNet-1 (a convolutional stem, two MBConv stages, then two Transformer stages
with relative attention). The implementation is timm's (`timm.models.maxxvit.coatnet_0_224`,
`coatnet_1_224`), which follows the paper's configuration (25.0M and 42.2M parameters; the paper reports
25M and 42M); timm's `coatnet_*_rw_*` variants are Ross Wightman's modifications, not registered here.

The relative-position tables of the Transformer stages are sized for the input, so the model is built
for input_size (timm's `img_size`) and takes only that size. timm's downsampling needs even feature maps
at every stage, so from 64 px up the input sides must be multiples of 32 (224, 256, 384 ...).
in_chans: timm builds the stem for `in_chans`.
Small inputs (< 64 px): the stem's first 3x3 convolution gets stride 1 and enough extra zero padding to
reach the next multiple of 16 (2 pixels per side for 28x28, none for 32x32), and the network is built for
twice that size, so that timm sizes every stage for the feature maps it will see: 28x28 images go through
the four stages at 16, 8, 4 and 2 px (the paper: 56, 28, 14 and 7 at 224 px), instead of failing (28 is
not a multiple of 32) or, at 32x32, reaching a last Transformer stage that attends over one position.
`drop_rate` is the dropout before the classifier, `drop_path_rate` the stochastic depth rate (both 0
unless set, timm's defaults; the paper trains with stochastic depth).
"""

from __future__ import annotations

import math
from typing import Callable

import torch.nn as nn
from timm.models import maxxvit

from cnnkit.errors import ModelError
from cnnkit.models.adapt import check_args, given, is_small, new_conv, zoo_input_size
from cnnkit.registry import register_model


def _coatnet(builder: Callable[..., nn.Module], num_classes: int = 1000, in_chans: int = 3,
             input_size: int | tuple[int, int] = 224, drop_rate: float | None = None,
             drop_path_rate: float | None = None) -> nn.Module:
    check_args(num_classes, in_chans, drop_rate, drop_path_rate)
    size = zoo_input_size(input_size)
    small = is_small(size)
    padded = tuple(16 * math.ceil(side / 16) for side in size) if small else size  # 28 -> 32
    if any(side % 32 for side in size) and not small or any((p - side) % 2 for p, side in zip(padded, size)):
        raise ModelError(f"CoAtNet needs input sides that are multiples of 32 (from 64 px up) or even (below "
                         f"64 px), got input_size={input_size!r}; resize the images, e.g. to 224 or 32")
    model = builder(pretrained=False, num_classes=num_classes, in_chans=in_chans,
                    img_size=tuple(2 * side for side in padded) if small else size,
                    **given(drop_rate=drop_rate, drop_path_rate=drop_path_rate))
    if small:  # (B, C, 28, 28) -> (B, 64, 32, 32): stride 1, padding 1 + 2
        padding = tuple(1 + (p - side) // 2 for p, side in zip(padded, size))
        model.stem.conv1 = new_conv(model.stem.conv1, stride=1, padding=padding)
    return model


@register_model(family="coatnet", source="timm")
def coatnet_0_224(**kwargs) -> nn.Module:
    """CoAtNet-0 (Dai et al. 2021): C-C-T-T stages [2, 3, 5, 2], widths 96 ... 768, 25M parameters on ImageNet."""
    return _coatnet(maxxvit.coatnet_0_224, **kwargs)


@register_model(family="coatnet", source="timm")
def coatnet_1_224(**kwargs) -> nn.Module:
    """CoAtNet-1 (Dai et al. 2021): C-C-T-T stages [2, 6, 14, 2], widths 96 ... 768, 42M parameters on ImageNet."""
    return _coatnet(maxxvit.coatnet_1_224, **kwargs)
