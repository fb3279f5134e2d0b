"""R-CNN and Fast R-CNN: the two steps from "classify image regions" to Faster R-CNN, as working detectors.

The lineage (each step removes the previous one's bottleneck):

1. R-CNN (Girshick, Donahue, Darrell and Malik 2014, "Rich feature hierarchies for accurate object
   detection and semantic segmentation", CVPR): take ~2 000 region proposals per image (selective search),
   warp each region to the CNN's input size, classify it (K classes + background) and refine its box with a
   regression. One CNN forward pass *per proposal*: accurate for its time, very slow.
2. Fast R-CNN (Girshick 2015, "Fast R-CNN", ICCV): run the CNN once per image; cut each proposal's features
   out of the shared feature map with RoI pooling (a fixed 7x7 grid of max-pooled bins), then classify and
   regress with small fully connected layers, trained jointly. One forward pass per image, but the
   proposals still come from a slow, hand-made algorithm.
3. Faster R-CNN (faster_rcnn.py): a region proposal network on the same features replaces the hand-made
   proposals, so the whole detector is one network. SSD and YOLO (ssd.py, yolo.py) then drop the second,
   per-region stage: every position of a feature map classifies and regresses its default boxes directly.

Here, both modes share one proposal generator: `sliding_window_proposals`, boxes of several sizes and aspect
ratios tiled over the image at half their size apart (about 1 000 for a 128-px image, 562 for R-CNN). It stands in for
selective search (not in any maintained library): it has no idea where objects are, so the box regression
does the localisation, which makes the point of the lineage (the proposals are the weak step) clearly.
In training, the ground-truth boxes are added to the proposals (as both papers do) and a fixed number
of proposals per image is sampled: 25% positives (IoU >= 0.5 with an object, labelled with its class), the
rest background. Boxes are regressed as torchvision's (dx, dy, dw, dh) offsets from the proposal.

Deviations: R-CNN's classifier is a zoo CNN fine-tuned end to end with a softmax and a box output (the paper
trains SVMs on fixed CNN features, and a separate regressor); Fast R-CNN uses RoIAlign (Mask R-CNN's
bilinear refinement of RoI pooling; `torchvision.ops.roi_align`) and torchvision's `RoIHeads` (sampling,
losses and per-class NMS of Fast R-CNN, which Faster R-CNN reuses unchanged).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, roi_align

from cnnkit.errors import ModelError
from cnnkit.layers.roi_align import MatmulRoIAlign
from cnnkit.models.detection import (DetectionModel, batch_images, check_detector_args, float_outputs, normalization,
                                     zoo_trunk)
from cnnkit.registry import create_model, register_model

DEFAULT_WINDOW_SIZES = (16, 24, 36, 54, 80)  # pixels: a factor 1.5 apart, for 15-60 px objects in 128-px images
# R-CNN pays one CNN pass per window: a factor 1.6 apart halves the count (1 041 -> 562 windows at 128 px) and
# still gives 95% of the scenes' objects a window of IoU >= 0.5 (97% above), measured on the val split.
RCNN_WINDOW_SIZES = (20, 32, 50)


def sliding_window_proposals(height: int, width: int, sizes: Sequence[int] = DEFAULT_WINDOW_SIZES,
                             aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), step: float = 0.5) -> torch.Tensor:
    """Boxes (P, 4) xyxy tiled over a height x width image: for every size s and aspect ratio r (height / width),
    an s/sqrt(r) x s*sqrt(r) window at every position `step` x its own size apart, inside the image."""
    boxes = []
    for size in sizes:
        for ratio in aspect_ratios:
            box_width, box_height = size / ratio ** 0.5, size * ratio ** 0.5
            if box_width > width or box_height > height:
                continue
            xs = torch.arange(0, width - box_width + 1e-3, max(1.0, step * box_width))
            ys = torch.arange(0, height - box_height + 1e-3, max(1.0, step * box_height))
            y, x = torch.meshgrid(ys, xs, indexing="ij")
            corners = torch.stack([x, y, x + box_width, y + box_height], dim=-1).reshape(-1, 4)
            boxes.append(corners)
    if not boxes:
        raise ModelError(f"no proposal window of sizes {list(sizes)} fits a {height}x{width} image")
    return torch.cat(boxes)


class ProposalModel(DetectionModel):
    """What R-CNN and Fast R-CNN share: normalisation, the window proposals, and the box coder."""

    def __init__(self, num_classes: int, in_chans: int, window_sizes: Sequence[int], image_mean, image_std):
        super().__init__()
        self.num_classes, self.window_sizes = num_classes, tuple(window_sizes)
        mean, std = normalization(in_chans, image_mean, image_std)
        self.register_buffer("image_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.box_coder = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))  # Fast R-CNN's scaling of the offsets

    def proposals(self, size: tuple[int, int], device) -> torch.Tensor:
        return sliding_window_proposals(size[0], size[1], self.window_sizes).to(device)

    def normalized(self, images) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        batch, sizes = batch_images(images)
        return (batch - self.image_mean) / self.image_std, sizes


class FastRCNN(ProposalModel):
    """Fast R-CNN: one trunk pass per image, RoIAlign per proposal, two FC layers, class and box outputs.

    Args:
        num_classes: Object classes (the model adds background internally).
        in_chans, input_size: Image channels and the training images' size.
        backbone: Zoo trunk (cnnkit.models.detection.TRUNKS); its stage at `feature_stride` is the shared map.
        feature_stride: Stride of the shared feature map (8: 16x16 cells for 128-px images).
        representation_size: Width of the two fully connected layers.
        window_sizes: Proposal window sizes in pixels.
        rois_per_image: Proposals sampled per image in training (25% positives).
        score_threshold, nms_threshold, max_detections: Inference post-processing.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, input_size: int | tuple[int, int] = 128,
                 backbone: str = "fastnet", feature_stride: int = 8, representation_size: int = 256,
                 window_sizes: Sequence[int] = DEFAULT_WINDOW_SIZES, rois_per_image: int = 64,
                 image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
                 score_threshold: float = 0.01, nms_threshold: float = 0.5, max_detections: int = 100):
        super().__init__(num_classes, in_chans, window_sizes, image_mean, image_std)
        size = check_detector_args(num_classes, in_chans, input_size)
        self.trunk = zoo_trunk(backbone, in_chans, size)
        if feature_stride not in self.trunk.strides:
            raise ModelError(f"backbone={backbone!r} has stages at strides {self.trunk.strides}, not at "
                             f"feature_stride={feature_stride}")
        self.level = max(i for i, s in enumerate(self.trunk.strides) if s == feature_stride)
        channels = self.trunk.channels[self.level]
        self.roi_heads = RoIHeads(
            MatmulRoIAlign(["0"], output_size=7, sampling_ratio=1),
            TwoMLPHead(channels * 7 * 7, representation_size),
            FastRCNNPredictor(representation_size, num_classes + 1),
            fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=rois_per_image, positive_fraction=0.25,
            bbox_reg_weights=None, score_thresh=score_threshold, nms_thresh=nms_threshold,
            detections_per_img=max_detections)
        self.roi_heads.box_predictor.register_forward_hook(float_outputs)  # decode boxes in fp32 under bf16

    def _features(self, images) -> tuple[OrderedDict, list[tuple[int, int]], list[torch.Tensor]]:
        batch, sizes = self.normalized(images)
        features = OrderedDict([("0", self.trunk(batch)[self.level])])  # the shared map, (B, C, H/s, W/s)
        proposals = [self.proposals(size, batch.device) for size in sizes]
        return features, sizes, proposals

    def detect(self, images) -> list[dict[str, torch.Tensor]]:
        features, sizes, proposals = self._features(images)
        detections, _ = self.roi_heads(features, proposals, sizes)
        return [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - 1} for d in detections]

    def losses(self, images, targets: list[dict]) -> dict[str, torch.Tensor]:
        features, sizes, proposals = self._features(images)
        shifted = [{"boxes": t["boxes"].float(), "labels": t["labels"] + 1} for t in targets]
        _, losses = self.roi_heads(features, proposals, sizes, shifted)
        return losses


class RCNN(ProposalModel):
    """R-CNN: every proposal is cropped from the image, resized to `crop_size` and classified by a zoo CNN.

    The CNN has K + 1 + 4 outputs: K + 1 class logits (background first) and a class-agnostic box offset.

    Args:
        num_classes: Object classes.
        in_chans: Image channels.
        input_size: The training images' size (only checked: the classifier sees crops).
        backbone: Any registered classifier that takes `crop_size` inputs (fastnet by default).
        crop_size: Side of the square crops (R-CNN: 227 for AlexNet; 32 fits Fashion-MNIST's 28-px items).
        window_sizes: Proposal window sizes in pixels.
        rois_per_image: Proposals sampled per image in training (25% positives).
        chunk: Crops classified per forward pass at inference.
        score_threshold, nms_threshold, max_detections: Inference post-processing.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, input_size: int | tuple[int, int] = 128,
                 backbone: str = "fastnet", crop_size: int = 32, window_sizes: Sequence[int] = RCNN_WINDOW_SIZES,
                 rois_per_image: int = 32, chunk: int = 512, image_mean: Sequence[float] | None = None,
                 image_std: Sequence[float] | None = None, score_threshold: float = 0.01,
                 nms_threshold: float = 0.5, max_detections: int = 100):
        super().__init__(num_classes, in_chans, window_sizes, image_mean, image_std)
        check_detector_args(num_classes, in_chans, input_size)
        self.crop_size, self.rois_per_image, self.chunk = crop_size, rois_per_image, chunk
        self.score_threshold, self.nms_threshold, self.max_detections = score_threshold, nms_threshold, max_detections
        self.classifier = create_model(backbone, num_classes=num_classes + 1 + 4, in_chans=in_chans,
                                       input_size=crop_size)

    def _classify(self, batch: torch.Tensor, boxes: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits (R, K + 1) and box offsets (R, 4) of the regions `boxes` (one (Ri, 4) per image)."""
        crops = roi_align(batch, boxes, output_size=self.crop_size, spatial_scale=1.0, sampling_ratio=2,
                          aligned=True)  # (R, C, crop, crop): each region warped to the classifier's input
        outputs = self.classifier(crops)
        return outputs[:, : self.num_classes + 1], outputs[:, self.num_classes + 1:]

    def losses(self, images, targets: list[dict]) -> dict[str, torch.Tensor]:
        batch, sizes = self.normalized(images)
        sampled, labels, offsets = [], [], []
        for size, target in zip(sizes, targets):
            gt_boxes, gt_labels = target["boxes"].float().reshape(-1, 4), target["labels"]
            proposals = torch.cat([self.proposals(size, batch.device), gt_boxes])
            if len(gt_boxes):
                best_iou, match = box_iou(proposals, gt_boxes).max(dim=1)
                label = torch.where(best_iou >= 0.5, gt_labels[match] + 1, 0)
            else:  # an image without objects: every proposal is background
                match = label = torch.zeros(len(proposals), dtype=torch.long, device=batch.device)
            positives, negatives = (label > 0).nonzero()[:, 0], (label == 0).nonzero()[:, 0]
            count = min(len(positives), self.rois_per_image // 4)
            positives = positives[torch.randperm(len(positives), device=batch.device)[:count]]
            negatives = negatives[torch.randperm(len(negatives), device=batch.device)[: self.rois_per_image - count]]
            keep = torch.cat([positives, negatives])
            sampled.append(proposals[keep])
            labels.append(label[keep])
            matched = gt_boxes[match[keep]] if len(gt_boxes) else proposals[keep]
            offsets.append(self.box_coder.encode_single(matched, proposals[keep]))
        logits, predicted = self._classify(batch, sampled)
        labels, offsets = torch.cat(labels), torch.cat(offsets)
        positive = labels > 0
        box_loss = F.smooth_l1_loss(predicted[positive], offsets[positive], beta=1 / 9, reduction="sum")
        return {"classifier": F.cross_entropy(logits, labels), "box": box_loss / max(1, len(labels))}

    @torch.no_grad()
    def detect(self, images) -> list[dict[str, torch.Tensor]]:
        batch, sizes = self.normalized(images)
        results = []
        for image, size in zip(batch, sizes):
            proposals = self.proposals(size, batch.device)
            logits, offsets = [], []
            for start in range(0, len(proposals), self.chunk):
                chunk_logits, chunk_offsets = self._classify(image[None], [proposals[start:start + self.chunk]])
                logits.append(chunk_logits)
                offsets.append(chunk_offsets)
            scores = torch.cat(logits).float().softmax(dim=1)[:, 1:]  # (P, K): background dropped
            boxes = clip_boxes_to_image(self.box_coder.decode_single(torch.cat(offsets).float(), proposals), size)
            index, label = (scores > self.score_threshold).nonzero(as_tuple=True)
            score, box = scores[index, label], boxes[index]
            keep = batched_nms(box, score, label, self.nms_threshold)[: self.max_detections]
            results.append({"boxes": box[keep], "scores": score[keep], "labels": label[keep]})
        return results


@register_model(family="rcnn", source="cnnkit", task="detect")
def fast_rcnn_fastnet(num_classes: int = 10, in_chans: int = 3, input_size: int | tuple[int, int] = 128,
                      **kwargs) -> FastRCNN:
    """Fast R-CNN (Girshick 2015): RoIAlign over fastnet's stride-8 map for sliding-window proposals."""
    return FastRCNN(num_classes, in_chans, input_size, **kwargs)


@register_model(family="rcnn", source="cnnkit", task="detect")
def rcnn_fastnet(num_classes: int = 10, in_chans: int = 3, input_size: int | tuple[int, int] = 128,
                 **kwargs) -> RCNN:
    """R-CNN (Girshick et al. 2014): each sliding-window proposal cropped to 32x32 and classified by fastnet."""
    return RCNN(num_classes, in_chans, input_size, **kwargs)
