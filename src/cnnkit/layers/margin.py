"""The margin head of ArcFace, CosFace, SphereFace (and a plain softmax classifier) over embeddings.

The formulas and defaults are described in cnnkit.losses.metric; this is the layer with the class centres.
It lives with the layers because the embedding model carries it (checkpoints and resume keep its weights).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.errors import ConfigError

MARGIN_LOSSES = ("arcface", "cosface", "sphereface", "softmax")  # a classification head over the training identities
# The papers' defaults: scale s and margin m.
DEFAULT_SCALE = {"arcface": 64.0, "cosface": 64.0, "sphereface": 1.0, "softmax": 1.0}
DEFAULT_MARGIN = {"arcface": 0.5, "cosface": 0.35, "sphereface": 4.0, "softmax": 0.0}


class MarginHead(nn.Module):
    """Class centres for margin losses: logits (B, K) from normalised embeddings (B, D) and labels.

    Args:
        embedding_dim: D.
        num_classes: K, the training identities.
        loss: "arcface", "cosface", "sphereface" or "softmax".
        scale: s (None: the paper's default).
        margin: m (None: the paper's default).
        subcenters: Centres per class (sub-center ArcFace); 1 is the plain head.
    """

    def __init__(self, embedding_dim: int, num_classes: int, loss: str = "arcface", scale: float | None = None,
                 margin: float | None = None, subcenters: int = 1):
        super().__init__()
        if loss not in MARGIN_LOSSES:
            raise ConfigError(f"embed_loss={loss!r} has no margin head; one of {', '.join(MARGIN_LOSSES)}")
        self.loss, self.subcenters, self.num_classes = loss, subcenters, num_classes
        self.scale = DEFAULT_SCALE[loss] if scale is None else float(scale)
        self.margin = DEFAULT_MARGIN[loss] if margin is None else float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes * subcenters, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        self.bias = nn.Parameter(torch.zeros(num_classes)) if loss == "softmax" else None

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, K); with `labels`, the true class's logit carries the margin (training)."""
        embeddings = embeddings.float()
        if self.loss == "softmax":
            return F.linear(embeddings, self.weight, self.bias)
        cosine = F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight.float(), dim=1))  # (B, K*c)
        if self.subcenters > 1:  # (B, K, c) -> the closest centre of each class
            cosine = cosine.view(len(cosine), self.num_classes, self.subcenters).amax(dim=2)
        if labels is None:
            return self.scale * cosine
        target = cosine.gather(1, labels.view(-1, 1)).clamp(-1 + 1e-7, 1 - 1e-7)  # (B, 1)
        theta = target.acos()
        if self.loss == "arcface":
            with_margin = torch.where(theta + self.margin < math.pi, torch.cos(theta + self.margin),
                                      target - self.margin * math.sin(self.margin))
        elif self.loss == "cosface":
            with_margin = target - self.margin
        else:  # sphereface: cos(m theta), the angle kept where cos(m theta) still decreases
            with_margin = torch.cos(self.margin * theta.clamp(max=math.pi / self.margin))
        logits = cosine.scatter(1, labels.view(-1, 1), with_margin)
        return self.scale * logits
