"""A one-stage instance segmenter: the YOLO-style detector (yolo.py) plus prototype masks, YOLACT style.

Papers: Bolya, Zhou, Xiao and Lee 2019, "YOLACT: Real-time Instance Segmentation" (a small network predicts
M prototype masks for the whole image; the detection head predicts, for every box, M coefficients; an
object's mask is sigmoid(coefficients . prototypes), cropped to its box); ultralytics' YOLOv8-seg (2023, no
paper) puts the same idea on a YOLO detector and normalises the mask loss by the box's area. Everything about
boxes, objectness and classes is the YOLO class of yolo.py, imported, not copied; this module adds:

1. Prototypes. From the neck's map (stride 8: 16 x 16 cells for 128-px images), a 3x3 ConvBnAct to
   `proto_width` channels, upsampled (nearest) to the `proto_stride` (4) map and added to a 1x1 lateral of
   the trunk's stage at that stride (FPN-style: the finer stage brings the edges), a 3x3 ConvBnAct, then a
   1x1 convolution to `num_protos` (M) maps -> protos (B, M, H/4, W/4).
2. Coefficients. A 1x1 convolution beside the detection head: M numbers per cell and anchor
   -> (B, A, Hg, Wg, M), so each prediction the detector makes carries its own mask code.
3. Mask loss (training). For every positive (prediction, ground truth) pair of YOLO's assignment, the mask
   logits coefficients . protos (H/4, W/4) against the ground-truth mask averaged over each prototype cell
   (a soft target at that resolution, as YOLOv8 downsamples its targets), BCE summed over the cells whose
   centres lie inside the ground-truth box and divided by their number (YOLOv8: normalised by the box's
   area, so small objects weigh as much as large ones); mean over positives, times `mask_gain`.
4. Masks (inference). YOLO's detections (score threshold, per-class NMS, the best `max_detections`) keep
   the index of the prediction they came from; its coefficients . the image's protos give logits at H/4,
   upsampled bilinearly to the image's size, sigmoid, and zero outside the detected box: "masks" (N, H, W)
   probabilities, as Mask R-CNN's wrapper returns them (cnnkit.models.segmentation_maskrcnn).

The model follows the detection contract of cnnkit.models.detection with masks, as Mask R-CNN does:
`model(images)` -> per image {"boxes", "scores", "labels" (0-based), "masks" (N, H, W) probabilities};
`model(images, targets)` with targets' "masks" (N, H, W) 0/1 -> {"box", "objectness", "class", "mask"}.

Deviations: YOLACT has prototypes from FPN P3 at stride 4 through 3x3 convolutions of 256 channels and tanh
coefficients; here 64 channels (the scenes' objects are 15-70 px garments) and linear coefficients (as
YOLOv8). With `flip_test`, boxes and scores average the two views (as YOLO's) and masks come from the
unmirrored image (mirrored prototypes are not the prototypes of the image).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.errors import ModelError
from cnnkit.layers import ConvBnAct
from cnnkit.models.detection import batch_images
from cnnkit.models.yolo import YOLO, Assignment, mirror_raw
from cnnkit.registry import register_model


def box_crop(boxes: torch.Tensor, height: int, width: int, stride: float = 1.0) -> torch.Tensor:
    """(N, height, width) float: 1 where the cell's centre, in pixels (cell + 0.5) x stride, lies inside the box
    (N, 4) xyxy pixels, else 0."""
    x = (torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    y = (torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))  # each (N, 1, 1)
    inside_x = (x[None, None, :] >= x1) & (x[None, None, :] < x2)  # (N, 1, W)
    inside_y = (y[None, :, None] >= y1) & (y[None, :, None] < y2)  # (N, H, 1)
    return (inside_x & inside_y).to(boxes.dtype)


def masks_at(targets: Sequence[dict], size: tuple[int, int], stride: int) -> torch.Tensor:
    """Every target mask of the batch, in order, zero-padded to the batch's `size` (H, W) and averaged over
    stride x stride cells: (N, ceil(H / stride), ceil(W / stride)) float in [0, 1]."""
    height, width = (-(-size[0] // stride) * stride, -(-size[1] // stride) * stride)
    padded = [F.pad(t["masks"].float(), (0, width - t["masks"].shape[-1], 0, height - t["masks"].shape[-2]))
              for t in targets if len(t["masks"])]
    if not padded:
        return torch.zeros(0, height // stride, width // stride)
    return F.avg_pool2d(torch.cat(padded)[:, None], stride)[:, 0]  # (N, 1, H, W) -> (N, H / s, W / s)


class YOLOSeg(YOLO):
    """YOLO-style detector with YOLACT-style prototype masks (see the module docstring for the method).

    Args:
        num_classes, in_chans, input_size, backbone, grid_stride: As YOLO's.
        proto_stride: Pixels per prototype cell; the trunk needs a stage at this stride, finer than grid_stride.
        num_protos: Prototype masks M (YOLACT and YOLOv8: 32).
        proto_width: Channels of the prototype network.
        mask_gain: Weight of the mask loss beside YOLO's box, objectness and class losses.
        **yolo_args: Every other YOLO argument (anchors, neck_width, thresholds, gains, flip_test ...).
    """

    def __init__(self, num_classes: int, in_chans: int = 3, input_size: int | tuple[int, int] = 128,
                 backbone: str = "fastnet", grid_stride: int = 8, proto_stride: int = 4, num_protos: int = 32,
                 proto_width: int = 64, mask_gain: float = 1.0, **yolo_args):
        super().__init__(num_classes, in_chans, input_size, backbone=backbone, grid_stride=grid_stride, **yolo_args)
        strides = self.trunk.strides
        if proto_stride not in strides or proto_stride >= grid_stride or grid_stride % proto_stride:
            raise ModelError(f"proto_stride={proto_stride} must be a stride of one of backbone {backbone!r}'s stages "
                             f"({strides}) that divides grid_stride={grid_stride} and is smaller")
        if num_protos < 1 or proto_width < 1:
            raise ModelError(f"num_protos and proto_width must be 1 or more, got {num_protos} and {proto_width}")
        self.proto_stride, self.num_protos, self.mask_gain = proto_stride, num_protos, mask_gain
        self.proto_level = max(i for i, s in enumerate(strides) if s == proto_stride)  # the deepest at that stride
        neck_width = self.head.in_channels
        self.proto_reduce = ConvBnAct(neck_width, proto_width, 3, act_layer=nn.SiLU)
        self.proto_lateral = ConvBnAct(self.trunk.channels[self.proto_level], proto_width, 1, act_layer=nn.SiLU)
        self.proto_fuse = ConvBnAct(proto_width, proto_width, 3, act_layer=nn.SiLU)
        self.proto_out = nn.Conv2d(proto_width, num_protos, 1)
        self.coefficients = nn.Conv2d(neck_width, len(self.anchors) * num_protos, 1)

    # ------------------------------------------------------------------ steps 1-2: the network
    def segmentation_outputs(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(raw (B, A, Hg, Wg, 5 + K) as YOLO's, coefficients (B, A, Hg, Wg, M), protos (B, M, H/s, W/s))."""
        features, neck = self.features(images)
        fine = self.proto_lateral(features[self.proto_level])
        coarse = F.interpolate(self.proto_reduce(neck), size=fine.shape[-2:], mode="nearest")
        protos = self.proto_out(self.proto_fuse(fine + coarse))
        coefficients = self.coefficients(neck)  # (B, A * M, Hg, Wg)
        batch, _, rows, columns = coefficients.shape
        coefficients = coefficients.view(batch, len(self.anchors), self.num_protos, rows, columns).permute(0, 1, 3, 4, 2)
        return self.head_outputs(neck), coefficients, protos

    # ------------------------------------------------------------------ step 3: training
    def losses(self, images, targets: list[dict]) -> dict[str, torch.Tensor]:
        if any("masks" not in target for target in targets):
            raise ModelError(f"{type(self).__name__} trains on instance masks: every target needs \"masks\" (N, H, W)")
        batch, _ = batch_images(images)
        raw, coefficients, protos = (t.float() for t in self.segmentation_outputs(batch))  # losses in fp32
        match = self.assign(raw, targets)
        losses = self.loss_from_raw(raw, targets, match)
        with torch.autocast(batch.device.type, enabled=False):  # the mask logits in fp32 under bf16 autocast
            mask = self.mask_loss(coefficients, protos, targets, match, tuple(batch.shape[-2:]))
        return {**losses, "mask": self.mask_gain * mask}

    def mask_loss(self, coefficients: torch.Tensor, protos: torch.Tensor, targets: list[dict], match: Assignment,
                  size: tuple[int, int]) -> torch.Tensor:
        """Mean over positives of the box-normalised BCE of their masks at prototype resolution (step 3)."""
        if not len(match.image):
            return coefficients.sum() * 0.0 + protos.sum() * 0.0  # attached to the graph, zero
        truth = masks_at(targets, size, self.proto_stride).to(protos.device)[match.target]  # (P, Hp, Wp)
        codes = coefficients[match.image, match.anchor, match.row, match.column]  # (P, M)
        logits = torch.empty_like(truth)
        for image in match.image.unique().tolist():  # per image: (P_i, M) @ (M, Hp * Wp)
            chosen = match.image == image
            logits[chosen] = (codes[chosen] @ protos[image].flatten(1)).view(-1, *protos.shape[-2:])
        crop = box_crop(match.boxes, protos.shape[-2], protos.shape[-1], self.proto_stride)
        bce = F.binary_cross_entropy_with_logits(logits, truth, reduction="none")
        return ((bce * crop).sum(dim=(1, 2)) / crop.sum(dim=(1, 2)).clamp(min=1)).mean()

    # ------------------------------------------------------------------ step 4: inference
    @torch.no_grad()
    def detect(self, images) -> list[dict[str, torch.Tensor]]:
        batch, sizes = batch_images(images)
        raw, coefficients, protos = (t.float() for t in self.segmentation_outputs(batch))
        if self.flip_test and batch.shape[-1] % self.stride == 0:  # boxes and scores from both views (yolo.py)
            raw = (raw + mirror_raw(self.raw_outputs(batch.flip(-1)).float())) / 2
        with torch.autocast(batch.device.type, enabled=False):  # mask probabilities in fp32
            return self.assemble(self.select(raw, sizes), coefficients, protos, sizes)

    def assemble(self, detections: list[dict], coefficients: torch.Tensor, protos: torch.Tensor,
                 sizes: Sequence[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        """Each detection's mask (step 4) added to `select`'s detections, which lose their "index"."""
        results = []
        for image, (kept, (height, width)) in enumerate(zip(detections, sizes)):
            index = kept.pop("index")
            codes = coefficients[image].reshape(-1, self.num_protos)[index]  # (N, M)
            logits = (codes @ protos[image].flatten(1)).view(len(index), *protos.shape[-2:])  # (N, Hp, Wp)
            if len(index):
                logits = F.interpolate(logits[None], scale_factor=self.proto_stride, mode="bilinear",
                                       align_corners=False)[0, :, :height, :width]
            else:
                logits = logits.new_zeros(0, height, width)
            kept["masks"] = logits.sigmoid() * box_crop(kept["boxes"], height, width)
            results.append(kept)
        return results


def _yolo_seg(backbone: str, num_classes: int = 10, in_chans: int = 3, input_size: int | tuple[int, int] = 128,
              **kwargs) -> YOLOSeg:
    return YOLOSeg(num_classes, in_chans, input_size, backbone=backbone, **kwargs)


@register_model(family="yolo_seg", source="cnnkit", task="instance")
def yolo_seg_fastnet(**kwargs) -> YOLOSeg:
    """One-stage instance segmenter: yolo_fastnet plus 32 YOLACT-style prototype masks at stride 4."""
    return _yolo_seg("fastnet", **kwargs)


@register_model(family="yolo_seg", source="cnnkit", task="instance")
def yolo_seg_resnet18(**kwargs) -> YOLOSeg:
    """One-stage instance segmenter on ResNet-18: yolo_resnet18 plus prototype masks from layer1 (stride 4)."""
    return _yolo_seg("resnet18", **kwargs)
