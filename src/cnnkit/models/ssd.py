"""SSD and SSDlite: torchvision's single-shot detectors, fitted to small images and the dataset's classes.

Papers: Liu et al. 2016, "SSD: Single Shot MultiBox Detector", ECCV (default boxes of several scales and
aspect ratios tiled over six feature maps of decreasing resolution; every box is classified (K + 1 classes,
background included) and regressed in one pass; hard negative mining keeps 3 negatives per positive);
Sandler et al. 2018, "MobileNetV2" (SSDlite: the same with depthwise-separable heads) on Howard et al. 2019,
"Searching for MobileNetV3". The implementations are torchvision's (`SSD`, `SSDHead`, `SSDLiteHead`,
`DefaultBoxGenerator`, the VGG and MobileNet feature extractors); this module adapts them.

What changes for 128-px scenes, and why:
- SSD300 needs at least ~270-px inputs: its last two extra layers are unpadded 3x3 convolutions (3x3 -> 1x1
  at 300 px). Here they are padded stride-2 convolutions, so a 128-px image gives the same six maps at
  16, 8, 4, 2, 1 and 1 cells (300 px: 38, 19, 10, 5, 3, 1) with the same layers and weights shapes.
- Default box scales fit objects of 15-60 px in 128-px images: 0.1 to 0.9 of the image (SSD300: 0.07 to
  1.05 for COCO objects in 300-px images), with SSD300's aspect ratios per map.
- Training from scratch (there are no ImageNet weights here): `ssd_vgg16_bn` puts BatchNorm after every
  VGG convolution, which is what makes SSD trainable from scratch (Zhu et al. 2019, "ScratchDet");
  `ssd_vgg16` is the paper's VGG-16 without it.
- SSDlite keeps torchvision's MobileNetV3-Large extractor (C4 at stride 16, then extra blocks); images are
  resized to `detector_size` (default 2x the input size: at 128 px C4 would be 8x8 cells, too coarse for
  15-px garments).
- SSDlite runs in fp32 even when training uses bf16 autocast: measured no faster in bf16 on this CPU (its
  depthwise convolutions), and its losses turned NaN within the first steps in bf16 (fine in fp32).
- Score threshold 0.01 and 100 detections per image for evaluation.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
import torch.nn as nn
from torchvision.models import mobilenet_v3_large

from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD, SSDFeatureExtractorVGG, SSDHead
from torchvision.models.detection.ssdlite import SSDLiteHead, _mobilenet_extractor, _normal_init
from torchvision.models.vgg import cfgs, make_layers

from cnnkit.models.adapt import new_conv
from cnnkit.models.detection import TorchvisionDetector, check_detector_args, eval_mode, normalization
from cnnkit.registry import register_model


def _feature_channels(extractor: nn.Module, in_chans: int, size: tuple[int, int]) -> list[int]:
    """Channels of each map the extractor returns (one dry run; torchvision's helper assumes 3 channels)."""
    reference = next(extractor.parameters())
    with torch.no_grad(), eval_mode(extractor):
        maps = extractor(torch.zeros(1, in_chans, *size, device=reference.device, dtype=reference.dtype))
    return [m.shape[1] for m in maps.values()]


def _ssd(extractor: nn.Module, head_class, anchors: DefaultBoxGenerator, num_classes: int, in_chans: int,
         size: tuple[int, int], image_mean, image_std, score_threshold: float, max_detections: int, fp32: bool = False,
         **ssd_kwargs) -> TorchvisionDetector:
    mean, std = normalization(in_chans, image_mean, image_std)
    channels = _feature_channels(extractor, in_chans, size)
    head = head_class(channels, anchors.num_anchors_per_location(), num_classes + 1)
    model = SSD(extractor, anchors, size, num_classes + 1, image_mean=mean, image_std=std, head=head,
                score_thresh=score_threshold, detections_per_img=max_detections, **ssd_kwargs)
    return TorchvisionDetector(model, num_classes, heads=[model.head], fp32=fp32)


def _ssd_vgg16(batch_norm: bool, num_classes: int = 10, in_chans: int = 3, input_size: int | tuple[int, int] = 128,
               min_scale: float = 0.1, max_scale: float = 0.9, image_mean: Sequence[float] | None = None,
               image_std: Sequence[float] | None = None, score_threshold: float = 0.01,
               max_detections: int = 100) -> TorchvisionDetector:
    size = check_detector_args(num_classes, in_chans, input_size, minimum=64)
    vgg = make_layers(cfgs["D"], batch_norm=batch_norm)  # VGG-16's 13 convolutions and 5 max-pools
    if in_chans != 3:
        vgg[0] = new_conv(vgg[0], in_chans)
    extractor = SSDFeatureExtractorVGG(vgg, highres=False)
    for block in extractor.extra[3:5]:  # conv10_2 and conv11_2: unpadded 3x3 -> padded stride 2 (see above)
        block[2].stride, block[2].padding = (2, 2), (1, 1)
    anchors = DefaultBoxGenerator([[2], [2, 3], [2, 3], [2, 3], [2], [2]], min_ratio=min_scale, max_ratio=max_scale)
    return _ssd(extractor, SSDHead, anchors, num_classes, in_chans, size, image_mean, image_std,
                score_threshold, max_detections)


@register_model(family="ssd", source="torchvision", task="detect")
def ssd_vgg16(**kwargs) -> TorchvisionDetector:
    """SSD300 (Liu et al. 2016) on VGG-16 without BatchNorm, as in the paper; last layers padded for small images."""
    return _ssd_vgg16(False, **kwargs)


@register_model(family="ssd", source="torchvision", task="detect")
def ssd_vgg16_bn(**kwargs) -> TorchvisionDetector:
    """SSD300 on VGG-16 with BatchNorm after every convolution (trainable from scratch, as in ScratchDet)."""
    return _ssd_vgg16(True, **kwargs)


@register_model(family="ssd", source="torchvision", task="detect")
def ssdlite_mobilenet_v3_large(num_classes: int = 10, in_chans: int = 3, input_size: int | tuple[int, int] = 128,
                               detector_size: int | None = None, min_scale: float = 0.1, max_scale: float = 0.9,
                               image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
                               score_threshold: float = 0.01, max_detections: int = 100) -> TorchvisionDetector:
    """SSDlite (Sandler et al. 2018) on MobileNetV3-Large, images resized to 2x the input size by default."""
    size = check_detector_args(num_classes, in_chans, input_size, minimum=32)
    if detector_size is not None:
        size = (detector_size, detector_size)
    else:
        size = (2 * size[0], 2 * size[1])
    # torchvision's own recipe for SSDlite from scratch: BN momentum 0.03, the "reduced tail" (half the
    # channels in the last block, MobileNetV3 paper Table 6) and normal(0, 0.03) initialisation.
    norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
    backbone = mobilenet_v3_large(weights=None, norm_layer=norm_layer, reduced_tail=True)
    _normal_init(backbone)
    if in_chans != 3:
        stem = backbone.features[0][0]
        backbone.features[0][0] = new_conv(stem, in_chans)
    extractor = _mobilenet_extractor(backbone, trainable_layers=6, norm_layer=norm_layer)
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=min_scale, max_ratio=max_scale)
    return _ssd(extractor, partial(SSDLiteHead, norm_layer=norm_layer), anchors, num_classes, in_chans, size,
                image_mean, image_std, score_threshold, max_detections, fp32=True, nms_thresh=0.55,
                topk_candidates=300)
