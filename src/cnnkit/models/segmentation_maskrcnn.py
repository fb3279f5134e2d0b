"""Mask R-CNN for instance segmentation: torchvision's MaskRCNN, sized for small images.

Paper: He, Gkioxari, Dollar and Girshick 2017, "Mask R-CNN", ICCV. Faster R-CNN (a region proposal
network, then a head that classifies each proposal and refines its box; see faster_rcnn.py) gains a third
branch: for every detected box, a small fully convolutional network predicts a 28x28 binary mask per
class from RoIAlign features (bilinear sampling at exact, unrounded positions: the paper's fix that
makes masks align with the pixels). The mask of the predicted class is resized into the box.

Models follow cnnkit's detection contract (cnnkit.models.detection): `model(images)` -> one dict per
image with "boxes", "scores", "labels" (0-based) and "masks" (N, H, W) probabilities at the image's
size; `model(images, targets)` with targets' "masks" (N, H, W) 0/1 -> the training losses (torchvision's
classifier, box, objectness, RPN box and mask losses).

- maskrcnn_resnet50_fpn: torchvision's maskrcnn_resnet50_fpn (ResNet-50 + FPN, 256 channels, the paper's
  heads), built with weights=None and weights_backbone=None (BatchNorm trains, all layers trainable), with
  anchors (16 ... 256 px) and image size (no resizing) for small images.
- maskrcnn_resnet18_fpn / maskrcnn_mobilenet_v3_large_fpn: lighter, for the CPU. The zoo trunk and FPN of
  cnnkit's Faster R-CNN (TrunkWithFPN) at strides 4, 8, 16 and 32 plus a pooled level, 128 channels;
  box and mask RoIs from the stride-4 level only (torchvision's per-level rule would send every object
  of a 128-px image there anyway), one sample per RoIAlign bin (torchvision's CPU backward of RoIAlign costs
  in proportion to the samples; at stride 4 a 30-60 px object spans 8-15 cells, no more than the bins); a box
  head of two 256-wide layers on 64 sampled RoIs per image (torchvision: 1024 wide, 512 RoIs); a mask head
  of `mask_layers` 3x3 convolutions of `mask_channels` (the paper: four of 256) on 14x14 RoIs, upsampled to
  28x28 masks. The mask head and RoIAlign's backward dominated the CPU profile before these cuts; RoIAlign
  is now computed as two matrix products (cnnkit.layers.roi_align, ~4x faster than torchvision's kernel
  forward + backward in bf16 at these sizes; on the CPU only: CUDA runs torchvision's kernel).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn as tv_maskrcnn_resnet50_fpn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from cnnkit.errors import ModelError
from cnnkit.layers.roi_align import MatmulRoIAlign
from cnnkit.models.adapt import new_conv
from cnnkit.models.detection import TorchvisionDetector, check_detector_args, normalization
from cnnkit.models.faster_rcnn import TrunkWithFPN
from cnnkit.registry import register_model


class TorchvisionInstanceSegmenter(TorchvisionDetector):
    """A torchvision MaskRCNN under cnnkit's detection contract, with masks in and out."""

    def detect(self, images) -> list[dict[str, torch.Tensor]]:
        outputs = self.model(list(images))
        return [{"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"] - 1, "masks": o["masks"][:, 0]}
                for o in outputs]  # masks: (N, 1, H, W) probabilities -> (N, H, W)

    def losses(self, images, targets: list[dict]) -> dict[str, torch.Tensor]:
        shifted = []
        for target in targets:  # boxes without area (augmentation can leave some) go, with their masks
            boxes = target["boxes"].reshape(-1, 4)
            keep = (boxes[:, 2:] > boxes[:, :2]).all(dim=1)
            shifted.append({"boxes": boxes[keep], "labels": target["labels"][keep] + 1,
                            "masks": target["masks"][keep]})
        return self.model(list(images), shifted)


def _decoding_heads(model: MaskRCNN) -> list[torch.nn.Module]:
    """The heads whose outputs are decoded (boxes, mask probabilities): fp32 outputs under bf16 autocast."""
    return [model.rpn.head, model.roi_heads.box_predictor, model.roi_heads.mask_predictor]


def _anchors(sizes: Sequence[int], aspect_ratios: Sequence[float]) -> AnchorGenerator:
    return AnchorGenerator(tuple((s,) for s in sizes), (tuple(aspect_ratios),) * len(sizes))


def _mask_rcnn(backbone: str, num_classes: int = 10, in_chans: int = 3, input_size: int | tuple[int, int] = 128,
               fpn_strides: Sequence[int] = (4, 8, 16, 32), fpn_channels: int = 128,
               anchor_sizes: Sequence[int] = (16, 32, 64, 128, 256), aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
               representation_size: int = 256, mask_layers: int = 2, mask_channels: int = 64,
               image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
               score_threshold: float = 0.01, max_detections: int = 100, box_batch_size_per_image: int = 64,
               rpn_pre_nms_top_n_train: int = 1000, rpn_post_nms_top_n_train: int = 300,
               rpn_post_nms_top_n_test: int = 300) -> TorchvisionInstanceSegmenter:
    size = check_detector_args(num_classes, in_chans, input_size, minimum=64)
    mean, std = normalization(in_chans, image_mean, image_std)
    body = TrunkWithFPN(backbone, in_chans, size, fpn_strides, fpn_channels)
    if len(anchor_sizes) != len(body.strides):
        raise ModelError(f"anchor_sizes needs one size per pyramid level ({len(body.strides)}: strides "
                         f"{body.strides}), got {list(anchor_sizes)}")
    if mask_layers < 1:
        raise ModelError(f"mask_layers must be 1 or more, got {mask_layers}")
    model = MaskRCNN(
        body, min_size=min(size), max_size=max(size), image_mean=mean, image_std=std,
        rpn_anchor_generator=_anchors(anchor_sizes, aspect_ratios),
        box_roi_pool=MatmulRoIAlign(["0"], output_size=7, sampling_ratio=1),
        box_head=TwoMLPHead(fpn_channels * 7 * 7, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
        mask_roi_pool=MatmulRoIAlign(["0"], output_size=14, sampling_ratio=1),
        mask_head=MaskRCNNHeads(fpn_channels, [mask_channels] * mask_layers, 1),
        mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, num_classes + 1),
        box_batch_size_per_image=box_batch_size_per_image, rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=2 * rpn_post_nms_top_n_test, rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        box_score_thresh=score_threshold, box_detections_per_img=max_detections)
    return TorchvisionInstanceSegmenter(model, num_classes, heads=_decoding_heads(model))


@register_model(family="mask_rcnn", source="torchvision", task="instance")
def maskrcnn_resnet50_fpn(num_classes: int = 10, in_chans: int = 3, input_size: int | tuple[int, int] = 128,
                          anchor_sizes: Sequence[int] = (16, 32, 64, 128, 256),
                          aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), image_mean: Sequence[float] | None = None,
                          image_std: Sequence[float] | None = None, score_threshold: float = 0.01,
                          max_detections: int = 100) -> TorchvisionInstanceSegmenter:
    """Mask R-CNN (He et al. 2017) on ResNet-50 + FPN: torchvision's model, anchors and size for small images."""
    size = check_detector_args(num_classes, in_chans, input_size, minimum=64)
    mean, std = normalization(in_chans, image_mean, image_std)
    if len(anchor_sizes) != 5:
        raise ModelError(f"maskrcnn_resnet50_fpn has 5 pyramid levels: anchor_sizes needs 5 sizes, got {list(anchor_sizes)}")
    model = tv_maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=num_classes + 1, trainable_backbone_layers=5,
        min_size=min(size), max_size=max(size), image_mean=mean, image_std=std,
        rpn_anchor_generator=_anchors(anchor_sizes, aspect_ratios), box_score_thresh=score_threshold,
        box_detections_per_img=max_detections)
    if in_chans != 3:
        body = model.backbone.body
        body.conv1 = new_conv(body.conv1, in_chans)
    return TorchvisionInstanceSegmenter(model, num_classes, heads=_decoding_heads(model))


@register_model(family="mask_rcnn", source="torchvision", task="instance")
def maskrcnn_resnet18_fpn(**kwargs) -> TorchvisionInstanceSegmenter:
    """Mask R-CNN + FPN on ResNet-18 (torchvision's MaskRCNN), light heads for 128-px images on the CPU."""
    return _mask_rcnn("resnet18", **kwargs)


@register_model(family="mask_rcnn", source="torchvision", task="instance")
def maskrcnn_mobilenet_v3_large_fpn(**kwargs) -> TorchvisionInstanceSegmenter:
    """Mask R-CNN + FPN on MobileNetV3-Large (torchvision's MaskRCNN), light heads for the CPU."""
    return _mask_rcnn("mobilenet_v3_large", **kwargs)
