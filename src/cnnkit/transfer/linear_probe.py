"""A linear probe: the best linear classifier on frozen features, fitted in closed form (up to L-BFGS).

Feature extraction trains one linear layer on features that do not change. That is multinomial logistic
regression, a convex problem with one optimum, so it is solved as one: the training images' features are
computed once (eval mode, fp32), standardised, and W, b minimise

    mean cross-entropy(standardised features @ W.T + b, labels) + l2/2 * |W|^2

by L-BFGS (torch.optim.LBFGS, strong-Wolfe line search) in float64, for each L2 strength of a small grid;
the validation images pick one (best accuracy, then lowest loss). The standardisation is folded into the
weights, so the result is an ordinary nn.Linear on the raw features. This is the protocol used to compare
frozen features (Kornblith, Shlens and Le 2019, "Do Better ImageNet Models Transfer Better?"; CLIP).

SGD on the same problem meets it badly conditioned (raw features of very different scales, a one-cycle peak
LR, checkpoints picked on a few validation images) and lands far from that optimum: see transfer.py.
Memory: every training feature is held at once (N x D float64), fine for the thousands of images
feature extraction is used with; for very large sets, use head_init=random.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from cnnkit.errors import ModelError

# L2 strengths tried by the linear probe (penalty l2/2 * |W|^2 on standardised features, added to the
# mean cross-entropy); the validation split picks one. Without validation data: DEFAULT_PROBE_L2, the
# value benchmarks/transfer_learning.py's validation splits picked most often (seeds 1, 2; seed 0: 1e-3).
PROBE_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
DEFAULT_PROBE_L2 = 1e-2


@dataclass
class ProbeFit:
    """A fitted linear probe: the head's weights for the raw features, and how it was chosen."""

    weight: torch.Tensor  # (K, D), for the un-standardised features
    bias: torch.Tensor  # (K,)
    l2: float
    train_accuracy: float
    val_accuracy: float | None  # None without validation data
    candidates: list[tuple[float, float, float]] = field(default_factory=list)  # (l2, val acc, val loss)

    def summary(self) -> str:
        val = f", val accuracy {self.val_accuracy:.4f}" if self.val_accuracy is not None else " (no val split)"
        return (f"linear probe: L-BFGS logistic regression, l2 {self.l2:g}: train accuracy "
                f"{self.train_accuracy:.4f}{val}")


@torch.no_grad()
def head_features(model: nn.Module, head: nn.Module, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """What `head` (the model's classifier layer) sees for every image of `loader`, in eval mode, fp32.

    Returns:
        (features (N, D), labels (N,)), on the CPU.
    """
    if not isinstance(head, nn.Linear) or head.bias is None:
        raise ModelError(f"head_init=probe needs an nn.Linear head with a bias; {type(model).__name__}'s is "
                         f"{head}: use head_init=random")
    device = next(model.parameters()).device
    captured, labels = [], []
    hook = head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].float().flatten(1)))
    was_training = model.training
    model.eval()
    try:
        for images, targets in loader:
            model(images.to(device))
            labels.append(targets.cpu())
    finally:
        hook.remove()
        model.train(was_training)
    return torch.cat(captured).cpu(), torch.cat(labels)


def _logistic_regression(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                         l2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin over (W, b) of mean CE(features @ W.T + b, labels) + l2/2 |W|^2, by L-BFGS (convex: one optimum)."""
    weight = torch.zeros(num_classes, features.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=500, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(features @ weight.T + bias, labels) + 0.5 * l2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


def fit_linear_probe(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor] | None,
                     num_classes: int, grid: tuple[float, ...] = PROBE_L2_GRID) -> ProbeFit:
    """Fit a linear classifier to frozen features: standardise, then L2 logistic regression per `grid` value.

    Args:
        train: (features (N, D), labels (N,)) of the training images.
        val: The same for the validation images (picks the L2 strength: best accuracy, then lowest
            loss), or None to use DEFAULT_PROBE_L2.
        num_classes: K, the number of outputs.
        grid: The L2 strengths to try.

    Returns:
        A ProbeFit whose weight/bias apply to the raw features (standardisation folded in).
    """
    features, labels = train[0].double(), train[1].long()
    mean, std = features.mean(0), features.std(0, correction=0).clamp_min(1e-6)  # dead ReLU channel: weight 0
    standardised = (features - mean) / std
    candidates, best = [], None
    for l2 in (grid if val is not None else (DEFAULT_PROBE_L2,)):
        weight, bias = _logistic_regression(standardised, labels, num_classes, l2)
        score = (0.0, 0.0)
        if val is not None:
            logits = ((val[0].double() - mean) / std) @ weight.T + bias
            accuracy = (logits.argmax(1) == val[1]).double().mean().item()
            loss = nn.functional.cross_entropy(logits, val[1].long()).item()
            candidates.append((l2, accuracy, loss))
            score = (accuracy, -loss)
        if best is None or score > best[0]:
            best = (score, l2, weight, bias)
    _, l2, weight, bias = best
    train_accuracy = ((standardised @ weight.T + bias).argmax(1) == labels).double().mean().item()
    # logits = ((x - mean) / std) @ W.T + b = x @ (W / std).T + (b - W @ (mean / std))
    return ProbeFit((weight / std).float(), (bias - weight @ (mean / std)).float(), l2, train_accuracy,
                    best[0][0] if val is not None else None, candidates)
