"""The segmentation task: per-pixel classification with a configurable loss; validation mIoU picks the best
checkpoint."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.losses.segmentation import SegmentationLoss
from cnnkit.metrics.segmentation import SegmentationMeter
from cnnkit.tasks.base import Task

VALUE_RANGE = "8-bit: value / 255; single-channel 16-bit: (value - min) / (max - min) per image"


class SegmentationTask(Task):
    """Per-pixel classification with a configurable loss; validation mIoU picks the best checkpoint.

    Args:
        model: Images (B, C, H, W) -> logits (B, K, H, W).
        class_names: The K class names (index 0 is usually "background").
        loss: The training loss (SegmentationLoss); validation always reports plain cross-entropy.
        ignore_index: Mask value of pixels that count for nothing.
        tta: Average the logits of each image and its mirror image in evaluation.
    """

    name = "segment"
    monitor = "val_miou"

    def __init__(self, model: nn.Module, class_names: list[str], loss: SegmentationLoss | None = None,
                 ignore_index: int = 255, tta: bool = False):
        self.model, self.class_names = model, list(class_names)
        self.loss = loss or SegmentationLoss("ce", ignore_index=ignore_index)
        self.ignore_index, self.tta = ignore_index, tta

    def training_step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict:
        logits = model(images)  # (B, K, H, W)
        return {"loss": self.loss(logits, targets), "batch_size": len(images)}

    @torch.no_grad()
    def evaluation_step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict:
        """Predicted classes (B, H, W) and the summed cross-entropy over the counted pixels."""
        logits = predict_logits(model, images, self.tta)
        loss_sum = F.cross_entropy(logits, targets, ignore_index=self.ignore_index, reduction="sum")
        return {"loss": loss_sum, "predictions": logits.argmax(dim=1)}

    def new_meter(self) -> SegmentationMeter:
        return SegmentationMeter(self.class_names, self.ignore_index)

    def update_meter(self, meter: SegmentationMeter, result: dict, targets: torch.Tensor) -> None:
        meter.update(result["predictions"], targets, result["loss"])


def predict_logits(model: nn.Module, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """float32 logits (B, K, H, W); with tta, the mean of the image's and its mirror image's."""
    logits = model(images).float()
    if tta:
        logits = (logits + model(images.flip(-1)).float().flip(-1)) / 2
    return logits
