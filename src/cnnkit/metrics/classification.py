"""Classification metrics from one confusion matrix.

Everything (accuracy, balanced accuracy, per-class precision/recall/F1) derives from a (K, K) count
matrix and a loss sum, so distributed evaluation only has to sum two tensors across ranks.
Conventions follow scikit-learn's: a class that is never predicted has precision 0 (zero_division=0),
and balanced accuracy is the mean recall over the classes that occur in the targets.
Written here rather than with torchmetrics (not a dependency) because it is a dozen lines of tensor ops.
"""

from __future__ import annotations

import torch


def follow_device(device: torch.device, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """`tensors`, moved to `device` if they are elsewhere (a meter's state follows its first batch)."""
    return tuple(tensor if tensor.device == device else tensor.to(device) for tensor in tensors)


def count_pairs(index: torch.Tensor, size: int) -> torch.Tensor:
    """How often each value in 0..size-1 occurs in `index` (int64, (size,)).

    On the CPU `torch.bincount` (as measured; values must be < size). Elsewhere a scatter-add into a fixed-size
    buffer, because bincount on CUDA reads the largest value back to the host to size its output (a sync per
    batch); there a value == size marks an item not to count (masking would sync too).
    """
    if index.device.type == "cpu":
        return torch.bincount(index, minlength=size)
    counts = torch.zeros(size + 1, dtype=torch.int64, device=index.device)
    counts.index_add_(0, index.flatten(), torch.ones_like(index.flatten(), dtype=torch.int64))
    return counts[:size]


class ClassificationMeter:
    """Accumulates a confusion matrix (rows: true class, columns: predicted) and the summed loss."""

    def __init__(self, class_names: list[str]):
        self.class_names = list(class_names)
        num_classes = len(class_names)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.loss_sum = torch.zeros((), dtype=torch.float64)

    def update(self, logits: torch.Tensor, targets: torch.Tensor, loss_sum: torch.Tensor | float = 0.0) -> None:
        """Add a batch: logits (B, K), integer targets (B,), and the batch's summed loss.

        The counts stay on the logits' device (moved there at the first batch): no host copy, no GPU sync per
        batch; `compute` reads them once.
        """
        num_classes = len(self.class_names)
        self.confusion, self.loss_sum = follow_device(logits.device, self.confusion, self.loss_sum)
        predictions = logits.argmax(dim=1)
        index = targets.to(logits.device) * num_classes + predictions
        self.confusion += count_pairs(index, num_classes * num_classes).view(num_classes, num_classes)
        self.loss_sum += loss_sum.detach().double().sum() if isinstance(loss_sum, torch.Tensor) else float(loss_sum)

    def tensors(self) -> list[torch.Tensor]:
        """The state to sum across ranks."""
        return [self.confusion, self.loss_sum]

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    def compute(self, per_class: bool = False) -> dict:
        """accuracy, loss, balanced_accuracy and macro_f1; with per_class, precision/recall/F1/support per class."""
        confusion = self.confusion.double()
        total = confusion.sum().clamp(min=1)
        true_positive = confusion.diag()
        support = confusion.sum(dim=1)
        predicted = confusion.sum(dim=0)
        recall = true_positive / support.clamp(min=1)
        precision = true_positive / predicted.clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        present = support > 0
        result = {
            "accuracy": float(true_positive.sum() / total),
            "loss": float(self.loss_sum / total),
            "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
            "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
            "count": self.count,
        }
        if per_class:
            result["per_class"] = {
                name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                       "support": int(support[i])}
                for i, name in enumerate(self.class_names)
            }
            result["confusion_matrix"] = self.confusion.tolist()
        return result


def per_class_table(result: dict) -> str:
    """The per-class part of `ClassificationMeter.compute(per_class=True)` as aligned text.

    One row per class: precision (of the images predicted as the class, the share that are), recall (of
    the images of the class, the share found), their harmonic mean F1, and support (images of the class).
    """
    rows = result["per_class"]
    width = max(len("class"), *(len(name) for name in rows))
    lines = [f"{'class'.ljust(width)}  precision  recall  f1      support"]
    for name, values in rows.items():
        lines.append(f"{name.ljust(width)}  {values['precision']:.4f}     {values['recall']:.4f}  "
                     f"{values['f1']:.4f}  {values['support']}")
    return "\n".join(lines)

