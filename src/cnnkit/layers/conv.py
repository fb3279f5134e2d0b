"""Convolution -> BatchNorm -> activation, the unit most of our models are built from.

Written here rather than taken from timm: `timm.layers.ConvNormAct` does the same job but folds the
activation into its norm layer (`BatchNormAct2d`) and resolves padding and layers from strings. Ours
is a dozen readable lines with plain state-dict keys (`conv.weight`, `bn.weight`, `bn.running_mean`).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from cnnkit.errors import ModelError


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Symmetric padding that keeps the spatial size at stride 1 (ceil(size / stride) otherwise).

    Args:
        kernel_size: Odd kernel size.
        dilation: Kernel dilation.

    Raises:
        ModelError: For an even kernel, which would need asymmetric padding.
    """
    if kernel_size % 2 == 0:
        raise ModelError(f"padding='same' needs an odd kernel size, got {kernel_size}; "
                         "pass an explicit integer padding for even kernels")
    return dilation * (kernel_size - 1) // 2


class ConvBnAct(nn.Module):
    """Conv2d -> BatchNorm2d -> activation.

    The convolution has no bias when BatchNorm follows it: BN's shift makes a bias redundant.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Square kernel size.
        stride: Convolution stride.
        padding: An integer, or "same" (odd kernels only): output size ceil(input size / stride).
        dilation: Kernel dilation.
        groups: Convolution groups.
        norm: Whether to add BatchNorm2d after the convolution.
        act_layer: Activation class (called without arguments), or None for no activation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | str = "same",
        dilation: int = 1,
        groups: int = 1,
        norm: bool = True,
        act_layer: Callable[[], nn.Module] | None = nn.ReLU,
    ) -> None:
        super().__init__()
        if padding == "same":
            padding = same_padding(kernel_size, dilation)
        elif not isinstance(padding, int):
            raise ModelError(f"padding must be an integer or 'same', got {padding!r}")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=not norm)
        self.bn = nn.BatchNorm2d(out_channels) if norm else nn.Identity()
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))
