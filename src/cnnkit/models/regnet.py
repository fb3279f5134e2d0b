"""RegNet X and Y: Radosavovic, Kosaraju, Girshick, He and Dollar 2020, "Designing Network Design Spaces",
CVPR. Every variant is four stages of bottleneck blocks whose widths follow a quantised linear rule set by
a few numbers (depth, w_0, w_a, w_m, group width); RegNetY adds squeeze-and-excitation (ratio 0.25).
The implementation is torchvision's (`torchvision.models.RegNet` and its `BlockParams`); the builders
below pass the paper's per-variant numbers, copied from torchvision's builders (`regnet_y_400mf` ...).
They are not called directly because they derive the stage widths with tensor operations that fail
under `torch.device("meta")` (used to count parameters without memory): here that small computation runs
on the CPU whatever the default device. tests/test_zoo.py checks the result against torchvision's builders.

in_chans: the stem's 3x3 stride-2 convolution is replaced by a fresh one taking `in_chans` channels.
Small inputs (< 64 px): that convolution gets stride 1, so 28x28 images go through the four stages at
14, 7, 4 and 2 px (overall stride 16 instead of 32).
No drop_rate: torchvision's RegNets have neither dropout nor stochastic depth.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torchvision.models as tvm
from torchvision.models.regnet import BlockParams

from cnnkit.models.adapt import adapted_stem, check_args
from cnnkit.registry import register_model


def _regnet(design: dict, num_classes: int = 1000, in_chans: int = 3,
            input_size: int | tuple[int, int] = 224) -> nn.Module:
    check_args(num_classes, in_chans)
    with torch.device("cpu"):  # scalar bookkeeping ending in .tolist(): never on the meta device
        block_params = BlockParams.from_init_params(**design)
    model = tvm.RegNet(block_params, num_classes=num_classes)  # BatchNorm eps 1e-5, as torchvision's builders
    model.stem[0] = adapted_stem(model.stem[0], in_chans, input_size, stride=1)
    return model


# --- RegNetX: plain bottleneck blocks ------------------------------------------------------------------

@register_model(family="regnet", source="torchvision")
def regnet_x_400mf(**kwargs) -> nn.Module:
    """RegNetX-400MF (Radosavovic et al. 2020), 5.5M parameters on ImageNet."""
    return _regnet(dict(depth=22, w_0=24, w_a=24.48, w_m=2.54, group_width=16), **kwargs)


@register_model(family="regnet", source="torchvision")
def regnet_x_800mf(**kwargs) -> nn.Module:
    """RegNetX-800MF (Radosavovic et al. 2020), 7.3M parameters on ImageNet."""
    return _regnet(dict(depth=16, w_0=56, w_a=35.73, w_m=2.28, group_width=16), **kwargs)


@register_model(family="regnet", source="torchvision")
def regnet_x_1_6gf(**kwargs) -> nn.Module:
    """RegNetX-1.6GF (Radosavovic et al. 2020), 9.2M parameters on ImageNet."""
    return _regnet(dict(depth=18, w_0=80, w_a=34.01, w_m=2.25, group_width=24), **kwargs)


@register_model(family="regnet", source="torchvision")
def regnet_x_3_2gf(**kwargs) -> nn.Module:
    """RegNetX-3.2GF (Radosavovic et al. 2020), 15.3M parameters on ImageNet."""
    return _regnet(dict(depth=25, w_0=88, w_a=26.31, w_m=2.25, group_width=48), **kwargs)


@register_model(family="regnet", source="torchvision")
def regnet_x_8gf(**kwargs) -> nn.Module:
    """RegNetX-8GF (Radosavovic et al. 2020), 39.6M parameters on ImageNet."""
    return _regnet(dict(depth=23, w_0=80, w_a=49.56, w_m=2.88, group_width=120), **kwargs)


@register_model(family="regnet", source="torchvision")
def regnet_x_16gf(**kwargs) -> nn.Module:
    """RegNetX-16GF (Radosavovic et al. 2020), 54.3M parameters on ImageNet."""
    return _regnet(dict(depth=22, w_0=216, w_a=55.59, w_m=2.1, group_width=128), **kwargs)


@register_model(family="regnet", source="torchvision")
def regnet_x_32gf(**kwargs) -> nn.Module:
    """RegNetX-32GF (Radosavovic et al. 2020), 107.8M parameters on ImageNet."""
    return _regnet(dict(depth=23, w_0=320, w_a=69.86, w_m=2.0, group_width=168), **kwargs)


# --- RegNetY: with squeeze-and-excitation ----------------------------------------------------------------

@register_model(family="regnet", source="torchvision")
def regnet_y_400mf(**kwargs) -> nn.Module:
    """RegNetY-400MF (Radosavovic et al. 2020): RegNet with squeeze-and-excitation, 4.3M parameters on ImageNet."""
    return _regnet(dict(depth=16, w_0=48, w_a=27.89, w_m=2.09, group_width=8, se_ratio=0.25), **kwargs)


@register_model(family="regnet", source="torchvision")
def regnet_y_800mf(**kwargs) -> nn.Module:
    """RegNetY-800MF (Radosavovic et al. 2020): RegNet with squeeze-and-excitation, 6.4M parameters on ImageNet."""
    return _regnet(dict(depth=14, w_0=56, w_a=38.84, w_m=2.4, group_width=16, se_ratio=0.25), **kwargs)


@register_model(family="regnet", source="torchvision")
def regnet_y_1_6gf(**kwargs) -> nn.Module:
    """RegNetY-1.6GF (Radosavovic et al. 2020): RegNet with squeeze-and-excitation, 11.2M parameters on ImageNet."""
    return _regnet(dict(depth=27, w_0=48, w_a=20.71, w_m=2.65, group_width=24, se_ratio=0.25), **kwargs)


@register_model(family="regnet", source="torchvision")
def regnet_y_3_2gf(**kwargs) -> nn.Module:
    """RegNetY-3.2GF (Radosavovic et al. 2020): RegNet with squeeze-and-excitation, 19.4M parameters on ImageNet."""
    return _regnet(dict(depth=21, w_0=80, w_a=42.63, w_m=2.66, group_width=24, se_ratio=0.25), **kwargs)


@register_model(family="regnet", source="torchvision")
def regnet_y_8gf(**kwargs) -> nn.Module:
    """RegNetY-8GF (Radosavovic et al. 2020): RegNet with squeeze-and-excitation, 39.4M parameters on ImageNet."""
    return _regnet(dict(depth=17, w_0=192, w_a=76.82, w_m=2.19, group_width=56, se_ratio=0.25), **kwargs)


@register_model(family="regnet", source="torchvision")
def regnet_y_16gf(**kwargs) -> nn.Module:
    """RegNetY-16GF (Radosavovic et al. 2020): RegNet with squeeze-and-excitation, 83.6M parameters on ImageNet."""
    return _regnet(dict(depth=18, w_0=200, w_a=106.23, w_m=2.48, group_width=112, se_ratio=0.25), **kwargs)


@register_model(family="regnet", source="torchvision")
def regnet_y_32gf(**kwargs) -> nn.Module:
    """RegNetY-32GF (Radosavovic et al. 2020): RegNet with squeeze-and-excitation, 145.0M parameters on ImageNet."""
    return _regnet(dict(depth=20, w_0=232, w_a=115.89, w_m=2.53, group_width=232, se_ratio=0.25), **kwargs)


@register_model(family="regnet", source="torchvision")
def regnet_y_128gf(**kwargs) -> nn.Module:
    """RegNetY-128GF (a large member of Radosavovic et al. 2020's design space), 644.8M parameters on ImageNet."""
    return _regnet(dict(depth=27, w_0=456, w_a=160.83, w_m=2.52, group_width=264, se_ratio=0.25), **kwargs)
