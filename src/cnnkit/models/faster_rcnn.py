"""Faster R-CNN with a feature pyramid, on a zoo trunk: torchvision's FasterRCNN sized for small images.

Papers: Ren, He, Girshick and Sun 2015, "Faster R-CNN: Towards Real-Time Object Detection with Region Proposal
Networks", NeurIPS (a region proposal network (RPN) shares the backbone's features with the Fast R-CNN head
that classifies and refines its proposals); Lin et al. 2017, "Feature Pyramid Networks for Object Detection",
CVPR (a top-down pathway gives every scale a map with deep semantics; anchors of one size per level).
The implementation is torchvision's (`FasterRCNN`, `FeaturePyramidNetwork`, `MultiScaleRoIAlign`, the last
computed as two matrix products by cnnkit.layers.roi_align on CPUs: same numbers, faster there; torchvision's
kernel on CUDA); this module
chooses its parts and sizes. How it descends from R-CNN and Fast R-CNN: see rcnn.py.

What changes for 128-px scenes, and why:
- Backbone: a zoo classifier's stages (cnnkit.models.detection.zoo_trunk) with BatchNorm that trains, since
  there are no pretrained weights here to freeze (torchvision freezes BN only for pretrained backbones).
- Pyramid: the stages at strides 8, 16 and 32 plus a max-pooled level at 64 (torchvision's ResNet-FPN also
  uses stride 4, a 32x32 map here that costs more than it adds for objects of 15 px and up), 128 channels
  (torchvision: 256) to keep the CPU cost down.
- Anchors: 16, 32, 64 and 128 px (one size per level) with aspect ratios 0.5, 1 and 2; torchvision's 32-512
  are for 800-px COCO images.
- Images are not resized (torchvision scales the shorter side to 800): min_size is the input size.
- Box head: 7x7 RoIAlign features from the stride-8 level only, one sample per bin (torchvision: the level
  chosen by box size, 2x2 samples), then two 256-wide fully connected layers (torchvision: 1024); 128
  sampled RoIs per image in training (512); score threshold 0.01 (0.05) so mAP sees more of the ranking.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from cnnkit.errors import ModelError
from cnnkit.layers.roi_align import MatmulRoIAlign
from cnnkit.models.detection import TorchvisionDetector, check_detector_args, normalization, zoo_trunk
from cnnkit.registry import register_model


class TrunkWithFPN(nn.Module):
    """A zoo trunk's stages at `strides` through a feature pyramid: {"0": finest, ..., "pool": coarsest}.

    Attributes:
        out_channels: Channels of every pyramid level (what torchvision's detectors read).
        strides: The input strides of the levels, the pooled one included.
    """

    def __init__(self, backbone: str, in_chans: int, input_size: tuple[int, int], strides: Sequence[int],
                 out_channels: int):
        super().__init__()
        self.trunk = zoo_trunk(backbone, in_chans, input_size)
        found = self.trunk.strides
        # The last stage at each wanted stride (ResNet's stem and layer1 are both at stride 4).
        self.levels = [max(i for i, s in enumerate(found) if s == stride) for stride in strides if stride in found]
        if len(self.levels) != len(strides):
            raise ModelError(f"backbone={backbone!r} has stages at strides {found} for {input_size[0]}x"
                             f"{input_size[1]} images, not at all of {list(strides)}; use a larger input_size "
                             "or other fpn_strides")
        self.fpn = FeaturePyramidNetwork([self.trunk.channels[i] for i in self.levels], out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels
        self.strides = [*strides, strides[-1] * 2]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.trunk(x)
        return self.fpn(OrderedDict((str(n), features[i]) for n, i in enumerate(self.levels)))


def _faster_rcnn(backbone: str, num_classes: int = 10, in_chans: int = 3, input_size: int | tuple[int, int] = 128,
                 fpn_strides: Sequence[int] = (8, 16, 32), fpn_channels: int = 128,
                 anchor_sizes: Sequence[int] = (16, 32, 64, 128), aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 representation_size: int = 256, image_mean: Sequence[float] | None = None,
                 image_std: Sequence[float] | None = None, score_threshold: float = 0.01,
                 max_detections: int = 100, rpn_batch_size_per_image: int = 256,
                 box_batch_size_per_image: int = 128, rpn_pre_nms_top_n_train: int = 1000,
                 rpn_post_nms_top_n_train: int = 500, rpn_pre_nms_top_n_test: int = 500,
                 rpn_post_nms_top_n_test: int = 300) -> TorchvisionDetector:
    size = check_detector_args(num_classes, in_chans, input_size, minimum=64)
    mean, std = normalization(in_chans, image_mean, image_std)
    body = TrunkWithFPN(backbone, in_chans, size, fpn_strides, fpn_channels)
    if len(anchor_sizes) != len(body.strides):
        raise ModelError(f"anchor_sizes needs one size per pyramid level ({len(body.strides)}: strides "
                         f"{body.strides}), got {list(anchor_sizes)}")
    anchors = AnchorGenerator(tuple((s,) for s in anchor_sizes), (tuple(aspect_ratios),) * len(anchor_sizes))
    # RoIAlign on the finest level only: at stride 8 a 15-60 px object spans 2-8 cells, enough for 7x7 bins,
    # and torchvision's per-level assignment (made for 800-px images) would put every RoI there anyway.
    # One sample per bin (chosen when torchvision's RoIAlign kernel, whose CPU backward costs in proportion to the
    # samples, ran here; MatmulRoIAlign keeps the same numbers).
    roi_pool = MatmulRoIAlign(["0"], output_size=7, sampling_ratio=1)
    box_head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
    model = FasterRCNN(
        body, min_size=min(size), max_size=max(size), image_mean=mean, image_std=std,
        rpn_anchor_generator=anchors, box_roi_pool=roi_pool, box_head=box_head,
        box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
        rpn_batch_size_per_image=rpn_batch_size_per_image, box_batch_size_per_image=box_batch_size_per_image,
        rpn_pre_nms_top_n_train=rpn_pre_nms_top_n_train, rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
        box_score_thresh=score_threshold, box_detections_per_img=max_detections)
    return TorchvisionDetector(model, num_classes, heads=[model.rpn.head, model.roi_heads.box_predictor])


@register_model(family="faster_rcnn", source="torchvision", task="detect")
def fasterrcnn_resnet18_fpn(**kwargs) -> TorchvisionDetector:
    """Faster R-CNN + FPN (Ren et al. 2015, Lin et al. 2017) on ResNet-18, sized for 128-px images."""
    return _faster_rcnn("resnet18", **kwargs)


@register_model(family="faster_rcnn", source="torchvision", task="detect")
def fasterrcnn_resnet50_fpn(**kwargs) -> TorchvisionDetector:
    """Faster R-CNN + FPN on ResNet-50 (torchvision's reference backbone), sized for 128-px images."""
    return _faster_rcnn("resnet50", **kwargs)


@register_model(family="faster_rcnn", source="torchvision", task="detect")
def fasterrcnn_mobilenet_v3_large_fpn(**kwargs) -> TorchvisionDetector:
    """Faster R-CNN + FPN on MobileNetV3-Large, sized for 128-px images."""
    return _faster_rcnn("mobilenet_v3_large", **kwargs)
