"""Vision Transformer: Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words: Transformers for Image
Recognition at Scale", ICLR: ViT-B/16, ViT-B/32 and ViT-L/16 (Table 1) from torchvision
(`torchvision.models.VisionTransformer`, built from the paper's per-variant settings as torchvision's
`vit_b_16` ... do, so that image and patch size can change), and the small ViT-S/16 of Touvron et al.
2021 ("Training data-efficient image transformers & distillation through attention", DeiT-S) from timm
(`vit_small_patch16_224`).

A ViT's position embeddings are sized for its input, so input_size matters here: the model is built for
it and takes only that size.
in_chans: torchvision's patch embedding (a convolution with kernel = stride = patch size) is replaced by a
fresh one taking `in_chans`, initialised as torchvision does (truncated normal, std sqrt(1 / fan_in));
timm's takes `in_chans` itself.
Small inputs (< 64 px): 4x4 patches instead of 16x16 or 32x32, so a 28x28 image is 7x7 = 49 tokens and a
32x32 one 8x8 (the paper's ViT-B/32 at 224 px also sees 7x7 tokens); `patch_size` overrides this.
The patch size must divide the input sides (ModelError otherwise), and torchvision's ViT takes square
images only.
ViT-B/L in torchvision have neither head dropout nor stochastic depth; the timm ViT-S takes `drop_rate`
and `drop_path_rate` (0 by default; DeiT trained it with 0.1 stochastic depth).
"""

from __future__ import annotations

import math

import torch.nn as nn
import torchvision.models as tvm
from timm.models import vision_transformer as timm_vit

from cnnkit.errors import ModelError
from cnnkit.models.adapt import check_args, given, is_small, zoo_input_size
from cnnkit.registry import register_model

SMALL_PATCH = 4  # patch size for inputs below 64 px: 7x7 tokens at 28 px


def _vit(paper_patch_size: int, num_layers: int, num_heads: int, hidden_dim: int, mlp_dim: int,
         num_classes: int = 1000, in_chans: int = 3, input_size: int | tuple[int, int] = 224,
         patch_size: int | None = None) -> nn.Module:
    check_args(num_classes, in_chans)
    height, width = size = zoo_input_size(input_size)
    patch_size = patch_size or (SMALL_PATCH if is_small(size) else paper_patch_size)
    if height != width or height % patch_size:
        raise ModelError(f"torchvision's ViT needs square images whose side the patch size {patch_size} "
                         f"divides, got input_size={input_size!r}; resize the images or pass patch_size=")
    model = tvm.VisionTransformer(image_size=height, patch_size=patch_size, num_layers=num_layers,
                                  num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim,
                                  num_classes=num_classes)
    if in_chans != 3:
        old = model.conv_proj
        model.conv_proj = nn.Conv2d(in_chans, hidden_dim, patch_size, stride=patch_size,
                                    device=old.weight.device, dtype=old.weight.dtype)
        fan_in = in_chans * patch_size * patch_size
        nn.init.trunc_normal_(model.conv_proj.weight, std=math.sqrt(1 / fan_in))  # torchvision's init
        nn.init.zeros_(model.conv_proj.bias)
    return model


@register_model(family="vit", source="torchvision")
def vit_b_16(**kwargs) -> nn.Module:
    """ViT-B/16 (Dosovitskiy et al. 2021): 12 layers, width 768, 16x16 patches, 86.6M parameters on ImageNet."""
    return _vit(16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072, **kwargs)


@register_model(family="vit", source="torchvision")
def vit_b_32(**kwargs) -> nn.Module:
    """ViT-B/32 (Dosovitskiy et al. 2021): 12 layers, width 768, 32x32 patches, 88.2M parameters on ImageNet."""
    return _vit(32, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072, **kwargs)


@register_model(family="vit", source="torchvision")
def vit_l_16(**kwargs) -> nn.Module:
    """ViT-L/16 (Dosovitskiy et al. 2021): 24 layers, width 1024, 16x16 patches, 304.3M parameters on ImageNet."""
    return _vit(16, num_layers=24, num_heads=16, hidden_dim=1024, mlp_dim=4096, **kwargs)


@register_model(family="vit", source="timm")
def vit_small_patch16_224(num_classes: int = 1000, in_chans: int = 3, input_size: int | tuple[int, int] = 224,
                          drop_rate: float | None = None, drop_path_rate: float | None = None,
                          patch_size: int | None = None) -> nn.Module:
    """ViT-S/16 (DeiT-S, Touvron et al. 2021): 12 layers, width 384, 6 heads, 22.1M parameters on ImageNet."""
    check_args(num_classes, in_chans, drop_rate, drop_path_rate)
    size = zoo_input_size(input_size)
    patch_size = patch_size or (SMALL_PATCH if is_small(size) else 16)
    if any(side % patch_size for side in size):
        raise ModelError(f"vit_small_patch16_224 needs image sides that the patch size {patch_size} divides, "
                         f"got input_size={input_size!r}; resize the images or pass patch_size=")
    return timm_vit.vit_small_patch16_224(
        pretrained=False, num_classes=num_classes, in_chans=in_chans, img_size=size, patch_size=patch_size,
        **given(drop_rate=drop_rate, drop_path_rate=drop_path_rate))


@register_model(family="vit", source="cnnkit")
def vit_mini(num_classes: int = 10, in_chans: int = 1, input_size: int | tuple[int, int] = 28,
             drop_rate: float | None = None, drop_path_rate: float | None = None, patch_size: int | None = None,
             embed_dim: int = 128, depth: int = 6, num_heads: int = 4, global_pool: str = "token") -> nn.Module:
    """A small ViT for 28-32 px images on CPUs (6 layers, width 128, 4 heads, 1.2M parameters; timm's blocks).

    cnnkit's own size, not a paper's: DeiT-Ti (width 192, 12 layers) trains ~4x slower on two CPU cores. It is
    the encoder of `--task pretrain --method mae|beit` (cnnkit.models.ssl), so a pretrain run fine-tunes into it.
    global_pool: "token" (the class token, ViT's way) or "avg" (the mean of the patch tokens after the last norm,
    as BEiT and MAE fine-tune: a masked-image-modelling loss trains the patch tokens, not the class token). Both
    have the same weights, so a run of either loads into the other.
    """
    check_args(num_classes, in_chans, drop_rate, drop_path_rate)
    if global_pool not in ("token", "avg"):
        raise ModelError(f"vit_mini: global_pool={global_pool!r}; use 'token' or 'avg'")
    size = zoo_input_size(input_size)
    patch_size = patch_size or (SMALL_PATCH if is_small(size) else 16)
    if any(side % patch_size for side in size):
        raise ModelError(f"vit_mini needs image sides that the patch size {patch_size} divides, "
                         f"got input_size={input_size!r}; resize the images or pass patch_size=")
    return timm_vit.VisionTransformer(img_size=size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
                                      embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                                      global_pool=global_pool, fc_norm=False,
                                      **given(drop_rate=drop_rate, drop_path_rate=drop_path_rate))
