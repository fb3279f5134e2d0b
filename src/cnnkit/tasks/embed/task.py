"""The embedding task: an embedding network trained with a margin loss (ArcFace ...) or a pair loss (triplet,
contrastive); validated on identities it never saw, by identification rank-1 (the best checkpoint's metric),
verification TAR@FAR and EER."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.layers.margin import MARGIN_LOSSES
from cnnkit.losses.metric import DEFAULT_PAIR_MARGIN, contrastive_loss, triplet_loss
from cnnkit.metrics.verification import all_pairs, identification_metrics, verification_metrics
from cnnkit.tasks.base import Task


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP or torch.compile wrapper."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


class EmbedTask(Task):
    """Embeddings (B, D) from `model`; the loss named by `loss` (cnnkit.losses.metric)."""

    name = "embed"
    monitor = "val_rank1"

    def __init__(self, model: nn.Module, loss: str = "arcface", margin: float | None = None):
        self.model, self.loss = model, loss
        self.margin = DEFAULT_PAIR_MARGIN.get(loss, 0.0) if margin is None else margin

    def training_step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict:
        embeddings = model(images)  # (B, D), unit length
        result = {"batch_size": len(targets)}
        if self.loss in MARGIN_LOSSES:
            head = unwrap(model).margin_head
            loss = F.cross_entropy(head(embeddings, targets), targets)
            with torch.no_grad():  # train accuracy over the training identities, without the margin
                result["correct"] = (head(embeddings.detach()).argmax(dim=1) == targets).sum()
        elif self.loss == "contrastive":
            loss = contrastive_loss(embeddings, targets, self.margin)
        else:
            loss = triplet_loss(embeddings, targets, self.margin, "hard" if self.loss == "triplet" else "semihard")
        return {**result, "loss": loss}

    @torch.no_grad()
    def evaluation_step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict:
        return {"embeddings": model(images).float()}

    def new_meter(self) -> EmbeddingMeter:
        return EmbeddingMeter()

    def update_meter(self, meter: EmbeddingMeter, result: dict, targets: torch.Tensor) -> None:
        meter.update(result["embeddings"], targets)


class EmbeddingMeter:
    """Collects the embeddings of a split; `compute` scores every pair (verification) and a gallery of each
    identity's first image against the rest (identification).

    Scoring every pair needs every embedding, so under DDP every rank validates on the whole split (the
    embed task's evaluation loader is not sharded) and computes the same metrics: no tensors to sum.
    """

    def __init__(self):
        self.embeddings: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def update(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        self.embeddings.append(embeddings.detach().float().cpu())
        self.labels.append(labels.detach().cpu())

    def tensors(self) -> list[torch.Tensor]:
        return []

    def compute(self, per_class: bool = False) -> dict:
        embeddings, labels = torch.cat(self.embeddings), torch.cat(self.labels)
        scores, genuine = all_pairs(embeddings, labels)
        result = {"count": len(labels), "identities": int(labels.unique().numel())}
        result.update(verification_metrics(scores, genuine))
        identification = identification_metrics(embeddings, labels)
        if not per_class:
            identification.pop("cmc", None)
        result.update(identification)
        return result
