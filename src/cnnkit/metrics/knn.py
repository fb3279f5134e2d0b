"""The kNN monitor of self-supervised learning: classify each query by its k nearest labelled bank features.

The protocol of Wu et al. 2018 ("Unsupervised Feature Learning via Non-Parametric Instance Discrimination"),
used by lightly, solo-learn and MoCo's monitor: features L2-normalised, cosine similarity, the k = 200 nearest
bank features vote for their class with weight exp(similarity / temperature), temperature 0.1.

The bank and the queries go through one evaluation loop (`KNNMeter`): each target row is (label, role), role
BANK or QUERY, so the Trainer's validation computes it with no hook of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BANK, QUERY = 0, 1  # the target's second column: which side of the kNN an image is on
DEFAULT_K = 200
DEFAULT_TEMPERATURE = 0.1


def knn_predict(queries: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int,
                k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE, chunk: int = 1024) -> torch.Tensor:
    """The class of each query by weighted kNN vote (see the module docstring).

    Args:
        queries: (Q, D) features; bank: (N, D) features; bank_labels: (N,) int labels in [0, num_classes).
        k: Neighbours (capped at N). temperature: The vote's softmax temperature.
        chunk: Queries at a time (the similarity block is chunk x N).

    Returns:
        (Q,) predicted labels.
    """
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    k = min(k, len(bank))
    predictions = []
    for start in range(0, len(queries), chunk):
        similarity = queries[start:start + chunk] @ bank.T  # (q, N) cosine
        top, index = similarity.topk(k, dim=1)  # (q, k)
        votes = torch.zeros(len(top), num_classes, dtype=torch.float32, device=top.device)
        votes.scatter_add_(1, bank_labels.to(top.device)[index], (top / temperature).exp())
        predictions.append(votes.argmax(dim=1))
    return torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.int64)


def knn_accuracy(queries: torch.Tensor, query_labels: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor,
                 num_classes: int, k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE) -> float:
    """Fraction of queries whose kNN vote is their label."""
    predicted = knn_predict(queries, bank, bank_labels, num_classes, k, temperature)
    return float((predicted.cpu() == query_labels.cpu()).float().mean()) if len(predicted) else float("nan")


class KNNMeter:
    """Collects features with (label, role) targets; `compute` votes every QUERY among the BANK features."""

    def __init__(self, num_classes: int, k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE):
        self.num_classes, self.k, self.temperature = num_classes, k, temperature
        self.features: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    def update(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        self.features.append(features.detach().float().cpu())
        self.targets.append(targets.detach().cpu().view(-1, 2))

    def tensors(self) -> list[torch.Tensor]:
        return []  # nothing to sum: under torchrun every process scores every image (the loader is not sharded)

    def split(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(bank features, bank labels, query features, query labels)."""
        features, targets = torch.cat(self.features), torch.cat(self.targets)
        bank, query = targets[:, 1] == BANK, targets[:, 1] == QUERY
        return features[bank], targets[bank, 0], features[query], targets[query, 0]

    def compute(self, per_class: bool = False) -> dict:
        bank, bank_labels, queries, query_labels = self.split()
        accuracy = knn_accuracy(queries, query_labels, bank, bank_labels, self.num_classes, self.k, self.temperature)
        return {"knn_accuracy": accuracy, "count": len(queries), "bank_count": len(bank)}
