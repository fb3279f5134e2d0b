"""AlexNet: Krizhevsky, Sutskever and Hinton 2012, "ImageNet Classification with Deep Convolutional Neural
Networks", NeurIPS. The implementation is torchvision's (`torchvision.models.alexnet`), the single-GPU
variant of "One weird trick for parallelizing convolutional neural networks" (Krizhevsky 2014) that
torchvision ships: 64-192-384-256-256 filters, no local response normalisation, 61.1M parameters.

in_chans: the first convolution (11x11, stride 4) is replaced by a fresh one taking `in_chans` channels.
Small inputs (< 64 px): that first convolution becomes 3x3 with stride 1, so a 28x28 image keeps its
resolution there (28 -> 13 -> 6 -> 2 after the three max-pools); torchvision's adaptive average pooling to
6x6 then feeds the unchanged classifier (9216 -> 4096 -> 4096 -> num_classes).
`drop_rate` is the classifier's dropout (0.5 in the paper).
"""

from __future__ import annotations

import torch.nn as nn
import torchvision.models as tvm

from cnnkit.models.adapt import adapted_stem, check_args, given
from cnnkit.registry import register_model


@register_model(family="alexnet", source="torchvision")
def alexnet(num_classes: int = 1000, in_chans: int = 3, input_size: int | tuple[int, int] = 224,
            drop_rate: float | None = None) -> nn.Module:
    """AlexNet (Krizhevsky et al. 2012), torchvision's single-tower version, 61.1M parameters on ImageNet."""
    check_args(num_classes, in_chans, drop_rate)
    model = tvm.alexnet(weights=None, num_classes=num_classes, **given(dropout=drop_rate))
    model.features[0] = adapted_stem(model.features[0], in_chans, input_size, kernel_size=3, stride=1)
    return model
