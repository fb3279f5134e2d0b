"""Image classification: a model plus cross-entropy, returning {"loss", "outputs", "batch_size", "correct"}.

The task is the only place where a model meets its loss (see cnnkit.tasks.base.Task for the contract
every task follows). The training loss is cnnkit.losses.classification.classification_loss: cross-entropy,
or focal loss (config loss=focal), optionally with class weights (class_weights=inverse|effective), for
class-index or class-probability (MixUp/CutMix) targets.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.losses.classification import classification_loss
from cnnkit.metrics import ClassificationMeter
from cnnkit.models.googlenet import auxiliary_loss
from cnnkit.tasks.base import Task


class ClassificationTask(Task):
    """Cross-entropy or focal-loss classification over a logits model.

    Args:
        model: Maps (B, C, H, W) images to (B, K) logits.
        class_names: The K class names.
        label_smoothing: Targets become (1 - s) * y + s / K in the training loss.
        tta: Flip test-time augmentation in evaluation.
        class_weights: (K,) per-class loss weights (cnnkit.losses.classification.class_weights), or None.
        focal_gamma: Focal-loss exponent; 0 (the default) is cross-entropy.
    """

    name = "classify"
    monitor = "val_accuracy"
    mixer = None  # a cnnkit.data.mixing.BatchMixer when MixUp/CutMix is on

    def __init__(self, model: nn.Module, class_names: list[str], label_smoothing: float = 0.0, tta: bool = False,
                 class_weights: torch.Tensor | None = None, focal_gamma: float = 0.0):
        self.model = model
        self.class_names = list(class_names)
        self.label_smoothing = label_smoothing
        self.tta = tta
        self.class_weights = class_weights
        self.focal_gamma = focal_gamma

    def training_step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict:
        """Forward and loss for one training batch. `model` may be the DDP-wrapped module.

        With MixUp/CutMix (`self.mixer`, set by setup) the loss sees the mixed images and their
        mixed class probabilities; train accuracy still counts against each image's own label."""
        mixed = targets
        if self.mixer is not None:
            images, mixed = self.mixer(images, targets)  # (B, K) probabilities
        logits = model(images)  # (B, K)
        loss = self.loss(logits, mixed)
        # Models with auxiliary classifiers (GoogLeNet) leave their extra logits on the module in training;
        # the paper adds 0.3 x each auxiliary loss. Always called: it also clears what the model stored.
        auxiliary = auxiliary_loss(model, mixed, self.loss)
        if auxiliary is not None:
            loss = loss + auxiliary
        correct = (logits.detach().argmax(dim=1) == targets).sum()
        return {"loss": loss, "outputs": logits, "batch_size": len(targets), "correct": correct}

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss; targets are class indices (B,) or class probabilities (B, K) (MixUp/CutMix)."""
        if self.class_weights is not None and self.class_weights.device != logits.device:
            self.class_weights = self.class_weights.to(logits.device)  # once, not every step
        return classification_loss(logits, targets, self.class_weights, self.label_smoothing, self.focal_gamma)

    @torch.no_grad()
    def evaluation_step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict:
        """Forward and plain (unsmoothed) summed loss, so reported losses compare across recipes."""
        logits = predict_logits(model, images, self.tta)
        loss_sum = F.cross_entropy(logits, targets, reduction="sum")
        return {"loss": loss_sum, "outputs": logits}

    def new_meter(self) -> ClassificationMeter:
        return ClassificationMeter(self.class_names)

    def update_meter(self, meter: ClassificationMeter, result: dict, targets: torch.Tensor) -> None:
        meter.update(result["outputs"], targets, result["loss"])


def predict_logits(model: nn.Module, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Logits in fp32; with `tta`, the mean of the image's and its mirror image's logits (flip TTA)."""
    logits = model(images).float()
    if tta:
        logits = (logits + model(images.flip(-1)).float()) / 2
    return logits
