"""Losses for imbalanced classification: class weights and focal loss, for hard or soft targets.

Two remedies act on the loss (the third, oversampling, acts on the data: `cnnkit.data.loader`):

- **Class weights** scale each class's term of the loss, so a rare class's mistakes cost more.
  `inverse` weights are 1 / (number of training images of the class). `effective` weights follow
  Cui et al. 2019, "Class-Balanced Loss Based on Effective Number of Samples": n images of a class
  are worth only E(n) = (1 - beta^n) / (1 - beta) new ones (images overlap in what they teach), and
  the weight is 1 / E(n). beta = 0 gives equal weights, beta -> 1 gives `inverse`; the paper's
  good values are 0.99-0.9999. Both are normalised to mean 1 over the classes, so the loss keeps
  roughly the scale the learning rate was tuned for.
- **Focal loss** (Lin et al. 2017, "Focal Loss for Dense Object Detection") multiplies each
  image's cross-entropy by (1 - p)^gamma, p being the probability the model gives the true class:
  images already classified well (p near 1) contribute little, hard ones (often of rare classes)
  dominate. gamma = 0 is cross-entropy; the paper uses gamma = 2 and class weights as its alpha.
  This is the softmax (multi-class) form; the paper's is per-class sigmoid, for detection.

One function, `classification_loss`, computes all of them (cross-entropy is focal loss at
gamma = 0) for targets given either as class indices (B,) or as probabilities (B, K), which
MixUp/CutMix produce. With a target distribution q (the label-smoothed target) the loss of one image is

    loss_i = sum_k  q_ik * w_k * (1 - p_ik)^gamma * (-log p_ik)

and the batch loss is sum_i loss_i / sum_i (w . y_i), y_i being the unsmoothed target: the
weighted mean of PyTorch's `F.cross_entropy(weight=...)`. For class indices, gamma = 0 reproduces
`F.cross_entropy(logits, targets, weight=w, label_smoothing=s)` exactly (tested); the (1 - p_k)^gamma
factor on every class term (not only the true class's) is what makes the focal term well defined
for smoothed or mixed targets, and reduces to the paper's for one-hot targets.

Written here because torch has no softmax focal loss (torchvision's `sigmoid_focal_loss` is the
detection form) and F.cross_entropy's weighted mean differs between index and probability targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnnkit.errors import ConfigError

__all__ = ["CLASS_WEIGHT_MODES", "class_counts", "class_weights", "classification_loss"]

CLASS_WEIGHT_MODES = ("none", "inverse", "effective")
# (1 - p) is clamped to this before the power: for 0 < gamma < 1 the derivative of x^gamma is
# infinite at x = 0 (a perfectly confident, correct prediction) and would make the gradient NaN.
_MIN_ONE_MINUS_P = 1e-12


def class_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Images per class: (K,) int64 from integer labels (N,)."""
    return torch.bincount(torch.as_tensor(labels, dtype=torch.int64).reshape(-1), minlength=num_classes)


def class_weights(labels: torch.Tensor, num_classes: int, mode: str, beta: float = 0.999) -> torch.Tensor | None:
    """Per-class loss weights from the training labels, normalised to mean 1 over the classes.

    Args:
        labels: (N,) integer labels of the training split (never the validation or test split).
        num_classes: K.
        mode: "none" (returns None), "inverse" (w ~ 1 / n) or "effective" (w ~ (1 - beta) / (1 - beta^n)).
        beta: The effective-number hyperparameter, in [0, 1).

    Returns:
        (K,) float32 weights, or None for mode "none". A class with no training image gets weight 0
        (it never is a target; the mean is taken over the classes that occur).

    Example:
        counts (1, 3): inverse (1, 1/3) -> (1.5, 0.5); effective with beta 0.5: 1 / E(n) =
        (1 / 1, 1 / 1.75) -> (1.2727, 0.7273).
    """
    if mode not in CLASS_WEIGHT_MODES:
        raise ConfigError(f"class_weights={mode!r} is not one of {', '.join(CLASS_WEIGHT_MODES)}")
    if mode == "none":
        return None
    if not 0.0 <= beta < 1.0:
        raise ConfigError(f"class_weights_beta={beta} must be in [0, 1)")
    counts = class_counts(labels, num_classes).to(torch.float64)
    present = counts > 0
    if not present.any():
        raise ConfigError("class_weights: the training split has no labels to count")
    if mode == "inverse":
        raw = 1.0 / counts[present]
    else:  # effective number of samples: (1 - beta^n) / (1 - beta); its inverse is the weight
        raw = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts[present]))
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = raw / raw.mean()
    return weights.to(torch.float32)


def classification_loss(logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None,
                        label_smoothing: float = 0.0, gamma: float = 0.0) -> torch.Tensor:
    """Cross-entropy (gamma = 0) or focal loss, with optional class weights and label smoothing.

    Args:
        logits: (B, K) raw scores; computed in float32 whatever their dtype (autocast).
        targets: (B,) int64 class indices, or (B, K) float class probabilities (rows sum to 1),
            e.g. MixUp's lam * onehot(a) + (1 - lam) * onehot(b).
        weight: (K,) per-class weights (see `class_weights`), or None for equal weights.
        label_smoothing: s in [0, 1): the target becomes (1 - s) * y + s / K.
        gamma: Focal exponent >= 0; 0 is cross-entropy.

    Returns:
        The scalar weighted-mean loss (see the module docstring for the formula).
    """
    if gamma < 0:
        raise ConfigError(f"focal_gamma={gamma} must be >= 0")
    num_classes = logits.shape[-1]
    if not targets.dtype.is_floating_point and weight is None and gamma == 0:  # the plain case: one fused kernel
        return F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
    log_probs = F.log_softmax(logits.float(), dim=-1)  # (B, K)
    if targets.dtype.is_floating_point:
        if targets.shape != logits.shape:
            raise ConfigError(f"probability targets must have the logits' shape {tuple(logits.shape)}, "
                              f"got {tuple(targets.shape)}")
        target_probs = targets.float()  # (B, K)
    else:
        target_probs = F.one_hot(targets, num_classes).float()  # (B,) -> (B, K)
    smoothed = target_probs * (1.0 - label_smoothing) + label_smoothing / num_classes  # (B, K)
    terms = -log_probs  # (B, K): -log p_ik
    if gamma > 0:
        one_minus_p = -torch.expm1(log_probs)  # 1 - p, accurate for p near 1
        terms = terms * one_minus_p.clamp_min(_MIN_ONE_MINUS_P).pow(gamma)
    if weight is None:
        return (smoothed * terms).sum() / len(logits)
    weight = weight.to(device=logits.device, dtype=torch.float32)
    return (smoothed * terms * weight).sum() / (target_probs @ weight).sum()
