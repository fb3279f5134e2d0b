"""GhostNet: Han, Wang, Tian, Guo, Xu and Xu 2020, "GhostNet: More Features from Cheap Operations", CVPR,
width 1.0 (5.2M parameters). The implementation is timm's (`timm.models.ghostnet.ghostnet_100`);
torchvision has no GhostNet.

in_chans: timm builds the stem for `in_chans`.
Small inputs (< 64 px): the stem's 3x3 stride-2 convolution gets stride 1, so 28x28 images end at 2x2
before the head (overall stride 16 instead of 32).
`drop_rate` is the dropout before the classifier (timm's 0.2 when unset). timm's GhostNet has no
stochastic depth.
"""

from __future__ import annotations

import torch.nn as nn
from timm.models import ghostnet

from cnnkit.models.adapt import check_args, given, is_small, new_conv, zoo_input_size
from cnnkit.registry import register_model


@register_model(family="ghostnet", source="timm")
def ghostnet_100(num_classes: int = 1000, in_chans: int = 3, input_size: int | tuple[int, int] = 224,
                 drop_rate: float | None = None) -> nn.Module:
    """GhostNet 1.0x (Han et al. 2020): ghost modules make half the features cheaply, 5.2M parameters on ImageNet."""
    check_args(num_classes, in_chans, drop_rate)
    model = ghostnet.ghostnet_100(pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                  **given(drop_rate=drop_rate))
    if is_small(zoo_input_size(input_size)):
        model.conv_stem = new_conv(model.conv_stem, stride=1)  # (B, C, 28, 28) -> (B, 16, 28, 28)
    return model
