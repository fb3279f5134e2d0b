"""Embedding networks for face recognition and metric learning: any zoo classifier as the trunk, an
embedding head, L2-normalised output.

    model = create_model("embedder", backbone="resnet18", embedding_dim=128, num_classes=1000, in_chans=3)
    model(images)          # (B, 128) unit vectors: compare with cosine similarity
    model.margin_head      # the training identities' centres (ArcFace ...), used by the loss only

The head is the one of ArcFace and insightface's "fc" option: BatchNorm - dropout - linear - BatchNorm
(Deng et al. 2019, section 3.2: "BN-Dropout-FC-BN" after the last convolution). Here it follows the trunk's
pooled features: the trunk's own classifier layer is removed (cnnkit.models.anatomy finds it for any zoo
model), so the trunk gives its penultimate features. The margin head (cnnkit.losses.metric.MarginHead) is a
submodule so that checkpoints and resume carry it; `forward` never uses it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.errors import ModelError
from cnnkit.layers.margin import MARGIN_LOSSES, MarginHead
from cnnkit.models.anatomy import classifier_module, replace_module
from cnnkit.registry import create_model, register_model


class EmbeddingNet(nn.Module):
    """Trunk (a zoo classifier without its last linear layer) + BN-dropout-linear-BN head, unit-length output.

    Args:
        backbone: A registered classifier name (fastnet, resnet18, ...).
        embedding_dim: Output size D.
        num_classes: Training identities (the margin head's width); 0 for losses without a head.
        loss: The training loss; margin losses get a `margin_head`.
        margin, scale, subcenters: The margin head's settings (None: the paper's defaults).
        drop_rate: Dropout before the embedding layer.
        in_chans, input_size, **backbone_args: Passed to the trunk's builder.
    """

    def __init__(self, backbone: str = "fastnet", embedding_dim: int = 128, num_classes: int = 0,
                 loss: str = "arcface", margin: float | None = None, scale: float | None = None, subcenters: int = 1,
                 drop_rate: float = 0.0, in_chans: int = 1, input_size=None, **backbone_args):
        super().__init__()
        if embedding_dim < 1:
            raise ModelError(f"embedding_dim={embedding_dim} must be 1 or more")
        trunk = create_model(backbone, num_classes=max(num_classes, 2), in_chans=in_chans, input_size=input_size,
                             **backbone_args)
        last = classifier_module(trunk)
        if not isinstance(last, nn.Linear):
            raise ModelError(f"backbone={backbone!r}: its head is not one linear layer; choose a CNN of the zoo")
        features = last.in_features
        replace_module(trunk, last, nn.Identity()) if last is not trunk else None
        self.trunk = trunk
        self.head = nn.Sequential(nn.BatchNorm1d(features), nn.Dropout(drop_rate), nn.Linear(features, embedding_dim),
                                  nn.BatchNorm1d(embedding_dim))
        self.embedding_dim, self.num_features = embedding_dim, features
        self.margin_head = (MarginHead(embedding_dim, num_classes, loss, scale, margin, subcenters)
                            if loss in MARGIN_LOSSES and num_classes > 0 else None)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.trunk(images)  # (B, F): the trunk's pooled features
        return F.normalize(self.head(features.flatten(1)).float(), dim=1)  # (B, D), unit length


@register_model(family="embedder", task="embed")
def embedder(**kwargs) -> EmbeddingNet:
    """Embedding network: a zoo CNN trunk, BN-dropout-linear-BN head, L2-normalised (face recognition)."""
    return EmbeddingNet(**kwargs)
