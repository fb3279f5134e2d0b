"""The instance segmentation task: models under the detection contract plus "masks" (Mask R-CNN, the YOLO-style
one-stage segmenter); COCO box and mask mAP as the metrics, the best checkpoint by val_mask_map50."""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnkit.errors import DataError
from cnnkit.tasks.detection import DetectionTask, read_detection_data

MASK_THRESHOLD = 0.5  # probability above which a pixel belongs to the predicted object (the paper's)


class InstanceTask(DetectionTask):
    """Instance segmenters (detection contract plus "masks"); COCO box and mask mAP as metrics."""

    name = "instance"
    monitor = "val_mask_map50"

    @torch.no_grad()
    def evaluation_step(self, model: nn.Module, images, targets) -> dict:
        detections = []
        for detection in model(images):
            kept = {key: value.detach().float().cpu() if key in ("boxes", "scores") else value.cpu()
                    for key, value in detection.items() if key != "masks"}
            kept["masks"] = (detection["masks"] >= MASK_THRESHOLD).to(torch.uint8).cpu()  # (N, H, W)
            detections.append(kept)
        return {"detections": detections}

    def new_meter(self):
        from cnnkit.metrics.detection import DetectionMeter

        return DetectionMeter(self.class_names, iou_type=("bbox", "segm"))

    def update_meter(self, meter, result: dict, targets) -> None:
        meter.update(result["detections"], [{"boxes": t["boxes"].cpu(), "labels": t["labels"].cpu(),
                                             "masks": t["masks"].cpu()} for t in targets])


def read_instance_data(config, verbose: bool = True, splits: tuple[str, ...] = ("train", "val", "test")):
    """Detection's validated splits; every image must come with instance masks."""
    data = read_detection_data(config, verbose=verbose, splits=splits)
    for split in ("train", "val", "test"):
        annotations = getattr(data, split)
        if annotations is not None and annotations.images and not all(i.has_masks for i in annotations.images):
            missing = next(i.file for i in annotations.images if not i.has_masks)
            raise DataError(f"{missing} has no instance masks ({split} split of {config.data}); --task instance needs "
                            "COCO segmentations (polygons or RLE) or instance-id PNGs (SPLIT/instances/ in the scenes "
                            "layout). For boxes only, use --task detect")
    return data
