"""NASNet-A: Zoph, Vasudevan, Shlens and Le 2018, "Learning Transferable Architectures for Scalable Image
Recognition", CVPR: the large ImageNet model, NASNet-A (6 @ 4032), 88.9M parameters, trained at 331 px.
The implementation is timm's (`timm.models.nasnet.nasnetalarge`, a port of the TensorFlow-Slim model);
torchvision has no NASNet, and timm has no NASNet-A Mobile, so that variant is not offered.

in_chans: timm builds the stem for `in_chans`.
Small inputs (< 64 px): the stem's 3x3 convolution (stride 2, no padding) gets stride 1, so a 28x28 image
is 26x26 after it and 2x2 before the head (overall stride 16 instead of 32).
`drop_rate` is the dropout before the classifier (0 unless set, timm's default).
"""

from __future__ import annotations

import torch.nn as nn
from timm.models import nasnet

from cnnkit.models.adapt import check_args, given, is_small, new_conv, zoo_input_size
from cnnkit.registry import register_model


@register_model(family="nasnet", source="timm")
def nasnetalarge(num_classes: int = 1000, in_chans: int = 3, input_size: int | tuple[int, int] = 224,
                 drop_rate: float | None = None) -> nn.Module:
    """NASNet-A Large (Zoph et al. 2018): searched cells, 6 @ 4032, 88.9M parameters on ImageNet."""
    check_args(num_classes, in_chans, drop_rate)
    model = nasnet.nasnetalarge(pretrained=False, num_classes=num_classes, in_chans=in_chans,
                                **given(drop_rate=drop_rate))
    if is_small(zoo_input_size(input_size)):
        model.conv0.conv = new_conv(model.conv0.conv, stride=1)  # (B, C, 28, 28) -> (B, 96, 26, 26)
    return model
