"""Image classification: a model plus cross-entropy, returning {"loss", "outputs"}.

The task is the only place where a model meets its loss. The Trainer sees only `result["loss"]`
and the metric names that `new_meter()` reports, so detection or segmentation tasks plug into the
same loop by offering the same three methods.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.metrics import ClassificationMeter
from cnnkit.models.googlenet import auxiliary_loss


class ClassificationTask:
    """Cross-entropy classification (with optional label smoothing) over a logits model."""

    name = "classification"

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
        return {"loss": loss, "outputs": logits}

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
