"""Semantic segmentation metrics from one pixel confusion matrix.

Every pixel whose target is not `ignore_index` adds one count at (true class, predicted class) of a
(K, K) matrix. Everything else derives from it, so distributed evaluation only sums two tensors:

    IoU_k  = TP_k / (TP_k + FP_k + FN_k)      intersection over union (Jaccard) of class k's pixels
    Dice_k = 2 TP_k / (2 TP_k + FP_k + FN_k)  the F1 score of class k's pixels (= 2 IoU / (1 + IoU))
    mIoU   = mean of IoU_k over the classes present (TP + FP + FN > 0; background included, as in VOC)
    pixel accuracy = sum_k TP_k / all counted pixels

A class that appears in neither the targets nor the predictions has no IoU (0/0) and is left out of
the means, the convention of the Pascal VOC and Cityscapes evaluators and of mmsegmentation.
Written here (a few tensor lines) because torchmetrics is not a dependency.
"""

from __future__ import annotations

import torch

from cnnkit.data.segmentation import IGNORE_INDEX
from cnnkit.metrics.classification import count_pairs, follow_device


class SegmentationMeter:
    """Accumulates a pixel confusion matrix (rows: true class, columns: predicted) and a summed loss.

    Args:
        class_names: The K class names, in index order.
        ignore_index: Target value of pixels that are not counted.
    """

    def __init__(self, class_names: list[str], ignore_index: int = IGNORE_INDEX):
        self.class_names = list(class_names)
        self.ignore_index = ignore_index
        num_classes = len(class_names)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.loss_sum = torch.zeros((), dtype=torch.float64)

    def update(self, predictions: torch.Tensor, targets: torch.Tensor, loss_sum: torch.Tensor | float = 0.0) -> None:
        """Add a batch: predicted class indices (B, H, W) (or logits (B, K, H, W)) and targets (B, H, W)."""
        if predictions.dim() == targets.dim() + 1:
            predictions = predictions.argmax(dim=1)
        num_classes = len(self.class_names)
        # The counts stay on the predictions' device: no copy of whole masks to the host, no sync per batch.
        self.confusion, self.loss_sum = follow_device(predictions.device, self.confusion, self.loss_sum)
        predictions, targets = predictions.flatten().long(), targets.flatten().to(predictions.device).long()
        counted = targets != self.ignore_index
        if predictions.device.type == "cpu":
            index = targets[counted] * num_classes + predictions[counted]
        else:  # boolean indexing would read the count back; uncounted pixels go to the extra bin instead
            index = torch.where(counted, targets * num_classes + predictions, num_classes ** 2)
        self.confusion += count_pairs(index, num_classes ** 2).view(num_classes, num_classes)
        self.loss_sum += loss_sum.detach().double().sum() if isinstance(loss_sum, torch.Tensor) else float(loss_sum)

    def tensors(self) -> list[torch.Tensor]:
        """The state to sum across processes."""
        return [self.confusion, self.loss_sum]

    def compute(self, per_class: bool = False) -> dict:
        """miou, pixel_accuracy, mean_dice, loss (per counted pixel); per_class adds IoU/Dice per class."""
        confusion = self.confusion.double()
        true_positive = confusion.diag()
        false_positive = confusion.sum(dim=0) - true_positive
        false_negative = confusion.sum(dim=1) - true_positive
        union = true_positive + false_positive + false_negative
        present = union > 0
        iou = true_positive / union.clamp(min=1)
        dice = 2 * true_positive / (union + true_positive).clamp(min=1)
        pixels = confusion.sum()
        result = {
            "miou": float(iou[present].mean()) if present.any() else 0.0,
            "pixel_accuracy": float(true_positive.sum() / pixels.clamp(min=1)),
            "mean_dice": float(dice[present].mean()) if present.any() else 0.0,
            "loss": float(self.loss_sum / pixels.clamp(min=1)),
            "pixels": int(pixels),
        }
        if per_class:
            support = confusion.sum(dim=1)
            result["per_class"] = {
                name: {"iou": float(iou[i]) if present[i] else None, "dice": float(dice[i]) if present[i] else None,
                       "pixels": int(support[i])}
                for i, name in enumerate(self.class_names)
            }
            result["confusion_matrix"] = self.confusion.tolist()
        return result


def per_class_table(result: dict) -> str:
    """The per-class part of `SegmentationMeter.compute(per_class=True)` as aligned text.

    One row per class: IoU and Dice of its pixels ("-" when the class is in neither targets nor
    predictions) and its number of target pixels.
    """
    rows = result["per_class"]
    width = max(len("class"), *(len(name) for name in rows))
    lines = [f"{'class'.ljust(width)}  iou     dice    pixels"]
    for name, values in rows.items():
        iou = "-" if values["iou"] is None else f"{values['iou']:.4f}"
        dice = "-" if values["dice"] is None else f"{values['dice']:.4f}"
        lines.append(f"{name.ljust(width)}  {iou.ljust(6)}  {dice.ljust(6)}  {values['pixels']}")
    return "\n".join(lines)
