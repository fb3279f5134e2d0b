"""Networks for self-supervised pretraining (`cnnkit train --task pretrain`), each around a zoo classifier
whose head is removed: `backbone` is that classifier, so `pretrained=RUN` loads it into a classify run.

- `simclr`: Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations":
  backbone + projection MLP (Linear-BN-ReLU-Linear, as SimCLR v2's first two layers).
- `moco`: Chen, Fan, Girshick and He 2020, "Improved Baselines with Momentum Contrastive Learning" (MoCo v2):
  the same, plus a momentum copy of backbone and projector (timm's ModelEmaV3, the EMA the Trainer uses) that
  encodes the keys, and a queue of earlier keys as negatives.
- `mae`: He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners": a timm ViT encoder (the zoo's
  `vit_mini` by default) sees only the visible patches; a light decoder (2 blocks of width 64 here, the paper's
  8 x 512 is for 224 px ImageNet) reconstructs every patch from the visible tokens and mask tokens.
- `beit`: masked image modelling as BEiT (Bao et al. 2022): masked patches are replaced by a learned mask token
  and the encoder predicts a target for each. Deviation: BEiT's targets are the discrete codes of a DALL-E
  dVAE tokenizer (downloaded, trained on 250M images); cnnkit predicts the HOG features of the masked patches
  instead (Wei et al. 2022, "Masked Feature Prediction for Self-Supervised Visual Pre-Training", MaskFeat),
  which needs no tokenizer and no download. Masking is uniform at random by default; `masking="block"` is BEiT's
  blockwise masking (its Algorithm 1: rectangles of random area and aspect ratio until the ratio is reached), with
  BEiT's minimum block of 16 of 14 x 14 patches scaled to the grid (4 for a 28 px image's 7 x 7), topped up uniformly
  at random when the last rectangle does not fit, so that exactly round(L x mask_ratio) patches are masked.

Not from lightly/solo-learn: they bring Lightning and hydra, and these are a few dozen lines over timm's blocks.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.errors import ModelError
from cnnkit.models.anatomy import classifier_module, replace_module
from cnnkit.registry import create_model, register_model


def headless(backbone: str, in_chans: int, input_size, backbone_args: dict | None = None) -> tuple[nn.Module, int]:
    """The zoo classifier `backbone` with its classification layer replaced by nn.Identity, and its feature width."""
    model = create_model(backbone, num_classes=1, in_chans=in_chans, input_size=input_size, **(backbone_args or {}))
    head = classifier_module(model)
    if not isinstance(head, nn.Linear):
        raise ModelError(f"{backbone}'s head is {type(head).__name__}, not a linear layer: it cannot be a backbone")
    replace_module(model, head, nn.Identity())
    return model, head.in_features


class ProjectionHead(nn.Sequential):
    """Linear -> BatchNorm -> ReLU -> Linear: the MLP the contrastive loss sees (SimCLR, MoCo v2)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True),
                         nn.Linear(hidden_dim, out_dim))


class ContrastiveNet(nn.Module):
    """SimCLR's network: `forward` gives the backbone's features (kNN, probes), `project` the projection."""

    def __init__(self, backbone: str = "fastnet", in_chans: int = 1, input_size=28, projection_dim: int = 128,
                 hidden_dim: int | None = None, backbone_args: dict | None = None):
        super().__init__()
        self.backbone, self.feature_dim = headless(backbone, in_chans, input_size, backbone_args)
        self.projector = ProjectionHead(self.feature_dim, hidden_dim or max(self.feature_dim, 256), projection_dim)

    def forward(self, images: torch.Tensor, objective: bool = False):
        """The backbone's features (B, feature_dim); objective=True: what the loss takes (the projections).
        Training goes through forward so that DDP, which wraps forward, averages the gradients."""
        return self.project(images) if objective else self.backbone(images)

    def project(self, images: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(images))  # -> (B, projection_dim)


class MomentumContrastNet(ContrastiveNet):
    """MoCo v2: the query encoder (backbone + projector) trains; the key encoder is its exponential moving
    average (momentum `momentum`); `queue` holds the last `queue_size` keys (unit length)."""

    def __init__(self, backbone: str = "fastnet", in_chans: int = 1, input_size=28, projection_dim: int = 128,
                 hidden_dim: int | None = None, backbone_args: dict | None = None, queue_size: int = 4096,
                 momentum: float = 0.99):
        super().__init__(backbone, in_chans, input_size, projection_dim, hidden_dim, backbone_args)
        from timm.utils import ModelEmaV3

        if queue_size < 1 or not 0.0 <= momentum < 1.0:
            raise ModelError(f"moco needs queue_size >= 1 and momentum in [0, 1), got {queue_size} and {momentum}")
        self.key_encoder = ModelEmaV3(self._query_encoder(), decay=momentum)
        self.key_encoder.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, projection_dim), dim=1))
        self.register_buffer("queue_pointer", torch.zeros((), dtype=torch.int64))

    def forward(self, images: torch.Tensor, objective: bool = False):
        """Features; objective=True on two views (2B, C, H, W), view 1 then view 2: (queries (2B, D), keys (2B, D)),
        each query's key from the other view through the momentum encoder (one momentum step first)."""
        if not objective:
            return self.backbone(images)
        count = len(images) // 2
        return self.project(images), self.keys(torch.cat([images[count:], images[:count]]))

    def _query_encoder(self) -> nn.ModuleDict:
        # Not an attribute: a view of the same modules, so the state dict names each weight once.
        return nn.ModuleDict({"backbone": self.backbone, "projector": self.projector})

    @torch.no_grad()
    def keys(self, images: torch.Tensor) -> torch.Tensor:
        """Move the key encoder towards the query encoder (one momentum step), then encode `images` with it."""
        self.key_encoder.update(self._query_encoder())
        encoder = self.key_encoder.module
        encoder.train(self.training)  # BatchNorm statistics of the keys' own batch, as MoCo
        return encoder["projector"](encoder["backbone"](images))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest keys of the queue with `keys` (normalised), as a ring buffer."""
        keys = F.normalize(keys.float(), dim=1)[: len(self.queue)]
        positions = (self.queue_pointer + torch.arange(len(keys), device=keys.device)) % len(self.queue)
        self.queue[positions] = keys.to(self.queue.dtype)
        self.queue_pointer.copy_((self.queue_pointer + len(keys)) % len(self.queue))


# --------------------------------------------------------------------------- masked image modelling

def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, L, patch_size * patch_size * C), patches in row-major order (as the ViT's tokens)."""
    batch, channels, height, width = images.shape
    rows, columns = height // patch_size, width // patch_size
    patches = images.reshape(batch, channels, rows, patch_size, columns, patch_size)
    return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * columns, patch_size * patch_size * channels)


def unpatchify(patches: torch.Tensor, patch_size: int, channels: int, height: int, width: int) -> torch.Tensor:
    """The inverse of `patchify`: (B, L, P) -> (B, C, H, W)."""
    batch, rows, columns = patches.shape[0], height // patch_size, width // patch_size
    images = patches.reshape(batch, rows, columns, patch_size, patch_size, channels)
    return images.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, height, width)


def random_masking(batch: int, length: int, mask_ratio: float, device=None,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Which patches each image hides: exactly round(length x mask_ratio) of them, chosen uniformly at random.

    Returns:
        (keep (B, V) indices of the visible patches in ascending order, mask (B, L) with 1 where masked).
    """
    masked = int(round(length * mask_ratio))
    if not 0 < masked < length:
        raise ModelError(f"mask_ratio={mask_ratio} masks {masked} of {length} patches; it must leave at least one "
                         "patch masked and one visible")
    noise = torch.rand(batch, length, generator=generator, device=device if generator is None else None).to(device)
    order = noise.argsort(dim=1)
    keep = order[:, : length - masked].sort(dim=1).values
    mask = torch.ones(batch, length, device=device)
    mask.scatter_(1, keep, 0.0)
    return keep, mask


def block_masking(batch: int, rows: int, columns: int, mask_ratio: float, min_block: int | None = None,
                  generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """BEiT's blockwise masking (Bao et al. 2022, Algorithm 1): mask (B, rows * columns), 1 where masked.

    Rectangles of s patches (min_block <= s <= those still to mask) and aspect ratio r in [0.3, 1/0.3] (log-uniform)
    are placed at random until round(L x mask_ratio) patches are masked; where ten tries in a row add nothing, the
    rest are picked uniformly at random among the visible ones, so the count is always exact. min_block: BEiT's 16
    patches of 14 x 14 scaled to this grid (4 of 7 x 7) unless given.
    """
    length = rows * columns
    min_block = min_block or max(4, round(16 * length / 196))
    target = int(round(length * mask_ratio))
    if not 0 < target < length:
        raise ModelError(f"mask_ratio={mask_ratio} masks {target} of {length} patches; it must leave at least one "
                         "patch masked and one visible")
    # Python's random and numpy, not torch ops: ~30 draws and slices per image, a few microseconds each this way
    draw = random.Random(int(torch.randint(2 ** 62, (), generator=generator)))
    masks = np.zeros((batch, rows, columns), dtype=np.float32)
    for mask in masks:
        count, failures = 0, 0
        while count < target and failures < 10:
            remaining = target - count
            if remaining < min_block:
                break
            area = draw.uniform(min_block, remaining)
            aspect = math.exp(draw.uniform(math.log(0.3), math.log(1 / 0.3)))
            height = int(round(math.sqrt(area * aspect)))
            width = int(round(math.sqrt(area / aspect)))
            if not (0 < height <= rows and 0 < width <= columns):
                failures += 1
                continue
            top, left = draw.randrange(rows - height + 1), draw.randrange(columns - width + 1)
            block = mask[top:top + height, left:left + width]
            added = int((block == 0).sum())
            if 0 < added <= remaining:
                block.fill(1.0)
                count, failures = count + added, 0
            else:
                failures += 1
        if count < target:  # top up: exactly `target` patches masked
            flat = mask.reshape(-1)
            flat[draw.sample(np.flatnonzero(flat == 0).tolist(), target - count)] = 1.0
    return torch.from_numpy(masks.reshape(batch, length)).to(device)


class MaskedAutoencoder(nn.Module):
    """MAE: `reconstruct(images)` -> (per-patch pixel predictions (B, L, P), mask (B, L)); `forward` gives the
    encoder's features of the whole image (the class token after the last norm), for kNN and probes."""

    def __init__(self, backbone: str = "vit_mini", in_chans: int = 1, input_size=28, mask_ratio: float = 0.75,
                 decoder_dim: int = 64, decoder_depth: int = 2, decoder_heads: int = 4,
                 backbone_args: dict | None = None):
        super().__init__()
        self.backbone, width = headless(backbone, in_chans, input_size, backbone_args)
        if not all(hasattr(self.backbone, part) for part in ("patch_embed", "pos_embed", "blocks", "cls_token")):
            raise ModelError(f"--method mae/beit needs a timm ViT backbone (e.g. --model vit_mini), not {backbone}")
        from timm.models.vision_transformer import Block

        self.mask_ratio, self.in_chans = mask_ratio, in_chans
        self.patch_size = self.backbone.patch_embed.patch_size[0]
        length = self.backbone.patch_embed.num_patches
        self.decoder_embed = nn.Linear(width, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, length + 1, decoder_dim))
        self.decoder_blocks = nn.Sequential(*(Block(decoder_dim, decoder_heads, qkv_bias=True)
                                              for _ in range(decoder_depth)))
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size ** 2 * in_chans)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)

    def forward(self, images: torch.Tensor, objective: bool = False):
        """Features (B, width); objective=True: `reconstruct` at random masks, (predictions, mask)."""
        return self.reconstruct(images) if objective else self.backbone(images)

    def encode_visible(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The encoder on the visible patches `keep` (B, V) only: (B, 1 + V, width), class token first."""
        vit = self.backbone
        tokens = vit.patch_embed(images) + vit.pos_embed[:, 1:]  # (B, L, D)
        tokens = tokens.gather(1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))  # (B, V, D)
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(len(tokens), -1, -1)
        return vit.norm(vit.blocks(torch.cat([cls, tokens], dim=1)))

    def reconstruct(self, images: torch.Tensor, keep: torch.Tensor | None = None,
                    mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask (at random unless `keep`/`mask` are given), encode the visible patches, decode every patch."""
        length = self.backbone.patch_embed.num_patches
        if keep is None:
            keep, mask = random_masking(len(images), length, self.mask_ratio, images.device)
        encoded = self.decoder_embed(self.encode_visible(images, keep))  # (B, 1 + V, d)
        batch, visible, width = len(images), keep.shape[1], encoded.shape[-1]
        tokens = self.mask_token.expand(batch, length, width).to(encoded.dtype).clone()  # (B, L, d)
        tokens.scatter_(1, keep.unsqueeze(-1).expand(-1, -1, width), encoded[:, 1:1 + visible])
        tokens = torch.cat([encoded[:, :1], tokens], dim=1) + self.decoder_pos_embed
        decoded = self.decoder_pred(self.decoder_norm(self.decoder_blocks(tokens)))
        return decoded[:, 1:], mask  # (B, L, patch_size**2 * C), (B, L)


def patch_hog(images: torch.Tensor, patch_size: int, bins: int = 9, cells: int = 2) -> torch.Tensor:
    """HOG features per patch (Dalal and Triggs 2005, as MaskFeat's targets): (B, L, cells * cells * bins).

    The channel mean's gradients ([-1, 0, 1] filters), unsigned orientation in `bins` bins weighted by the
    gradient magnitude, summed over each of the patch's cells x cells cells, and L2-normalised per patch.
    """
    gray = images.float().mean(dim=1, keepdim=True)  # (B, 1, H, W)
    padded = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    dx = padded[:, :, 1:-1, 2:] - padded[:, :, 1:-1, :-2]
    dy = padded[:, :, 2:, 1:-1] - padded[:, :, :-2, 1:-1]
    magnitude = torch.sqrt(dx.square() + dy.square())
    angle = torch.atan2(dy, dx) % math.pi  # unsigned, [0, pi)
    index = (angle / (math.pi / bins)).long().clamp_(max=bins - 1)
    histogram = torch.zeros(gray.shape[0], bins, *gray.shape[2:], device=images.device)
    histogram.scatter_(1, index, magnitude)  # (B, bins, H, W): each pixel's magnitude in its bin
    cell = patch_size // cells
    histogram = F.avg_pool2d(histogram, cell) * cell * cell  # (B, bins, H / cell, W / cell): sums per cell
    batch, _, rows, columns = histogram.shape
    # (B, bins, R*cells, C*cells) -> (B, R, C, cells, cells, bins) -> (B, L, cells*cells*bins)
    histogram = histogram.reshape(batch, bins, rows // cells, cells, columns // cells, cells)
    features = histogram.permute(0, 2, 4, 3, 5, 1).reshape(batch, (rows // cells) * (columns // cells), -1)
    return F.normalize(features, dim=-1)


class MaskedFeatureNet(nn.Module):
    """BEiT-style masked image modelling with HOG targets (see the module docstring): `predict(images, mask)`
    gives each patch's predicted HOG features (B, L, hog_dim) with the masked patches replaced by a mask token."""

    def __init__(self, backbone: str = "vit_mini", in_chans: int = 1, input_size=28, mask_ratio: float = 0.4,
                 hog_bins: int = 9, backbone_args: dict | None = None, masking: str = "random"):
        super().__init__()
        if masking not in ("random", "block"):
            raise ModelError(f"beit: masking={masking!r}; use 'random' or 'block'")
        self.masking = masking
        self.backbone, width = headless(backbone, in_chans, input_size, backbone_args)
        if not all(hasattr(self.backbone, part) for part in ("patch_embed", "pos_embed", "blocks", "cls_token")):
            raise ModelError(f"--method mae/beit needs a timm ViT backbone (e.g. --model vit_mini), not {backbone}")
        self.mask_ratio, self.hog_bins = mask_ratio, hog_bins
        self.patch_size = self.backbone.patch_embed.patch_size[0]
        self.cells = 2 if self.patch_size % 2 == 0 else 1
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.predictor = nn.Linear(width, self.cells ** 2 * hog_bins)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, images: torch.Tensor, objective: bool = False):
        """Features; objective=True: HOG predictions at a random mask of mask_ratio, (predictions, mask)."""
        if not objective:
            return self.backbone(images)
        return self.predict(images, mask := self.random_mask(len(images), images.device)), mask

    def random_mask(self, batch: int, device=None) -> torch.Tensor:
        """A fresh mask (B, L) of this net's ratio and kind, 1 where masked."""
        if self.masking == "block":
            rows, columns = self.backbone.patch_embed.grid_size
            return block_masking(batch, rows, columns, self.mask_ratio, device=device)
        return random_masking(batch, self.backbone.patch_embed.num_patches, self.mask_ratio, device)[1]

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        return patch_hog(images, self.patch_size, self.hog_bins, self.cells)

    def predict(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        vit = self.backbone
        tokens = vit.patch_embed(images)  # (B, L, D)
        tokens = torch.where(mask.unsqueeze(-1).bool(), self.mask_token.to(tokens.dtype), tokens) + vit.pos_embed[:, 1:]
        cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(len(tokens), -1, -1)
        encoded = vit.norm(vit.blocks(torch.cat([cls, tokens], dim=1)))
        return self.predictor(encoded[:, 1:])  # (B, L, hog_dim)


# The builders take num_classes as every zoo entry does (`cnnkit models`, summaries build them all alike) and do not
# use it: a pretraining network has no classifier.
@register_model(family="ssl", task="pretrain")
def simclr(backbone: str = "fastnet", in_chans: int = 1, input_size=28, num_classes: int | None = None,
           projection_dim: int = 128, hidden_dim: int | None = None,
           backbone_args: dict | None = None) -> ContrastiveNet:
    """SimCLR (Chen et al. 2020): a zoo backbone without its head, and a projection MLP for NT-Xent."""
    return ContrastiveNet(backbone, in_chans, input_size, projection_dim, hidden_dim, backbone_args)


@register_model(family="ssl", task="pretrain")
def moco(backbone: str = "fastnet", in_chans: int = 1, input_size=28, num_classes: int | None = None,
         projection_dim: int = 128, hidden_dim: int | None = None, backbone_args: dict | None = None,
         queue_size: int = 4096,
         momentum: float = 0.99) -> MomentumContrastNet:
    """MoCo v2 (Chen et al. 2020): SimCLR's network plus a momentum key encoder and a queue of negative keys."""
    return MomentumContrastNet(backbone, in_chans, input_size, projection_dim, hidden_dim, backbone_args, queue_size,
                               momentum)


@register_model(family="ssl", task="pretrain")
def mae(backbone: str = "vit_mini", in_chans: int = 1, input_size=28, num_classes: int | None = None,
        mask_ratio: float = 0.75, decoder_dim: int = 64, decoder_depth: int = 2,
        backbone_args: dict | None = None) -> MaskedAutoencoder:
    """MAE (He et al. 2022): a ViT encoder on the visible patches and a light decoder that reconstructs pixels."""
    return MaskedAutoencoder(backbone, in_chans, input_size, mask_ratio, decoder_dim, decoder_depth,
                             backbone_args=backbone_args)


@register_model(family="ssl", task="pretrain")
def beit(backbone: str = "vit_mini", in_chans: int = 1, input_size=28, num_classes: int | None = None,
         mask_ratio: float = 0.4, hog_bins: int = 9, backbone_args: dict | None = None,
         masking: str = "random") -> MaskedFeatureNet:
    """BEiT-style masked image modelling, predicting the HOG features of masked patches (MaskFeat's targets)."""
    return MaskedFeatureNet(backbone, in_chans, input_size, mask_ratio, hog_bins, backbone_args, masking)
