"""The detection task: a detector (cnnkit.models.detection contract) with its own losses; COCO mAP as the metric.

A batch is a float (B, C, H, W) tensor in [0, 1] (a list of images when their sizes differ) and one
{"boxes", "labels"} dict per image; the detectors normalise images themselves with the mean and std
measured on the training images, which the checkpoint's architecture record stores.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnkit.tasks.base import Task


class DetectionTask(Task):
    """A detector (cnnkit.models.detection contract) with its own losses; COCO mAP as the metric."""

    name = "detect"
    monitor = "val_map50"

    def __init__(self, model: nn.Module, class_names: list[str]):
        self.model = model
        self.class_names = list(class_names)

    def to_device(self, images, targets, device: torch.device):
        """uint8 images -> one float (B, C, H, W) batch in [0, 1] (a list if sizes differ); targets' tensors moved."""
        images = [image.to(device, non_blocking=True) for image in images]
        if len({tuple(image.shape) for image in images}) == 1:
            images = torch.stack(images).float().div_(255)
        else:
            images = [image.float().div_(255) for image in images]
        targets = [{key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
                    for key, value in target.items()} for target in targets]
        return images, targets

    def training_step(self, model: nn.Module, images, targets) -> dict:
        losses = model(images, targets)  # {"name": weighted scalar}: the model's own loss terms
        return {"loss": sum(losses.values()), "batch_size": len(targets),
                "losses": {name: value.detach() for name, value in losses.items()}}

    @torch.no_grad()
    def evaluation_step(self, model: nn.Module, images, targets) -> dict:
        detections = model(images)
        return {"detections": [{key: value.detach().float().cpu() if key != "labels" else value.cpu()
                                for key, value in detection.items()} for detection in detections]}

    def new_meter(self):
        from cnnkit.metrics.detection import DetectionMeter

        return DetectionMeter(self.class_names)

    def update_meter(self, meter, result: dict, targets) -> None:
        meter.update(result["detections"], [{"boxes": t["boxes"].cpu(), "labels": t["labels"].cpu()} for t in targets])
