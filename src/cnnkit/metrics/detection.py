"""COCO-style detection and instance-mask metrics: mAP@[.5:.95], mAP@.5, mAP@.75 and per-class AP.

How COCO's AP works (the numbers every detection paper reports): predictions of one class, over all
images, are sorted by score. Going down the list, a prediction is a true positive if its IoU with a
not-yet-matched ground-truth object of its class and image reaches the threshold, else a false positive.
That gives a precision-recall curve; AP is the precision averaged at the 101 recall levels 0, 0.01, ..., 1
(precision made monotonic first). mAP@.5 averages AP over the classes at IoU 0.5 (Pascal VOC's measure);
mAP@[.5:.95] ("map") also averages over the IoU thresholds 0.5, 0.55, ..., 0.95, so it rewards tight
boxes. At most 100 predictions per image count (the highest-scoring). Classes without ground truth
are left out of the mean, as in COCO. IoU is between boxes ("bbox") or between masks ("segm").

With masks, the same predictions are also scored as a semantic map, so an instance segmenter can be compared
with the semantic segmenters (`cnnkit train --task segment`) on the same images: each image's predictions with
score >= SEMANTIC_SCORE_THRESHOLD (`cnnkit predict`'s default) are painted with their class, lowest score first
(the highest stays on top, as in the instance-id PNGs `predict` writes), the targets likewise, and
cnnkit.metrics.segmentation's pixel confusion matrix gives semantic_miou (background included, as the segment
task counts it) and semantic_pixel_accuracy.

The counting is pycocotools' COCOeval, the reference implementation, fed in memory; this module only
converts cnnkit's tensors (xyxy boxes, 0-based labels, (N, H, W) masks) to COCO's form (xywh boxes,
category ids 1..K, RLE masks) and silences pycocotools' printing.
"""

from __future__ import annotations

import contextlib
import io

import numpy
import torch

__all__ = ["SEMANTIC_SCORE_THRESHOLD", "DetectionMeter", "coco_ap_table", "paint_semantic"]

_IOU_TYPES = ("bbox", "segm")
SEMANTIC_SCORE_THRESHOLD = 0.25  # predictions painted into the semantic map: those `cnnkit predict` shows


def _numpy(value) -> numpy.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else numpy.asarray(value)


def _xywh(boxes) -> numpy.ndarray:
    boxes = _numpy(boxes).astype(numpy.float64).reshape(-1, 4)
    return numpy.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _rles(masks) -> list[dict]:
    """(N, H, W) or (N, 1, H, W) masks (0/1, bool, or probabilities thresholded at 0.5) -> COCO RLEs."""
    from pycocotools import mask as mask_utils

    masks = _numpy(masks)
    if masks.ndim == 4:
        masks = masks[:, 0]
    if masks.dtype.kind == "f":
        masks = masks >= 0.5
    # encode wants (H, W, N) uint8 in Fortran order.
    return mask_utils.encode(numpy.asfortranarray(masks.astype(numpy.uint8).transpose(1, 2, 0))) if len(masks) else []


def paint_semantic(rles: list[dict], labels, scores, height: int, width: int) -> numpy.ndarray:
    """int64 (H, W): 0 background, label + 1 under each mask; masks painted in ascending score (highest on top)."""
    from pycocotools import mask as mask_utils

    painted = numpy.zeros((height, width), dtype=numpy.int64)
    if not len(rles):
        return painted
    masks = mask_utils.decode(list(rles))  # (H, W, N)
    for index in numpy.argsort(numpy.asarray(scores), kind="stable"):
        painted[masks[:, :, index].astype(bool)] = int(labels[index]) + 1
    return painted


class DetectionMeter:
    """Accumulates predictions and targets per image; `compute` runs COCOeval on all of them.

    Args:
        class_names: Class names; labels are 0-based indices into them.
        iou_type: "bbox", "segm" (masks), or both as ("bbox", "segm"). Segm metrics are named mask_*.

    Under DDP, `compute` gathers every process's images first (a collective: call it on every rank).
    `tensors()` is empty because predictions cannot be summed.
    """

    def __init__(self, class_names: list[str], iou_type: str | tuple[str, ...] = "bbox"):
        self.class_names = list(class_names)
        self.iou_types = (iou_type,) if isinstance(iou_type, str) else tuple(iou_type)
        unknown = [name for name in self.iou_types if name not in _IOU_TYPES]
        if unknown or not self.iou_types:
            raise ValueError(f"iou_type must be 'bbox', 'segm' or both, got {iou_type!r}")
        self.images: list[dict] = []  # per image: {"height", "width", "targets": [...], "predictions": [...]}
        self._evaluations: dict = {}  # iou_type -> the last COCOeval of these images (precision_recall reuses it)

    def update(self, predictions: list[dict], targets: list[dict]) -> None:
        """Adds a batch.

        Args:
            predictions: Per image {"boxes": (N, 4) xyxy, "scores": (N,), "labels": (N,) 0-based} and, for
                segm, "masks" (N, H, W) or (N, 1, H, W), 0/1 or probabilities (thresholded at 0.5).
            targets: Per image {"boxes", "labels"} and, for segm, "masks"; optional "iscrowd" (N,)
                (crowd regions: predictions on them are neither true nor false positives).
        """
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
        segm = "segm" in self.iou_types
        for prediction, target in zip(predictions, targets):
            height = width = None
            if segm:
                height, width = (int(size) for size in _numpy(target["masks"]).shape[-2:])
            record = {"height": height, "width": width}
            labels = _numpy(target["labels"]).astype(numpy.int64).reshape(-1)
            crowd = _numpy(target.get("iscrowd", numpy.zeros(len(labels)))).astype(numpy.int64).reshape(-1)
            record["targets"] = {"boxes": _xywh(target["boxes"]), "labels": labels, "iscrowd": crowd,
                                 "masks": _rles(target["masks"]) if segm else None}
            record["predictions"] = {"boxes": _xywh(prediction["boxes"]),
                                     "scores": _numpy(prediction["scores"]).astype(numpy.float64).reshape(-1),
                                     "labels": _numpy(prediction["labels"]).astype(numpy.int64).reshape(-1),
                                     "masks": _rles(prediction["masks"]) if segm else None}
            self.images.append(record)
        self._evaluations.clear()

    def tensors(self) -> list[torch.Tensor]:
        return []

    @property
    def count(self) -> int:
        return len(self.images)

    def _gathered(self) -> list[dict]:
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, self.images)
            return [image for part in parts for image in part]
        return self.images

    def coco_dicts(self, iou_type: str = "bbox") -> tuple[dict, list[dict]]:
        """The accumulated data in COCO form: (ground-truth dataset dict, list of result dicts).

        Image ids are 1..count in the order added; category ids are label + 1. This is exactly what a
        COCO results JSON of the same predictions holds, so pycocotools can be run on it directly.
        """
        images, annotations, results = [], [], []
        for image_id, record in enumerate(self._gathered(), start=1):
            entry = {"id": image_id}
            if record["height"] is not None:
                entry.update(height=record["height"], width=record["width"])
            images.append(entry)
            target = record["targets"]
            for index, (box, label) in enumerate(zip(target["boxes"].tolist(), target["labels"].tolist())):
                annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1, "bbox": box,
                              "area": box[2] * box[3], "iscrowd": int(target["iscrowd"][index])}
                if iou_type == "segm":
                    from pycocotools import mask as mask_utils

                    annotation["segmentation"] = target["masks"][index]
                    annotation["area"] = float(mask_utils.area(target["masks"][index]))
                annotations.append(annotation)
            prediction = record["predictions"]
            for index, (box, score, label) in enumerate(zip(prediction["boxes"].tolist(), prediction["scores"].tolist(),
                                                            prediction["labels"].tolist())):
                result = {"image_id": image_id, "category_id": label + 1, "score": score}
                if iou_type == "segm":
                    result["segmentation"] = prediction["masks"][index]
                else:
                    result["bbox"] = box
                results.append(result)
        categories = [{"id": k + 1, "name": name} for k, name in enumerate(self.class_names)]
        return {"images": images, "categories": categories, "annotations": annotations}, results

    def _evaluate(self, iou_type: str):
        """COCOeval after accumulate and summarize (quietly), or None when nothing was added."""
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        dataset, results = self.coco_dicts(iou_type)
        if not dataset["images"]:
            return None
        with contextlib.redirect_stdout(io.StringIO()):
            ground_truth = COCO()
            ground_truth.dataset = dataset
            ground_truth.createIndex()
            if results:
                detections = ground_truth.loadRes(results)
            else:  # loadRes cannot take an empty list
                detections = COCO()
                detections.dataset = {"images": dataset["images"], "categories": dataset["categories"], "annotations": []}
                detections.createIndex()
            evaluation = COCOeval(ground_truth, detections, iouType=iou_type)
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        self._evaluations[iou_type] = evaluation
        return evaluation

    def compute(self, per_class: bool = False) -> dict:
        """map, map50, map75, mar100 (recall at 100 detections) for boxes; mask_map ... for masks.

        With masks also semantic_miou and semantic_pixel_accuracy (the module docstring). With per_class,
        "per_class": {class name: {"ap", "ap50"} (and "mask_ap", "mask_ap50", "sem_iou")}, None
        for a class without ground truth. Overall values are 0.0 when no image has ground truth.
        """
        result: dict = {"count": self.count}
        per_class_values: dict = {name: {} for name in self.class_names}
        for iou_type in self.iou_types:
            prefix = "mask_" if iou_type == "segm" else ""
            evaluation = self._evaluate(iou_type)
            stats = evaluation.stats if evaluation is not None else numpy.full(12, -1.0)
            for key, index in (("map", 0), ("map50", 1), ("map75", 2), ("mar100", 8)):
                result[prefix + key] = max(float(stats[index]), 0.0)
            if per_class:
                # precision: (IoU thresholds T, recall levels R, classes K, area ranges A, max detections M);
                # -1 marks "no ground truth". Area range 0 is "all", max detections -1 is 100.
                precision = evaluation.eval["precision"] if evaluation is not None else None
                for k, name in enumerate(self.class_names):
                    values = precision[:, :, k, 0, -1] if precision is not None else numpy.full((1, 1), -1.0)
                    present = values[values > -1]
                    at_50 = values[0][values[0] > -1]
                    per_class_values[name][prefix + "ap"] = float(present.mean()) if present.size else None
                    per_class_values[name][prefix + "ap50"] = float(at_50.mean()) if at_50.size else None
        if "segm" in self.iou_types:
            semantic = self._semantic()
            result["semantic_miou"] = semantic["miou"]
            result["semantic_pixel_accuracy"] = semantic["pixel_accuracy"]
            if per_class:
                for name, values in list(semantic["per_class"].items())[1:]:
                    per_class_values[name]["sem_iou"] = values["iou"]
                result["semantic_background_iou"] = next(iter(semantic["per_class"].values()))["iou"]
        if per_class:
            result["per_class"] = per_class_values
        return result

    def _semantic(self) -> dict:
        """The masks scored as semantic maps (see the module docstring): SegmentationMeter's compute(per_class)."""
        from cnnkit.metrics.segmentation import SegmentationMeter

        background = "background" if "background" not in self.class_names else "(background)"
        meter = SegmentationMeter([background] + self.class_names)
        for record in self._gathered():
            height, width = record["height"], record["width"]
            target, prediction = record["targets"], record["predictions"]
            kept = numpy.flatnonzero(prediction["scores"] >= SEMANTIC_SCORE_THRESHOLD)
            predicted = paint_semantic([prediction["masks"][i] for i in kept], prediction["labels"][kept],
                                       prediction["scores"][kept], height, width)
            truth = paint_semantic(target["masks"], target["labels"], numpy.zeros(len(target["labels"])), height, width)
            meter.update(torch.from_numpy(predicted)[None], torch.from_numpy(truth)[None])
        return meter.compute(per_class=True)

    def precision_recall(self, iou_type: str = "bbox", iou_threshold: float = 0.5) -> dict:
        """Per class, its precision-recall curve as COCOeval measured it: (recall levels (101,), precision (101,)),
        at IoU `iou_threshold` (one of 0.5, 0.55, ..., 0.95), all areas, 100 detections per image; None for a
        class without ground truth. Precision is 0 past the highest recall reached. Reuses `compute`'s evaluation.
        """
        if iou_type not in self.iou_types:
            raise ValueError(f"iou_type {iou_type!r} was not measured (this meter has {', '.join(self.iou_types)})")
        evaluation = self._evaluations.get(iou_type) or self._evaluate(iou_type)
        if evaluation is None:
            return {name: None for name in self.class_names}
        thresholds = evaluation.params.iouThrs
        level = int(numpy.abs(thresholds - iou_threshold).argmin())
        if abs(thresholds[level] - iou_threshold) > 1e-6:
            raise ValueError(f"iou_threshold must be one of {', '.join(f'{t:.2f}' for t in thresholds)}")
        recall = numpy.asarray(evaluation.params.recThrs, dtype=numpy.float64)
        # precision: (IoU thresholds T, recall levels R, classes K, area ranges A, max detections M); -1: no ground truth
        precision = evaluation.eval["precision"][level, :, :, 0, -1]
        return {name: None if (precision[:, k] < 0).all() else (recall, numpy.clip(precision[:, k], 0.0, 1.0))
                for k, name in enumerate(self.class_names)}


def coco_ap_table(result: dict) -> str:
    """The per-class part of `DetectionMeter.compute(per_class=True)` as aligned text."""
    rows = result["per_class"]
    keys = list(next(iter(rows.values())).keys()) if rows else []
    width = max([len("class")] + [len(name) for name in rows])
    lines = ["class".ljust(width) + "".join(f"  {key:>9}" for key in keys)]
    for name, values in rows.items():
        lines.append(name.ljust(width) + "".join(
            f"  {'-':>9}" if values[key] is None else f"  {values[key]:9.4f}" for key in keys))
    return "\n".join(lines)
