"""Self-supervised losses: NT-Xent (SimCLR), InfoNCE against a queue (MoCo), masked-patch regression (MAE,
MaskFeat).

Written here rather than taken from lightly or solo-learn: each is a few lines of torch, and those libraries
pull Lightning/hydra in. The tests check them against hand computations on tiny tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent_loss(first: torch.Tensor, second: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

    Row i of `first` and row i of `second` are two views of one image (the positive pair); the other 2N - 2
    views of the batch are its negatives. Each of the 2N views is a softmax over the cosine similarities to
    the 2N - 1 others, divided by `temperature`; the loss is the mean cross-entropy of picking its partner.

    Args:
        first, second: (N, D) projections of the two views (normalised here).
        temperature: tau; lower sharpens the softmax (harder negatives weigh more).
    """
    if first.shape != second.shape or first.dim() != 2:
        raise ValueError(f"nt_xent_loss needs two (N, D) tensors of one shape, got {tuple(first.shape)} and "
                         f"{tuple(second.shape)}")
    count = first.shape[0]
    views = F.normalize(torch.cat([first, second]).float(), dim=1)  # (2N, D)
    logits = views @ views.T / temperature  # (2N, 2N) cosine similarities / tau
    logits.fill_diagonal_(float("-inf"))  # a view is not its own candidate
    partners = torch.cat([torch.arange(count, 2 * count), torch.arange(count)]).to(logits.device)
    return F.cross_entropy(logits, partners)


def moco_loss(queries: torch.Tensor, keys: torch.Tensor, queue: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """InfoNCE of MoCo (He et al. 2020; v2: Chen et al. 2020): each query's positive is its own key (the other
    view through the momentum encoder), its negatives the K keys of earlier batches in the queue.

    Args:
        queries: (N, D) projections of view 1 through the trained encoder (normalised here).
        keys: (N, D) projections of view 2 through the momentum encoder (normalised here; no gradient).
        queue: (K, D) unit-length keys of earlier batches.
        temperature: tau (MoCo v2: 0.2).
    """
    queries = F.normalize(queries.float(), dim=1)
    keys = F.normalize(keys.float(), dim=1).detach()
    positive = (queries * keys).sum(dim=1, keepdim=True)  # (N, 1)
    negative = queries @ queue.float().T  # (N, K)
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(queries), dtype=torch.int64, device=queries.device))


def normalized_patch_targets(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MAE's per-patch normalised pixels: each patch (B, L, P) minus its mean, over its standard deviation."""
    mean = patches.mean(dim=-1, keepdim=True)
    variance = patches.var(dim=-1, keepdim=True, unbiased=True)
    return (patches - mean) / (variance + eps).sqrt()


def masked_patch_loss(predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked patches only (MAE, MaskFeat): the visible ones are not scored.

    Args:
        predictions, targets: (B, L, P) per-patch outputs and targets.
        mask: (B, L), 1 where the patch was masked.
    """
    per_patch = (predictions.float() - targets.float()).square().mean(dim=-1)  # (B, L)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)
