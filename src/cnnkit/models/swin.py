"""Swin Transformer: Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer using Shifted
Windows", ICCV: Swin-T, Swin-S and Swin-B (4x4 patches, 7x7 windows). The implementation is torchvision's
(`torchvision.models.SwinTransformer`), built from the paper's per-variant settings, as torchvision's
`swin_t`/`swin_s`/`swin_b` do (those fix the stochastic depth rate, which `drop_path_rate` sets here).

in_chans: the patch embedding (4x4 convolution, stride 4) is replaced by a fresh one taking `in_chans`.
Small inputs (< 64 px): the patch embedding becomes a 3x3 convolution with stride 1 (one token per pixel,
each seeing its 3x3 neighbourhood), so 28x28 images go through the four stages at 28, 14, 7 and 4 px
(the paper: 56, 28, 14 and 7 at 224 px) with 16, 4, 1 and 1 windows; torchvision pads maps that do not
divide into windows and stops shifting when one window covers the map.
`drop_path_rate` is the stochastic depth rate: the paper's 0.2, 0.3 and 0.5 for T, S and B when unset.
Swin has no dropout before its head, so there is no drop_rate.
"""

from __future__ import annotations

import torch.nn as nn
import torchvision.models as tvm

from cnnkit.models.adapt import adapted_stem, check_args
from cnnkit.registry import register_model


def _swin(embed_dim: int, depths: list[int], num_heads: list[int], paper_drop_path_rate: float,
          num_classes: int = 1000, in_chans: int = 3, input_size: int | tuple[int, int] = 224,
          drop_path_rate: float | None = None) -> nn.Module:
    check_args(num_classes, in_chans, drop_path_rate=drop_path_rate)
    drop_path_rate = paper_drop_path_rate if drop_path_rate is None else drop_path_rate
    model = tvm.SwinTransformer(patch_size=[4, 4], embed_dim=embed_dim, depths=depths, num_heads=num_heads,
                                window_size=[7, 7], stochastic_depth_prob=drop_path_rate,
                                num_classes=num_classes)
    patch_embedding = model.features[0][0]  # conv 4x4 stride 4, then (B, C, H, W) -> (B, H, W, C), LayerNorm
    model.features[0][0] = adapted_stem(patch_embedding, in_chans, input_size, kernel_size=3, stride=1)
    return model


@register_model(family="swin", source="torchvision")
def swin_t(**kwargs) -> nn.Module:
    """Swin-T (Liu et al. 2021): depths [2, 2, 6, 2], width 96, 28.3M parameters on ImageNet."""
    return _swin(96, [2, 2, 6, 2], [3, 6, 12, 24], paper_drop_path_rate=0.2, **kwargs)


@register_model(family="swin", source="torchvision")
def swin_s(**kwargs) -> nn.Module:
    """Swin-S (Liu et al. 2021): depths [2, 2, 18, 2], width 96, 49.6M parameters on ImageNet."""
    return _swin(96, [2, 2, 18, 2], [3, 6, 12, 24], paper_drop_path_rate=0.3, **kwargs)


@register_model(family="swin", source="torchvision")
def swin_b(**kwargs) -> nn.Module:
    """Swin-B (Liu et al. 2021): depths [2, 2, 18, 2], width 128, 87.8M parameters on ImageNet."""
    return _swin(128, [2, 2, 18, 2], [4, 8, 16, 32], paper_drop_path_rate=0.5, **kwargs)
