"""The pretraining task: a self-supervised loss per method, and the kNN monitor as its validation metric.

    simclr  NT-Xent between the projections of two views of each image (cnnkit.losses.ssl.nt_xent_loss)
    moco    InfoNCE of each view's query against the other view's momentum key and the queue; symmetrised
            (both views serve as queries, as MoCo v3 and solo-learn's MoCo v2+ do); both views' keys enqueued
    mae     MSE between reconstructed and per-patch normalised pixels, on the masked patches only
    beit    MSE between predicted and true HOG features, on the masked patches only (MaskFeat's targets)

Validation (with labels): the backbone's features of the labelled training images (the bank) and of the
validation images (the queries); `val_knn_accuracy` picks the best checkpoint. Without labels: train_loss.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnkit.engine.distributed import gather_rows
from cnnkit.losses.ssl import masked_patch_loss, moco_loss, normalized_patch_targets, nt_xent_loss
from cnnkit.metrics.knn import DEFAULT_K, DEFAULT_TEMPERATURE, KNNMeter
from cnnkit.models.ssl import patchify
from cnnkit.tasks.base import Task

METHODS = ("simclr", "moco", "mae", "beit")
CONTRASTIVE = ("simclr", "moco")
DEFAULT_TEMPERATURES = {"simclr": 0.2, "moco": 0.2}  # MoCo v2's 0.2; SimCLR's CIFAR runs use 0.2-0.5


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP and torch.compile wrappers (for its queue, patch size and targets)."""
    while hasattr(model, "_orig_mod") or hasattr(model, "module") and not hasattr(model, "backbone"):
        model = getattr(model, "_orig_mod", None) or model.module
    return model


class PretrainTask(Task):
    """Self-supervised training of `model` (cnnkit.models.ssl) by `method`."""

    name = "pretrain"

    def __init__(self, model: nn.Module, method: str, num_classes: int = 0, temperature: float | None = None,
                 knn_k: int = DEFAULT_K, knn_temperature: float = DEFAULT_TEMPERATURE, probe: bool = False):
        if method not in METHODS:
            raise ValueError(f"method={method!r} is not one of {', '.join(METHODS)}")
        self.model, self.method, self.num_classes = model, method, num_classes
        self.temperature = temperature if temperature is not None else DEFAULT_TEMPERATURES.get(method, 0.2)
        self.knn_k, self.knn_temperature, self.probe = knn_k, knn_temperature, probe
        self.monitor = "val_knn_accuracy" if num_classes else "train_loss"

    def training_step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict:
        # Through the model's forward (objective=True): under torchrun, DDP's forward is what averages gradients.
        outputs = model(images, objective=True)
        net = unwrap(model)
        if self.method == "simclr":
            count = len(images) // 2  # views: (2B, C, H, W), view 1 then view 2
            # every rank's projections take part (each view's negatives: the whole global batch), as one process
            first = gather_rows(outputs[:count], differentiable=True)
            second = gather_rows(outputs[count:], differentiable=True)
            return {"loss": nt_xent_loss(first, second, self.temperature), "batch_size": count}
        if self.method == "moco":
            queries, keys = outputs
            loss = moco_loss(queries, keys, net.queue.clone(), self.temperature)  # mean over both views' queries
            net.enqueue(gather_rows(keys))  # every rank enqueues every rank's keys: the queues stay equal
            return {"loss": loss, "batch_size": len(images) // 2}
        predictions, mask = outputs
        if self.method == "mae":
            targets = normalized_patch_targets(patchify(images.float(), net.patch_size))
        else:
            targets = net.targets(images)
        return {"loss": masked_patch_loss(predictions, targets, mask), "batch_size": len(images)}

    @torch.no_grad()
    def evaluation_step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict:
        return {"features": model(images).float()}  # the backbone's features (B, D)

    def new_meter(self) -> KNNMeter:
        meter = ProbingKNNMeter if self.probe else KNNMeter
        return meter(max(self.num_classes, 1), self.knn_k, self.knn_temperature)

    def update_meter(self, meter: KNNMeter, result: dict, targets: torch.Tensor) -> None:
        meter.update(result["features"], targets)


class ProbingKNNMeter(KNNMeter):
    """The kNN monitor plus a linear probe (probe_monitor=true): L-BFGS logistic regression on the bank's
    features at the default L2 strength (cnnkit.transfer.linear_probe), scored on the queries, as
    `linear_probe_accuracy` (val_linear_probe_accuracy in metrics.jsonl). `cnnkit evaluate` fits the full probe
    (all training images, L2 picked on validation); this one follows the curve during training."""

    def compute(self, per_class: bool = False) -> dict:
        from cnnkit.transfer.linear_probe import fit_linear_probe

        result = super().compute(per_class)
        bank, bank_labels, queries, query_labels = self.split()
        fit = fit_linear_probe((bank, bank_labels), None, self.num_classes)
        logits = queries.double() @ fit.weight.double().T + fit.bias.double()
        result["linear_probe_accuracy"] = float((logits.argmax(1) == query_labels).double().mean())
        return result
