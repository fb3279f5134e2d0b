"""VGG: Simonyan and Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR, configurations A (VGG-11), B (VGG-13), D (VGG-16) and E (VGG-19); the `_bn` variants add batch
normalisation after every convolution (Ioffe and Szegedy 2015; not in the paper). The implementation is
torchvision's (`torchvision.models.vgg*`).

in_chans: the first 3x3 convolution is replaced by a fresh one taking `in_chans` channels.
Small inputs (< 64 px): the five 2x2 max-pools round up (ceil mode), so 28x28 goes 28 -> 14 -> 7 -> 4 -> 2
-> 1 instead of failing at the fifth pool (32x32 gives 1x1 as well, the common CIFAR VGG); torchvision's
adaptive average pooling then spreads the 1x1 map over the 7x7 grid the paper's classifier
(25088 -> 4096 -> 4096 -> num_classes) expects, so the parameter count stays the paper's.
`drop_rate` is the classifier's dropout (0.5 in the paper).
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn
import torchvision.models as tvm

from cnnkit.models.adapt import check_args, given, is_small, new_conv, zoo_input_size
from cnnkit.registry import register_model


def _vgg(builder: Callable[..., nn.Module], num_classes: int = 1000, in_chans: int = 3,
         input_size: int | tuple[int, int] = 224, drop_rate: float | None = None) -> nn.Module:
    check_args(num_classes, in_chans, drop_rate)
    model = builder(weights=None, num_classes=num_classes, **given(dropout=drop_rate))
    if in_chans != 3:
        model.features[0] = new_conv(model.features[0], in_chans)
    if is_small(zoo_input_size(input_size)):
        for module in model.features:
            if isinstance(module, nn.MaxPool2d):
                module.ceil_mode = True  # (B, C, 7, 7) -> (B, C, 4, 4): odd sizes round up
    return model


@register_model(family="vgg", source="torchvision")
def vgg11(**kwargs) -> nn.Module:
    """VGG-11 (Simonyan and Zisserman 2015, configuration A), 132.9M parameters on ImageNet."""
    return _vgg(tvm.vgg11, **kwargs)


@register_model(family="vgg", source="torchvision")
def vgg11_bn(**kwargs) -> nn.Module:
    """VGG-11 with batch normalisation after every convolution, 132.9M parameters on ImageNet."""
    return _vgg(tvm.vgg11_bn, **kwargs)


@register_model(family="vgg", source="torchvision")
def vgg13(**kwargs) -> nn.Module:
    """VGG-13 (Simonyan and Zisserman 2015, configuration B), 133.0M parameters on ImageNet."""
    return _vgg(tvm.vgg13, **kwargs)


@register_model(family="vgg", source="torchvision")
def vgg13_bn(**kwargs) -> nn.Module:
    """VGG-13 with batch normalisation after every convolution, 133.1M parameters on ImageNet."""
    return _vgg(tvm.vgg13_bn, **kwargs)


@register_model(family="vgg", source="torchvision")
def vgg16(**kwargs) -> nn.Module:
    """VGG-16 (Simonyan and Zisserman 2015, configuration D), 138.4M parameters on ImageNet."""
    return _vgg(tvm.vgg16, **kwargs)


@register_model(family="vgg", source="torchvision")
def vgg16_bn(**kwargs) -> nn.Module:
    """VGG-16 with batch normalisation after every convolution, 138.4M parameters on ImageNet."""
    return _vgg(tvm.vgg16_bn, **kwargs)


@register_model(family="vgg", source="torchvision")
def vgg19(**kwargs) -> nn.Module:
    """VGG-19 (Simonyan and Zisserman 2015, configuration E), 143.7M parameters on ImageNet."""
    return _vgg(tvm.vgg19, **kwargs)


@register_model(family="vgg", source="torchvision")
def vgg19_bn(**kwargs) -> nn.Module:
    """VGG-19 with batch normalisation after every convolution, 143.7M parameters on ImageNet."""
    return _vgg(tvm.vgg19_bn, **kwargs)
