"""MixUp and CutMix: train on blends of two images, with the labels blended in the same proportion.

- MixUp (Zhang et al. 2018): x = lam * x_i + (1 - lam) * x_j, y = lam * y_i + (1 - lam) * y_j,
  lam ~ Beta(alpha, alpha).
- CutMix (Yun et al. 2019): a box of x_j pasted into x_i; lam is then the area x_i keeps, measured
  after the box is clipped to the image, so the labels match the pixels exactly.

One lam per batch, the partner of sample i is sample B-1-i (the batch reversed), as in timm's
default batch mode. The targets become class probabilities (B, K); cross-entropy with label
smoothing accepts them (torch smooths the mixed distribution: (1 - s) * y + s / K), so MixUp,
CutMix and label smoothing compose correctly.

Randomness comes from torch's global generator, which the Trainer reseeds per epoch from
(seed, epoch): a resumed run mixes the same way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cnnkit.errors import ConfigError


class BatchMixer:
    """Applies MixUp or CutMix to a batch (when both are on, each batch picks one at random).

    Args:
        num_classes: K, for the one-hot targets.
        mixup_alpha: Beta(alpha, alpha) for MixUp's lam; 0 disables MixUp.
        cutmix_alpha: Beta(alpha, alpha) for CutMix's box area; 0 disables CutMix.
        probability: Chance that a batch is mixed at all.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0,
                 probability: float = 1.0):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ConfigError(f"mixup={mixup_alpha} and cutmix={cutmix_alpha} must be >= 0 (0 disables)")
        if not 0 <= probability <= 1:
            raise ConfigError(f"mix_probability={probability} must be in [0, 1]")
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.probability = probability

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) images and int64 (B,) labels -> mixed images and (B, K) float targets."""
        soft = F.one_hot(targets, self.num_classes).to(torch.float32)
        if not self.enabled or float(torch.rand(())) >= self.probability:
            return images, soft
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or float(torch.rand(())) < 0.5)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        partner = images.flip(0)
        if use_cutmix:
            images, lam = cutmix(images, partner, lam)
        else:
            images = images * lam + partner * (1 - lam)
        return images, soft * lam + soft.flip(0) * (1 - lam)


def cutmix(images: torch.Tensor, partner: torch.Tensor, lam: float) -> tuple[torch.Tensor, float]:
    """Paste a box of ``partner`` covering about 1 - lam of the area into ``images``; return the exact lam."""
    height, width = images.shape[-2:]
    cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
    centre_y, centre_x = int(torch.randint(height, ())), int(torch.randint(width, ()))
    top, bottom = max(centre_y - cut_h // 2, 0), min(centre_y + cut_h // 2, height)
    left, right = max(centre_x - cut_w // 2, 0), min(centre_x + cut_w // 2, width)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
    kept = 1 - (bottom - top) * (right - left) / (height * width)
    return mixed, kept
