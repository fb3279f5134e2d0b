"""cnnkit's metric-learning losses against pytorch-metric-learning on the same inputs (the test-only oracle)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

pml = pytest.importorskip("pytorch_metric_learning")
from pytorch_metric_learning import losses, miners  # noqa: E402

from cnnkit.layers.margin import MarginHead  # noqa: E402
from cnnkit.losses.metric import triplet_loss  # noqa: E402


@pytest.fixture
def batch():
    torch.manual_seed(0)
    return F.normalize(torch.randn(16, 8), dim=1), torch.arange(16) % 4


def test_batch_hard_triplet_equals_pml(batch):
    embeddings, labels = batch
    expected = losses.TripletMarginLoss(margin=0.2)(embeddings, labels, miners.BatchHardMiner()(embeddings, labels))
    assert triplet_loss(embeddings, labels, 0.2).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("name, oracle", [
    ("arcface", lambda: losses.ArcFaceLoss(4, 8, margin=math.degrees(0.5), scale=64)),  # PML's margin in degrees
    ("cosface", lambda: losses.CosFaceLoss(4, 8, margin=0.35, scale=64)),
])
def test_margin_heads_equal_pml(batch, name, oracle):
    embeddings, labels = batch
    reference = oracle()
    head = MarginHead(8, 4, name)  # the papers' defaults: s=64, m=0.5 / 0.35
    with torch.no_grad():
        head.weight.copy_(reference.W.T)  # PML keeps the centres as (D, K)
    ours = F.cross_entropy(head(embeddings, labels), labels)
    assert ours.item() == pytest.approx(reference(embeddings, labels).item(), rel=1e-5)
