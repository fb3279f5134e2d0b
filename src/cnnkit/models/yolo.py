"""A YOLO-style single-pass detector, written here: grid cells predict boxes, objectness and classes at once.

Papers: Redmon, Divvala, Girshick and Farhadi 2016, "You Only Look Once: Unified, Real-Time Object Detection"
(the idea: divide the image into an S x S grid; the cell that holds an object's centre predicts it, box and
class, in one forward pass); Redmon and Farhadi 2017, "YOLO9000" (anchor boxes: each cell predicts offsets
from A prior shapes) and 2018, "YOLOv3" (independent sigmoid/BCE objectness and class scores). This module
follows those, with three choices from ultralytics' YOLOv5 (2020, no paper) that make training converge
in far fewer steps, and GIoU (Rezatofighi et al. 2019, "Generalized Intersection over Union") as box loss.
No permissively licensed, well-kept library provides a YOLO, hence our own; the box operations (GIoU, NMS,
box conversions) are torchvision's.

How it works, in the order of the code below:

1. Features. A zoo trunk (fastnet by default) turns the (B, C, H, W) image into a map at the grid stride
   s (8: a 128-px image gives 16 x 16 cells). Deeper trunk maps (stride 2s, 4s), where there are any, are
   upsampled and added in (a one-level feature pyramid), and a small neck of 3x3 convolutions widens the
   receptive field so each cell sees whole objects.
2. Head. A 1x1 convolution gives every cell, for each of its A anchors (prior box shapes in pixels),
   5 + K numbers: tx, ty, tw, th, objectness and K class logits -> raw (B, A, Hg, Wg, 5 + K).
3. Decoding a box (YOLOv5's bounded form; no exp() to blow up early in training):
       centre = (cell + 2 sigmoid(txy) - 0.5) * s      the centre may sit up to half a cell outside its cell
       size   = anchor * (2 sigmoid(twh))^2            between 0 and 4x the anchor's shape
4. Assigning targets (training). A ground-truth box is predicted by the cell holding its centre and by the
   two neighbouring cells nearest to that centre (YOLOv5: three times the positives, faster learning), with
   every anchor whose shape is within a factor `anchor_ratio` (4) of the box's in width and height.
5. Loss = box_gain x mean(1 - GIoU) over positives + obj_gain x BCE(objectness) over every cell and anchor,
   whose target is the (detached, clamped) GIoU of the prediction for positives and 0 elsewhere, so
   confidence tracks localisation quality + cls_gain x BCE(class logits, one-hot) over positives.
6. Detections (inference): score = sigmoid(objectness) x sigmoid(class logit) for every (box, class) pair,
   pairs above `score_threshold`, then non-maximum suppression per class (torchvision's batched_nms) and
   the `max_detections` best. A box may be reported under two classes (with its two scores): that costs
   nothing in precision at the right class and recovers recall when the classes are confused.
   With `flip_test`, the mirrored image goes through the network too and the two head outputs are averaged
   cell by cell (`mirror_raw`) before decoding: measured +0.9 points of mAP@.5 for twice the inference cost.

Deviations from the papers: one output scale (the scenes' objects span about 15-70 px, which anchors at
stride 8 cover) instead of YOLOv3's three; trunks from cnnkit's zoo instead of Darknet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, generalized_box_iou_loss

from cnnkit.errors import ModelError
from cnnkit.layers import ConvBnAct
from cnnkit.models.detection import DetectionModel, batch_images, check_detector_args, normalization, zoo_trunk
from cnnkit.registry import register_model

# Anchor shapes (width, height) in pixels for 128-px scenes: small, medium and large squares, plus tall and
# wide shapes for trousers and footwear. With anchor_ratio 4, every box from 4 to 200 px fits some anchor.
DEFAULT_ANCHORS = ((16, 16), (28, 28), (44, 44), (24, 40), (40, 24))


@dataclass
class Assignment:
    """Which predictions learn which ground-truth boxes: one entry per (box, cell, anchor) positive pair.

    Attributes:
        image, anchor, row, column: Index of the prediction in raw (B, A, Hg, Wg, 5 + K), each (P,) int64.
        boxes: (P, 4) the ground-truth box, xyxy pixels.
        labels: (P,) its 0-based class.
        target: (P,) the box's position among the batch's boxes (the images' targets concatenated in order),
            for whatever else a target carries per box (instance masks).
    """

    image: torch.Tensor
    anchor: torch.Tensor
    row: torch.Tensor
    column: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor


def decode_boxes(raw_box: torch.Tensor, cells: torch.Tensor, anchors: torch.Tensor, stride: int) -> torch.Tensor:
    """Boxes (..., 4) xyxy in pixels from raw (tx, ty, tw, th) (..., 4), each prediction's cell (..., 2) as
    (column, row) and its anchor (..., 2) as (width, height) in pixels (step 3 of the module docstring)."""
    centre = (cells + raw_box[..., :2].sigmoid() * 2 - 0.5) * stride
    size = anchors * (raw_box[..., 2:4].sigmoid() * 2) ** 2
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def mirror_raw(raw: torch.Tensor) -> torch.Tensor:
    """Head outputs (B, A, Hg, Wg, 5 + K) of a mirrored image, as those of the image itself would read.

    The mirrored image's cell (row, Wg - 1 - column) sees what cell (row, column) sees. Mirroring a box keeps
    its size and turns its x offset within the cell, 2 sigmoid(tx) - 0.5, into 1 - that, which is tx -> -tx
    (sigmoid(-t) = 1 - sigmoid(t)). The anchors' shapes are their own mirror images, so nothing else changes.
    """
    mirrored = raw.flip(3)
    return torch.cat([-mirrored[..., :1], mirrored[..., 1:]], dim=-1)


def assign_targets(targets: Sequence[dict], grid_size: tuple[int, int], anchors: torch.Tensor, stride: int,
                   anchor_ratio: float = 4.0) -> Assignment:
    """Positive (prediction, ground truth) pairs for one batch (step 4 of the module docstring).

    Args:
        targets: Per image {"boxes": (N, 4) xyxy pixels, "labels": (N,)}.
        grid_size: (rows, columns) of the grid.
        anchors: (A, 2) anchor widths and heights in pixels.
        stride: Pixels per grid cell.
        anchor_ratio: An anchor learns a box when their widths and heights differ by less than this factor.
    """
    rows, columns = grid_size
    device = anchors.device
    boxes = torch.cat([t["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4) for t in targets])
    labels = torch.cat([t["labels"].to(device).reshape(-1) for t in targets]).long()
    image = torch.cat([torch.full((len(t["boxes"]),), i, dtype=torch.long, device=device)
                       for i, t in enumerate(targets)])
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 / stride  # (N, 2) in cells, (x, y)
    size = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6)  # (N, 2) pixels

    # Which anchors fit which boxes: (A, N), true where width and height ratios are both below anchor_ratio.
    ratio = size[None] / anchors[:, None]  # (A, N, 2)
    fits = torch.max(ratio, 1 / ratio).amax(dim=2) < anchor_ratio
    anchor_index, box_index = fits.nonzero(as_tuple=True)

    # The centre's cell plus its two nearest neighbours: left or right, up or down, by which half of the
    # cell the centre lies in (YOLOv5). Offsets in (column, row).
    cell_centre = centre[box_index]  # (M, 2)
    fraction = cell_centre % 1
    offsets = [torch.zeros_like(cell_centre)]
    candidates = [torch.ones(len(cell_centre), dtype=torch.bool, device=device)]
    for axis, limit in ((0, columns), (1, rows)):
        step = torch.zeros_like(cell_centre)
        step[:, axis] = torch.where(fraction[:, axis] < 0.5, -1.0, 1.0)
        neighbour = (cell_centre[:, axis] + step[:, axis]).floor()
        offsets.append(step)
        candidates.append((neighbour >= 0) & (neighbour < limit) & (fraction[:, axis] != 0.5))
    cell = torch.cat([(cell_centre + o).floor() for o in offsets])  # (3M, 2)
    keep = torch.cat(candidates)
    anchor_index, box_index = anchor_index.repeat(3)[keep], box_index.repeat(3)[keep]
    cell = cell[keep].long()
    column, row = cell[:, 0].clamp(0, columns - 1), cell[:, 1].clamp(0, rows - 1)
    return Assignment(image[box_index], anchor_index, row, column, boxes[box_index], labels[box_index], box_index)


class YOLO(DetectionModel):
    """Single-scale YOLO-style detector on a zoo trunk (see the module docstring for the method).

    Args:
        num_classes: Object classes K (no background class: objectness plays that role).
        in_chans: Image channels.
        input_size: The training images' (height, width); used to measure the trunk, any size works later.
        backbone: Zoo trunk, one of cnnkit.models.detection.TRUNKS.
        grid_stride: Pixels per grid cell; the trunk must have a stage at exactly this stride.
        anchors: Anchor (width, height) pairs in pixels.
        neck_width, neck_depth: Channels and number of 3x3 ConvBnAct layers between trunk and head.
        image_mean, image_std: Per-channel normalisation of [0, 1] images.
        score_threshold: Lowest score kept at inference (0.001: low, so mAP sees the whole ranking).
        nms_threshold: IoU above which a lower-scored box of the same class is suppressed.
        max_detections: Detections kept per image.
        anchor_ratio: Width/height factor within which an anchor learns a box.
        box_gain, obj_gain, cls_gain: Weights of the three loss terms.
        flip_test: At inference, also run the mirrored image and average the two head outputs (see `detect`).
    """

    def __init__(self, num_classes: int, in_chans: int = 3, input_size: int | tuple[int, int] = 128,
                 backbone: str = "fastnet", grid_stride: int = 8,
                 anchors: Sequence[Sequence[float]] = DEFAULT_ANCHORS, neck_width: int = 128, neck_depth: int = 2,
                 image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
                 score_threshold: float = 0.001, nms_threshold: float = 0.5, max_detections: int = 100,
                 anchor_ratio: float = 4.0, box_gain: float = 1.0, obj_gain: float = 3.0, cls_gain: float = 1.0,
                 flip_test: bool = False):
        super().__init__()
        size = check_detector_args(num_classes, in_chans, input_size)
        anchors = torch.tensor(anchors, dtype=torch.float32)
        if anchors.dim() != 2 or anchors.shape[1] != 2 or not (anchors > 0).all():
            raise ModelError(f"anchors must be (width, height) pairs of positive pixel sizes, got {anchors.tolist()}")
        self.num_classes, self.stride = num_classes, grid_stride
        self.score_threshold, self.nms_threshold, self.max_detections = score_threshold, nms_threshold, max_detections
        self.anchor_ratio, self.gains, self.flip_test = anchor_ratio, (box_gain, obj_gain, cls_gain), flip_test
        mean, std = normalization(in_chans, image_mean, image_std)
        self.register_buffer("image_mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("anchors", anchors, persistent=False)  # (A, 2) pixels

        self.trunk = zoo_trunk(backbone, in_chans, size)
        # The stage at the grid stride and every deeper one feed the head (deeper ones upsampled and added).
        self.levels = [i for i, s in enumerate(self.trunk.strides) if s >= grid_stride]
        if not self.levels or self.trunk.strides[self.levels[0]] != grid_stride:
            raise ModelError(f"backbone={backbone!r} has stages at strides {self.trunk.strides} for "
                             f"{size[0]}x{size[1]} images, none at grid_stride={grid_stride}; pick one of those")
        self.lateral = nn.ModuleList(ConvBnAct(self.trunk.channels[i], neck_width, 1, act_layer=nn.SiLU)
                                     for i in self.levels)
        self.neck = nn.Sequential(*(ConvBnAct(neck_width, neck_width, 3, act_layer=nn.SiLU)
                                    for _ in range(neck_depth)))
        self.head = nn.Conv2d(neck_width, len(anchors) * (5 + num_classes), 1)
        self._init_head_bias(size)

    def _init_head_bias(self, size: tuple[int, int]) -> None:
        """Start objectness at about 5 objects per image and classes at 1/K (as YOLOv5 and RetinaNet do), so
        the first steps are not spent unlearning the 50% every logit starts with."""
        cells = len(self.anchors) * (size[0] // self.stride) * (size[1] // self.stride)
        bias = self.head.bias.detach().view(len(self.anchors), 5 + self.num_classes)
        objectness = min(0.5, 5 / cells)
        bias[:, 4] = torch.log(torch.tensor(objectness / (1 - objectness)))
        bias[:, 5:] = torch.log(torch.tensor(1 / max(self.num_classes - 0.99, 1.0)))

    # ------------------------------------------------------------------ steps 1-2: the network
    def raw_outputs(self, images: torch.Tensor) -> torch.Tensor:
        """Head outputs (B, A, Hg, Wg, 5 + K): tx, ty, tw, th, objectness logit, class logits."""
        return self.head_outputs(self.features(images)[1])

    def features(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(every trunk stage's output, the neck's (B, neck_width, Hg, Wg) map the head reads)."""
        x = (images - self.image_mean) / self.image_std
        features = self.trunk(x)
        merged = None
        for lateral, index in zip(reversed(self.lateral), reversed(self.levels)):  # deepest first
            level = lateral(features[index])
            merged = level if merged is None else level + F.interpolate(merged, size=level.shape[-2:], mode="nearest")
        return features, self.neck(merged)

    def head_outputs(self, neck: torch.Tensor) -> torch.Tensor:
        """Head outputs (B, A, Hg, Wg, 5 + K) from the neck's map (B, neck_width, Hg, Wg)."""
        out = self.head(neck)  # (B, A * (5 + K), Hg, Wg)
        batch, _, rows, columns = out.shape
        return out.view(batch, len(self.anchors), 5 + self.num_classes, rows, columns).permute(0, 1, 3, 4, 2)

    def _cells(self, rows: int, columns: int, device) -> torch.Tensor:
        row, column = torch.meshgrid(torch.arange(rows, device=device), torch.arange(columns, device=device),
                                     indexing="ij")
        return torch.stack([column, row], dim=-1).float()  # (Hg, Wg, 2) as (column, row)

    # ------------------------------------------------------------------ steps 4-5: training
    def losses(self, images, targets: list[dict]) -> dict[str, torch.Tensor]:
        batch, _ = batch_images(images)
        raw = self.raw_outputs(batch).float()  # the loss in fp32 also under bf16 autocast
        return self.loss_from_raw(raw, targets)

    def assign(self, raw: torch.Tensor, targets: list[dict]) -> Assignment:
        """The positive (prediction, ground truth) pairs of a batch whose head outputs are `raw`."""
        return assign_targets(targets, tuple(raw.shape[2:4]), self.anchors, self.stride, self.anchor_ratio)

    def loss_from_raw(self, raw: torch.Tensor, targets: list[dict],
                      match: Assignment | None = None) -> dict[str, torch.Tensor]:
        """The three loss terms (already weighted) for head outputs `raw` (B, A, Hg, Wg, 5 + K); `match` is
        `self.assign(raw, targets)`, computed here when not given."""
        box_gain, obj_gain, cls_gain = self.gains
        match = self.assign(raw, targets) if match is None else match
        objectness_target = torch.zeros(raw.shape[:4], device=raw.device)
        box_loss = cls_loss = raw.sum() * 0.0  # zero, but attached to the graph, for images without objects
        if len(match.image):
            predicted = raw[match.image, match.anchor, match.row, match.column]  # (P, 5 + K)
            cells = torch.stack([match.column, match.row], dim=1).float()
            boxes = decode_boxes(predicted[:, :4], cells, self.anchors[match.anchor], self.stride)
            giou_loss = generalized_box_iou_loss(boxes, match.boxes)  # (P,): 1 - GIoU, in [0, 2]
            box_loss = giou_loss.mean()
            objectness_target[match.image, match.anchor, match.row, match.column] = (1 - giou_loss.detach()).clamp(0, 1)
            class_target = F.one_hot(match.labels, self.num_classes).float()
            cls_loss = F.binary_cross_entropy_with_logits(predicted[:, 5:], class_target)
        obj_loss = F.binary_cross_entropy_with_logits(raw[..., 4], objectness_target)
        return {"box": box_gain * box_loss, "objectness": obj_gain * obj_loss, "class": cls_gain * cls_loss}

    # ------------------------------------------------------------------ step 6: inference
    @torch.no_grad()
    def detect(self, images) -> list[dict[str, torch.Tensor]]:
        batch, sizes = batch_images(images)
        raw = self.raw_outputs(batch).float()
        if self.flip_test and batch.shape[-1] % self.stride == 0:
            # Test-time flip: average the logits of two views of every cell (steadier class scores).
            raw = (raw + mirror_raw(self.raw_outputs(batch.flip(-1)).float())) / 2
        return self.decode(raw, sizes)

    def decode(self, raw: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        """Detections from head outputs `raw` (B, A, Hg, Wg, 5 + K) for images of `sizes` (height, width)."""
        return [{key: value for key, value in kept.items() if key != "index"} for kept in self.select(raw, sizes)]

    def select(self, raw: torch.Tensor, sizes: Sequence[tuple[int, int]]) -> list[dict[str, torch.Tensor]]:
        """`decode`'s detections, each also with "index": its prediction's position in raw[i].reshape(-1, 5 + K)
        (anchor-major, then row, then column), for whatever else the network predicts per prediction."""
        batch, anchors, rows, columns = raw.shape[:4]
        cells = self._cells(rows, columns, raw.device)
        boxes = decode_boxes(raw[..., :4], cells, self.anchors.view(anchors, 1, 1, 2), self.stride)
        scores = raw[..., 4:5].sigmoid() * raw[..., 5:].sigmoid()  # (B, A, Hg, Wg, K)
        boxes, scores = boxes.reshape(batch, -1, 4), scores.reshape(batch, -1, self.num_classes)
        results = []
        for image_boxes, image_scores, size in zip(boxes, scores, sizes):
            index, label = (image_scores > self.score_threshold).nonzero(as_tuple=True)
            score = image_scores[index, label]
            if len(score) > 10 * self.max_detections:  # NMS cost grows with the square of the candidates
                score, top = score.topk(10 * self.max_detections)
                index, label = index[top], label[top]
            box = clip_boxes_to_image(image_boxes[index], size)
            keep = batched_nms(box, score, label, self.nms_threshold)[: self.max_detections]
            results.append({"boxes": box[keep], "scores": score[keep], "labels": label[keep], "index": index[keep]})
        return results


def best_anchor_iou(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """For each box (N, 4), the best IoU of its shape with an anchor's (both centred): how well anchors fit."""
    size = boxes[:, 2:] - boxes[:, :2]
    centred = lambda s: torch.cat([-s / 2, s / 2], dim=1)  # noqa: E731
    return box_iou(centred(size), centred(anchors)).amax(dim=1)


def _yolo(backbone: str, num_classes: int = 10, in_chans: int = 3, input_size: int | tuple[int, int] = 128,
          **kwargs) -> YOLO:
    return YOLO(num_classes, in_chans, input_size, backbone=backbone, **kwargs)


@register_model(family="yolo", source="cnnkit", task="detect")
def yolo_fastnet(**kwargs) -> YOLO:
    """YOLO-style detector on the fastnet trunk: a 16x16 grid for 128-px images, 5 anchors per cell."""
    return _yolo("fastnet", **kwargs)


@register_model(family="yolo", source="cnnkit", task="detect")
def yolo_fastnet_wide(**kwargs) -> YOLO:
    """YOLO-style detector on the fastnet_wide trunk (twice the channels): stride-8 grid, 5 anchors per cell."""
    return _yolo("fastnet_wide", **kwargs)


@register_model(family="yolo", source="cnnkit", task="detect")
def yolo_resnet18(**kwargs) -> YOLO:
    """YOLO-style detector on ResNet-18: stride-8 grid fed by layer2 plus upsampled layer3 and layer4."""
    return _yolo("resnet18", **kwargs)
