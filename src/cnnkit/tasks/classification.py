"""Image classification: a model plus cross-entropy, returning {"loss", "outputs", "batch_size", "correct"}.

The task is the only place where a model meets its loss (see cnnkit.tasks.base.Task for the contract
every task follows).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.metrics import ClassificationMeter
from cnnkit.models.googlenet import auxiliary_loss
from cnnkit.tasks.base import Task


class ClassificationTask(Task):
    """Cross-entropy classification (with optional label smoothing) over a logits model."""

    name = "classify"
    monitor = "val_accuracy"

    def __init__(self, model: nn.Module, class_names: list[str], label_smoothing: float = 0.0):
        self.model = model
        self.class_names = list(class_names)
        self.label_smoothing = label_smoothing

    def training_step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict:
        """Forward and loss for one training batch. `model` may be the DDP-wrapped module."""
        logits = model(images)  # (B, K)
        loss = self.loss(logits, targets)
        # Models with auxiliary classifiers (GoogLeNet) leave their extra logits on the module in training;
        # the paper adds 0.3 x each auxiliary loss. Always called: it also clears what the model stored.
        auxiliary = auxiliary_loss(model, targets, self.loss)
        if auxiliary is not None:
            loss = loss + auxiliary
        correct = (logits.detach().argmax(dim=1) == targets).sum()
        return {"loss": loss, "outputs": logits, "batch_size": len(targets), "correct": correct}

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def evaluation_step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict:
        """Forward and plain (unsmoothed) summed loss, so reported losses compare across recipes."""
        logits = model(images).float()
        loss_sum = F.cross_entropy(logits, targets, reduction="sum")
        return {"loss": loss_sum, "outputs": logits}

    def new_meter(self) -> ClassificationMeter:
        return ClassificationMeter(self.class_names)

    def update_meter(self, meter: ClassificationMeter, result: dict, targets: torch.Tensor) -> None:
        meter.update(result["outputs"], targets, result["loss"])


def setup(config, device, dist_info, resume):
    """`cnnkit train --task classify`: model, in-memory or streamed data, pretrained weights (cnnkit.api)."""
    from cnnkit.api import setup_classification

    return setup_classification(config, device, dist_info, resume)
