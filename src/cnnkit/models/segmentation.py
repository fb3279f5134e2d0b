"""Semantic segmentation networks: FCN and DeepLabV3 (torchvision), DeepLabV3+ (its decoder written here).

Every model maps images (B, C, H, W) to per-pixel class logits (B, K, H, W) at the input's resolution;
`forward` always returns that tensor (torchvision's return a dict {"out", "aux"}: the classes below
subclass them and return result["out"], so the parameter names stay torchvision's and its pretrained
weights load by name).

- FCN (Long, Shelhamer and Darrell 2015, "Fully Convolutional Networks for Semantic Segmentation"): a
  classification network with its pooling and fully connected layers replaced by convolutions, scoring
  every position of its last feature map, then upsampled bilinearly to the image. torchvision's version
  (and this one) keeps a ResNet's resolution at 1/8 with dilated convolutions instead of the paper's
  skip-layer fusion (FCN-8s), and scores with FCNHead (3x3 conv, BN, ReLU, dropout, 1x1 conv).
- DeepLabV3 (Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation"): atrous
  (dilated) convolution lets the last ResNet stages keep their resolution (output stride 8 or 16 instead
  of 32) with the same receptive field growth; Atrous Spatial Pyramid Pooling (ASPP) then looks at each
  position at several dilation rates in parallel (1x1, three 3x3 at rates r1 < r2 < r3, and the image's
  global average), concatenated and fused by a 1x1 convolution.
- DeepLabV3+ (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution"): DeepLabV3 plus a
  small decoder that upsamples the ASPP output x4 and fuses it with the backbone's stride-4 features
  (reduced to 48 channels) through two 3x3 convolutions, which sharpens object boundaries. Written here
  (torchvision has no V3+); regular rather than depthwise-separable convolutions in the decoder.

Deviations, all for small images:
- The ASPP rates are scaled to the feature map. The paper's (6, 12, 18) at output stride 16 are for
  513-px crops (33x33 features); a 3x3 kernel at rate 18 on the 8x8 map of a 128-px image would see only
  padding. Default here: (6, 12, 18) x (feature side / 33), rounded, at least 1 each: (1, 3, 4) at 8x8
  (128 px, stride 16), (3, 6, 9) at 16x16 (128 px, stride 8). `atrous_rates=` overrides it.
- Below 64 px (cnnkit.models.adapt), the stem keeps full resolution (3x3 stride-1 first convolution, no
  max-pool), as the classification zoo does.
- in_chans != 3: a fresh first convolution.
- ResNet-18/34 have basic blocks, which torchvision will not dilate: `dilate_stage` sets the strides and
  dilations itself (the first block of a dilated stage also uses the new rate, a slight difference from
  torchvision's bottleneck ResNets, which keep the previous rate there).
- fastnet backbones (`deeplabv3_fastnet`, `fcn_fastnet`): cnnkit's demo classifier at its own output stride 8,
  or 4 with the last stage's pool dropped and its second convolution dilated; small enough for CPU training
  and initialised from a fastnet classification run with `pretrained=RUN`.
Pretrained weights are never downloaded here (weights=None, weights_backbone=None); `--pretrained`
loads them later by name.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm
from torchvision.models import segmentation as tv_segmentation
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from cnnkit.errors import ModelError
from cnnkit.models._utils import check_positive
from cnnkit.models.adapt import adapted_stem, check_args, is_small, zoo_input_size
from cnnkit.registry import register_model

PAPER_RATES = (6, 12, 18)  # DeepLabV3's ASPP rates at output stride 16 ...
PAPER_FEATURE_SIDE = 33  # ... on 513-px crops: 33x33 feature maps


class FCN(tv_segmentation.FCN):
    """torchvision's FCN, returning the logits tensor (B, K, H, W) instead of a dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)["out"]


class DeepLabV3(tv_segmentation.DeepLabV3):
    """torchvision's DeepLabV3, returning the logits tensor (B, K, H, W) instead of a dict."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)["out"]


class DeepLabV3PlusHead(nn.Module):
    """ASPP on the deep features, then the V3+ decoder with the stride-4 features (see the module docstring)."""

    def __init__(self, in_channels: int, low_level_channels: int, num_classes: int, atrous_rates,
                 low_level_reduced: int = 48, channels: int = 256):
        super().__init__()
        self.aspp = ASPP(in_channels, atrous_rates, channels)
        self.project = nn.Sequential(nn.Conv2d(low_level_channels, low_level_reduced, 1, bias=False),
                                     nn.BatchNorm2d(low_level_reduced), nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(
            nn.Conv2d(channels + low_level_reduced, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        low = self.project(features["low"])  # (B, 48, H/4, W/4)
        deep = self.aspp(features["out"])  # (B, 256, H/os, W/os)
        deep = F.interpolate(deep, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([deep, low], dim=1))  # (B, K, H/4, W/4)


class DeepLabV3Plus(nn.Module):
    """Backbone returning {"low": stride-4 features, "out": deep features} + DeepLabV3PlusHead."""

    def __init__(self, backbone: nn.Module, head: DeepLabV3PlusHead):
        super().__init__()
        self.backbone, self.classifier = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------------------------- backbones
def dilate_stage(stage: nn.Sequential, dilation: int) -> None:
    """Turn a ResNet stage's stride-2 downsampling into dilation: stride 1, 3x3 convolutions at `dilation`.

    The stage then keeps its input's resolution and each 3x3 kernel spreads its taps `dilation` pixels
    apart, so the receptive field grows as it did with the stride (the "atrous" trick).
    """
    for module in stage.modules():
        if isinstance(module, nn.Conv2d):
            if module.stride == (2, 2):
                module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation, module.padding = (dilation, dilation), (dilation, dilation)


def resnet_backbone(name: str, in_chans: int, input_size, output_stride: int, return_layers: dict[str, str]) -> nn.Module:
    """A torchvision ResNet (resnet18/34/50/101) as a feature extractor at `output_stride` 8, 16 or 32.

    Returns torchvision's IntermediateLayerGetter over the ResNet (its layers keep their names:
    conv1, bn1, layer1 ... layer4), giving {out_name: features} for `return_layers`.
    """
    if output_stride not in (8, 16, 32):
        raise ModelError(f"output_stride must be 8, 16 or 32, got {output_stride}")
    resnet = getattr(tvm, name)(weights=None)
    resnet.conv1 = adapted_stem(resnet.conv1, in_chans, input_size, kernel_size=3, stride=1)
    if is_small(zoo_input_size(input_size)):
        resnet.maxpool = nn.Identity()
    dilated = {8: ("layer3", "layer4"), 16: ("layer4",), 32: ()}[output_stride]
    for index, stage_name in enumerate(dilated):
        dilate_stage(getattr(resnet, stage_name), 2 ** (index + 1))
    return IntermediateLayerGetter(resnet, return_layers)


def fastnet_backbone(in_chans: int, output_stride: int, return_layers: dict[str, str]) -> nn.Module:
    """cnnkit's fastnet (the demo's classifier) as a feature extractor at `output_stride` 8 (its own) or 4.

    Stride 4 drops the last stage's max-pool and dilates that stage's second convolution by 2, the atrous trick
    on a net whose stages pool after their first convolution. The layers keep fastnet's names (stem, stages),
    so a fastnet classifier run loads into it with `pretrained=RUN`.
    """
    from cnnkit.models.fastnet import FastNet

    if output_stride not in (4, 8):
        raise ModelError(f"output_stride must be 8 (fastnet's own) or 4 for a fastnet backbone, got {output_stride}")
    net = FastNet(in_chans=in_chans)
    if output_stride == 4:
        last = net.stages[-1]
        last.pool = nn.Identity()
        last.conv2.dilation, last.conv2.padding = (2, 2), (2, 2)
    return IntermediateLayerGetter(net, return_layers)


def _deep_backbone(name: str, in_chans: int, input_size, output_stride: int):
    """(feature extractor giving {"out": deep features}, their channels) for a ResNet name or "fastnet"."""
    if name == "fastnet":
        return fastnet_backbone(in_chans, output_stride, {"stages": "out"}), 128
    return resnet_backbone(name, in_chans, input_size, output_stride, {"layer4": "out"}), _resnet_channels(name)[1]


def default_rates(input_size, output_stride: int, small: bool) -> tuple[int, ...]:
    """ASPP rates scaled from the paper's (6, 12, 18) on 33x33 features to this model's feature side."""
    side = min(zoo_input_size(input_size)) / (output_stride // (4 if small else 1))
    return tuple(max(1, round(rate * side / PAPER_FEATURE_SIDE)) for rate in PAPER_RATES)


def _resnet_channels(name: str) -> tuple[int, int]:
    """(layer1, layer4) output channels of a torchvision ResNet."""
    return (64, 512) if name in ("resnet18", "resnet34") else (256, 2048)


def _check(num_classes: int, in_chans: int, input_size) -> bool:
    check_args(num_classes, in_chans)
    return is_small(zoo_input_size(input_size))


# ----------------------------------------------------------------------------------------------- builders
def fcn(backbone_name: str = "resnet50", num_classes: int = 21, in_chans: int = 3, input_size=128,
        output_stride: int = 8) -> FCN:
    """FCN on a dilated ResNet or fastnet (torchvision's FCN and FCNHead; `fcn_resnet50` is torchvision's model)."""
    _check(num_classes, in_chans, input_size)
    backbone, channels = _deep_backbone(backbone_name, in_chans, input_size, output_stride)
    return FCN(backbone, FCNHead(channels, num_classes), None)


def deeplab_head(in_channels: int, num_classes: int, rates, channels: int = 256) -> nn.Sequential:
    """torchvision's DeepLabHead (ASPP, 3x3 conv-BN-ReLU, 1x1 classifier) with `channels` instead of its fixed 256.

    The layers keep DeepLabHead's names (0: ASPP ... 4: classifier), so torchvision's weights load at 256.
    """
    if channels == 256:
        return DeepLabHead(in_channels, num_classes, rates)
    check_positive("aspp_channels", channels)
    return nn.Sequential(ASPP(in_channels, rates, channels), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, num_classes, 1))


def deeplabv3(backbone_name: str = "resnet50", num_classes: int = 21, in_chans: int = 3, input_size=128,
              output_stride: int = 8, atrous_rates=None, aspp_channels: int = 256) -> DeepLabV3:
    """DeepLabV3 on a dilated ResNet or fastnet (torchvision's DeepLabV3 and ASPP; `aspp_channels` 256 as the
    paper, fewer for a cheaper head on a small backbone)."""
    small = _check(num_classes, in_chans, input_size)
    backbone, channels = _deep_backbone(backbone_name, in_chans, input_size, output_stride)
    rates = tuple(atrous_rates) if atrous_rates else default_rates(input_size, output_stride, small)
    return DeepLabV3(backbone, deeplab_head(channels, num_classes, rates, aspp_channels), None)


def deeplabv3plus(backbone_name: str = "resnet50", num_classes: int = 21, in_chans: int = 3, input_size=128,
                  output_stride: int = 16, atrous_rates=None) -> DeepLabV3Plus:
    """DeepLabV3+ on a dilated ResNet: ASPP plus the stride-4 decoder (written here)."""
    small = _check(num_classes, in_chans, input_size)
    backbone = resnet_backbone(backbone_name, in_chans, input_size, output_stride, {"layer1": "low", "layer4": "out"})
    rates = tuple(atrous_rates) if atrous_rates else default_rates(input_size, output_stride, small)
    low_channels, channels = _resnet_channels(backbone_name)
    return DeepLabV3Plus(backbone, DeepLabV3PlusHead(channels, low_channels, num_classes, rates))


@register_model(family="fcn", source="torchvision", task="segment")
def fcn_resnet50(**kwargs) -> FCN:
    """FCN (Long et al. 2015) on a ResNet-50 dilated to output stride 8, as torchvision's fcn_resnet50."""
    return fcn("resnet50", **kwargs)


@register_model(family="fcn", source="torchvision", task="segment")
def fcn_resnet18(**kwargs) -> FCN:
    """FCN on a ResNet-18 dilated to output stride 8: torchvision's FCN and FCNHead, a CPU-sized backbone."""
    return fcn("resnet18", **kwargs)


@register_model(family="fcn", source="cnnkit", task="segment")
def fcn_fastnet(**kwargs) -> FCN:
    """FCN on fastnet (the demo's classifier, 0.3M parameters) at its own output stride 8: `pretrained=` a
    fastnet classification run starts it from garments it already knows."""
    return fcn("fastnet", **kwargs)


@register_model(family="deeplab", source="cnnkit", task="segment")
def deeplabv3_fastnet(**kwargs) -> DeepLabV3:
    """DeepLabV3 (torchvision's ASPP head) on fastnet at its own output stride 8, a CPU-sized backbone that a
    fastnet classification run fits tensor for tensor (`pretrained=RUN`)."""
    return deeplabv3("fastnet", **kwargs)


@register_model(family="deeplab", source="torchvision", task="segment")
def deeplabv3_resnet50(**kwargs) -> DeepLabV3:
    """DeepLabV3 (Chen et al. 2017) on a ResNet-50 at output stride 8, ASPP rates scaled to the input."""
    return deeplabv3("resnet50", **kwargs)


@register_model(family="deeplab", source="torchvision", task="segment")
def deeplabv3_resnet18(**kwargs) -> DeepLabV3:
    """DeepLabV3 on a ResNet-18 at output stride 8 (torchvision's DeepLabV3 and ASPP), a CPU-sized backbone."""
    return deeplabv3("resnet18", **kwargs)


@register_model(family="deeplab", source="torchvision", task="segment")
def deeplabv3_mobilenet_v3_large(num_classes: int = 21, in_chans: int = 3, input_size=128,
                                 atrous_rates=None) -> DeepLabV3:
    """DeepLabV3 on MobileNetV3-Large at output stride 16 (torchvision's deeplabv3_mobilenet_v3_large)."""
    small = _check(num_classes, in_chans, input_size)
    model = tv_segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                         num_classes=num_classes, aux_loss=False)
    stem = model.backbone["0"][0]
    model.backbone["0"][0] = adapted_stem(stem, in_chans, input_size, stride=1)
    rates = tuple(atrous_rates) if atrous_rates else default_rates(input_size, 16, small)
    in_channels = model.classifier[0].convs[0][0].in_channels
    return DeepLabV3(model.backbone, DeepLabHead(in_channels, num_classes, rates), None)


@register_model(family="deeplab", source="cnnkit", task="segment")
def deeplabv3plus_resnet18(**kwargs) -> DeepLabV3Plus:
    """DeepLabV3+ (Chen et al. 2018) on a ResNet-18 at output stride 16: ASPP and a stride-4 decoder."""
    return deeplabv3plus("resnet18", **kwargs)


@register_model(family="deeplab", source="cnnkit", task="segment")
def deeplabv3plus_resnet50(**kwargs) -> DeepLabV3Plus:
    """DeepLabV3+ (Chen et al. 2018) on a ResNet-50 at output stride 16: ASPP and a stride-4 decoder."""
    return deeplabv3plus("resnet50", **kwargs)


__all__ = ["DeepLabV3", "DeepLabV3Plus", "FCN", "deeplabv3", "deeplabv3plus", "dilate_stage", "fastnet_backbone", "fcn",
           "resnet_backbone"]
