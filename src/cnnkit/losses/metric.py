"""Metric-learning losses for embeddings: softmax, ArcFace, CosFace, SphereFace, triplet, contrastive.

Embeddings are L2-normalised (B, D) vectors; labels are identity indices (B,).

- Margin heads (`MarginHead`, in cnnkit.layers.margin: a layer with weights): a weight matrix (K, D) of class centres on the unit sphere; the logit of
  class k is s * cos(theta_k), and the true class's angle gets a margin before the cross-entropy:
  ArcFace (Deng et al. 2019) cos(theta + m), defaults s=64, m=0.5; CosFace (Wang et al. 2018)
  cos(theta) - m, s=64, m=0.35; SphereFace (Liu et al. 2017) cos(m * theta) with m=4 (here the
  "SphereFace2"-free simple form with the angle clamped to [0, pi / m], no annealing). `softmax` is a plain
  linear classifier with bias on the embedding (no normalisation of the weights, no margin). With
  `subcenters=k` (sub-center ArcFace, Deng et al. 2020) each class has k centres and takes the closest.
  ArcFace's easy-margin fallback of insightface is used: where theta + m would pass pi, the logit becomes
  cos(theta) - m * sin(m) (keeps the target logit monotone in theta).
- Triplet loss (Schroff et al. 2015, FaceNet; batch-hard mining from Hermans et al. 2017): over a P x K
  batch, for each anchor the hardest positive (farthest same identity) and hardest negative (closest other
  identity), max(0, d(a, p) - d(a, n) + margin), Euclidean distance, margin 0.2. Semi-hard mining (FaceNet):
  for each anchor-positive pair the closest negative that is still farther than the positive (within the
  margin); where none exists, the farthest negative (as TensorFlow Addons' triplet_semihard_loss).
- Contrastive loss (Hadsell et al. 2006): every pair in the batch, d^2 for the same identity,
  max(0, margin - d)^2 for different ones, averaged over the pairs present of each kind, margin 0.5.

Hand-written: the formulas are a few lines each and need to live with cnnkit's margin head and sampler;
pytorch-metric-learning is the test oracle (tests/test_embed_oracle.py: batch-hard triplet, ArcFace and CosFace
give its values to 1e-5), not a dependency. The contrastive loss is Hadsell's squared form; PML's
ContrastiveLoss uses unsquared distances averaged over the non-zero terms, so the two differ by design.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnkit.errors import ConfigError

EMBED_LOSSES = ("arcface", "cosface", "sphereface", "softmax", "triplet", "triplet_semihard", "contrastive")
PAIR_LOSSES = ("triplet", "triplet_semihard", "contrastive")  # need P identities x K images per batch
# The distance margins of the pair losses (FaceNet's 0.2; contrastive 0.5 on unit vectors).
DEFAULT_PAIR_MARGIN = {"triplet": 0.2, "triplet_semihard": 0.2, "contrastive": 0.5}


def pairwise_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (B, B), exactly 0 on the diagonal (no sqrt of a rounding error)."""
    x = embeddings.float()
    norms = x.pow(2).sum(dim=1, keepdim=True)  # (B, 1)
    squared = norms + norms.T - 2 * x @ x.T  # (B, B); clamped below: no NaN gradient at 0
    return squared.clamp(min=1e-12).sqrt() * (1 - torch.eye(len(x), device=x.device))


def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2,
                 mining: str = "hard") -> torch.Tensor:
    """Triplet loss with batch-hard ("hard") or semi-hard ("semihard") mining; mean over anchors/pairs."""
    distances = pairwise_distances(embeddings)
    same = labels.view(-1, 1) == labels.view(1, -1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    positive, negative = same & ~eye, ~same
    if not positive.any() or not negative.any():
        raise ConfigError("a triplet loss batch needs at least two images of one identity and two identities; "
                          "use identities_per_batch >= 2 and images_per_identity >= 2")
    if mining == "hard":
        hardest_positive = (distances * positive).amax(dim=1)
        hardest_negative = distances.masked_fill(~negative, float("inf")).amin(dim=1)
        valid = positive.any(dim=1) & negative.any(dim=1)
        return F.relu(hardest_positive - hardest_negative + margin)[valid].mean()
    # semi-hard: per (anchor, positive), the closest negative farther than the positive
    anchor, other = positive.nonzero(as_tuple=True)
    d_ap = distances[anchor, other].unsqueeze(1)  # (T, 1)
    d_an = distances[anchor]  # (T, B)
    candidates = negative[anchor] & (d_an > d_ap)
    semi = d_an.masked_fill(~candidates, float("inf")).amin(dim=1)
    farthest = d_an.masked_fill(~negative[anchor], float("-inf")).amax(dim=1)
    chosen = torch.where(candidates.any(dim=1), semi, farthest)
    return F.relu(d_ap.squeeze(1) - chosen + margin).mean()


def contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """d^2 for same-identity pairs, max(0, margin - d)^2 for the others; each kind averaged, then summed."""
    distances = pairwise_distances(embeddings)
    same = labels.view(-1, 1) == labels.view(1, -1)
    upper = torch.ones_like(same).triu(diagonal=1)
    positive, negative = same & upper, ~same & upper
    loss = distances.new_zeros(())
    if positive.any():
        loss = loss + distances[positive].pow(2).mean()
    if negative.any():
        loss = loss + F.relu(margin - distances[negative]).pow(2).mean()
    return loss
