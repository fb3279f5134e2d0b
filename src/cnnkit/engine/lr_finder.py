"""The learning-rate range test: `cnnkit lr-find`.

Leslie Smith's "LR range test" (Smith 2015, "Cyclical Learning Rates for Training Neural Networks",
section 3.3), as popularised by fast.ai: train for a few hundred steps while the learning rate grows
exponentially from tiny (1e-7) to huge (10), and record the loss at each step. Plotted against the LR
on a log axis, the loss first stays flat (the LR is too small to change anything), then falls (the
useful range), reaches a minimum, and shoots up (the LR is so large that training diverges).

A good peak LR sits in the falling part, well before the minimum: at the minimum the LR is already
on the edge of divergence. Two common readings of the curve are reported:

- **steepest descent**: the LR where the smoothed loss falls fastest per unit of log(LR);
- **minimum / 10**: one tenth of the LR at the lowest smoothed loss (fast.ai's `lr_min`).

The suggestion printed is the second (it is robust to a noisy curve); the first is shown beside it
and marked on the plot. Set the result as `lr=...` (the *peak* LR of the one-cycle or cosine schedule).
It is a starting point, not the optimum: measured on fastnet / Fashion-MNIST (the defaults, 100 steps),
the suggestion is ~2e-3 and the minimum ~2e-2, while the default one-cycle recipe was tuned to lr 0.2
(benchmarks/demo_accuracy.py; its warm-up from lr / 25 and the gradual rise let a trained-in network
take LRs that a sweep from random weights sees as the edge of divergence).

The raw loss of one batch is noisy, so it is smoothed by an exponential moving average with bias
correction (as Adam's moments: avg_t / (1 - beta^t)). A one-way average lags: it reports the loss of
about 1 / (1 - beta) steps ago, and fast.ai's beta = 0.98 on a 100-step sweep is a lag of half the
curve, which moves the minimum, and every suggestion, to too high an LR. So the curve that is drawn
and read is the average run forwards and then backwards (zero phase lag, as scipy's `filtfilt`),
with beta = 1 - 20 / steps by default (a window of about a twentieth of the sweep; 0.8 for 100 steps).
Losses above the highest of the first tenth of the sweep (the starting level) are clipped to it
before this smoothing: the spikes of a diverging run
(10x the loss and more) would otherwise pull the average around the minimum up, and the minimum left.
While sweeping, the forward average alone stops the test once it exceeds 4x its minimum, or the loss
is not finite.

The model, data pipeline (augmentation included), optimizer (its momentum, weight decay and
parameter groups) and precision are exactly those `cnnkit train` builds from the same settings, via
the task package's `setup` (`cnnkit.api.lr_find` builds them) and `cnnkit.engine.optim.make_optimizer`.
Only the LR schedule is replaced. Nothing is saved: the
weights are restored afterwards, so calling `lr_find` leaves the model as it was built.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from cnnkit.errors import ConfigError

__all__ = ["LRFindResult", "default_beta", "exponential_lrs", "plot_lr_find", "range_test", "smooth",
           "smooth_zero_phase", "suggest"]

DIVERGENCE_FACTOR = 4.0  # stop when the smoothed loss exceeds this multiple of its minimum (fast.ai's value)


@dataclass
class LRFindResult:
    """The recorded curve and the suggestions.

    Attributes:
        lrs: The LR of each step taken.
        losses: The raw training loss of each step.
        smoothed: The losses smoothed without lag (`smooth_zero_phase`).
        suggested_lr: One tenth of the LR at the minimum smoothed loss (the printed suggestion).
        steepest_lr: The LR where the smoothed loss falls fastest against log(LR); None if the curve
            is too short to tell.
        min_loss_lr: The LR at the minimum smoothed loss.
        stopped_early: Whether the loss diverged before the last step.
    """

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    suggested_lr: float | None = None
    steepest_lr: float | None = None
    min_loss_lr: float | None = None
    stopped_early: bool = False

    def summary(self) -> str:
        if self.suggested_lr is None:
            return "lr-find: too few steps to suggest a learning rate; run more --steps or lower --start-lr"
        steepest = f"{self.steepest_lr:.3g}" if self.steepest_lr is not None else "n/a"
        stop = "stopped when the loss diverged" if self.stopped_early else "reached --end-lr without diverging"
        return (f"lr-find: {len(self.lrs)} steps from {self.lrs[0]:.3g} to {self.lrs[-1]:.3g} ({stop})\n"
                f"  lowest smoothed loss {min(self.smoothed):.4f} at lr {self.min_loss_lr:.3g}\n"
                f"  steepest descent at lr {steepest}\n"
                f"suggested lr={self.suggested_lr:.3g} (minimum / 10): cnnkit train lr={self.suggested_lr:.3g} ...")


def exponential_lrs(start_lr: float, end_lr: float, num_steps: int) -> list[float]:
    """num_steps LRs growing geometrically from start_lr to end_lr (both included)."""
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"the LR range must satisfy 0 < start ({start_lr}) < end ({end_lr})")
    if num_steps < 2:
        raise ConfigError(f"--steps must be 2 or more, got {num_steps}")
    ratio = end_lr / start_lr
    return [start_lr * ratio ** (step / (num_steps - 1)) for step in range(num_steps)]


def smooth(losses: list[float], beta: float = 0.98) -> list[float]:
    """Bias-corrected exponential moving average: avg_t = beta avg_{t-1} + (1 - beta) x_t, over (1 - beta^t)."""
    average, result = 0.0, []
    for step, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        result.append(average / (1 - beta**step))
    return result


def smooth_zero_phase(losses: list[float], beta: float) -> list[float]:
    """`smooth` forwards, then backwards over the result: no lag, each point averaged with both neighbours."""
    return smooth(smooth(losses, beta)[::-1], beta)[::-1]


def default_beta(num_steps: int) -> float:
    """Smoothing for a sweep of num_steps: an averaging window of about num_steps / 20 steps."""
    return min(0.98, max(0.0, 1 - 20 / num_steps))


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float | None, float | None, float | None]:
    """(minimum / 10, steepest descent, LR at the minimum) of a smoothed curve.

    The steepest slope is looked for before the minimum only (after it the loss rises), skipping the
    first tenth of the curve (the noisy start, where nothing is learned yet).
    """
    if len(smoothed) < 5:
        return None, None, None
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    min_loss_lr = lrs[best]
    steepest_lr = None
    start = max(1, len(smoothed) // 10)
    if best - start >= 2:
        logs = [math.log(lr) for lr in lrs]
        # Central differences of loss against log(LR): d loss / d log lr at each point.
        slopes = {i: (smoothed[i + 1] - smoothed[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(start, best)}
        steepest_lr = lrs[min(slopes, key=slopes.__getitem__)]
    return min_loss_lr / 10, steepest_lr, min_loss_lr


def range_test(task, loader, optimizer: torch.optim.Optimizer, lrs: list[float], device: torch.device,
               dtype: torch.dtype | None = None, grad_clip_norm: float | None = None, beta: float | None = None,
               progress: bool = False) -> LRFindResult:
    """One optimizer step per LR in `lrs` on `task.model`, recording the loss; weights restored at the end.

    Args:
        task: A cnnkit Task (its `training_step` gives the loss, `to_device` moves a batch).
        loader: Training batches with `set_epoch` (cycled through as many epochs as needed).
        optimizer: Over task.model's parameters. Its groups' LRs are set each step, keeping their ratios
            to the largest (transfer learning's slower backbone stays slower). Its state (momentum)
            is not restored.
        lrs: The LR of each step (`exponential_lrs`).
        device, dtype: Where to run, and the autocast dtype (None: fp32).
        grad_clip_norm: Clip the gradient norm as training would.
        beta: Smoothing of the loss curve; None: `default_beta(len(lrs))`.
        progress: Show a progress bar.
    """
    beta = default_beta(len(lrs)) if beta is None else beta
    if not 0 <= beta < 1:
        raise ConfigError(f"smoothing beta must be in [0, 1), got {beta}")
    model = task.model
    saved = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    peak = max(group["lr"] for group in optimizer.param_groups)  # the config's `lr` (the head's, in transfer)
    ratios = [group["lr"] / peak for group in optimizer.param_groups]
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    result = LRFindResult()
    was_training = model.training
    model.train()
    batches = _endless(loader)
    bar = tqdm(total=len(lrs), desc="lr-find", unit="step", disable=None if progress else True, leave=False)
    try:
        for lr in lrs:
            for group, ratio in zip(optimizer.param_groups, ratios):
                group["lr"] = lr * ratio
            images, targets = task.to_device(*next(batches), device)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = task.training_step(model, images, targets)["loss"]
            optimizer.zero_grad(set_to_none=True)
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.unscale_(optimizer)
            if grad_clip_norm:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            value = float(loss.detach())
            result.lrs.append(lr)
            result.losses.append(value)
            running = smooth(result.losses, beta)  # forward only: the stop test cannot see the future
            bar.update()
            bar.set_postfix(lr=f"{lr:.2g}", loss=f"{running[-1]:.3f}")
            if not math.isfinite(value) or running[-1] > DIVERGENCE_FACTOR * min(running):
                result.stopped_early = lr != lrs[-1]
                break
    finally:
        bar.close()
        optimizer.zero_grad(set_to_none=True)
        model.load_state_dict(saved)
        model.train(was_training)
    finite = [i for i, value in enumerate(result.losses) if math.isfinite(value)]  # a NaN would spread both ways
    result.lrs = [result.lrs[i] for i in finite]
    result.losses = [result.losses[i] for i in finite]
    if result.losses:
        ceiling = max(result.losses[: max(1, len(result.losses) // 10)])  # clip divergence spikes (module docstring)
        result.smoothed = smooth_zero_phase([min(loss, ceiling) for loss in result.losses], beta)
    result.suggested_lr, result.steepest_lr, result.min_loss_lr = suggest(result.lrs, result.smoothed)
    return result


def _endless(loader):
    """Batches of epoch 0, 1, 2 ... for as long as asked."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def plot_lr_find(result: LRFindResult, path: str | Path, title: str = "") -> Path:
    """Loss against LR (log axis): raw losses faint, the smoothed curve bold, the suggestions marked.

    Also writes the numbers beside the PNG as JSON (same name, .json).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.plot(result.lrs, result.losses, color="0.75", linewidth=0.8, label="loss of each batch")
    axis.plot(result.lrs, result.smoothed, color="C0", linewidth=2, label="smoothed loss")
    marks = [(result.suggested_lr, "C2", "suggested (minimum / 10)"), (result.steepest_lr, "C1", "steepest descent"),
             (result.min_loss_lr, "C3", "minimum (too high: edge of divergence)")]
    for lr, colour, label in marks:
        if lr is not None:
            axis.axvline(lr, color=colour, linestyle="--", linewidth=1, label=f"{label}: {lr:.2g}")
    axis.set_xscale("log")
    finite = [value for value in result.smoothed if math.isfinite(value)]
    if finite:  # the diverging tail would squash the useful part of the curve
        low, high = min(finite + result.losses), finite[0]
        axis.set_ylim(low - 0.1 * (high - low + 1e-3), max(high, low) + 0.3 * (high - low + 1e-3))
    axis.set_xlabel("learning rate (log scale)")
    axis.set_ylabel("training loss")
    axis.set_title(title or "LR range test: pick an LR where the smoothed loss still falls steeply")
    axis.legend(fontsize=8)
    axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    path.with_suffix(".json").write_text(json.dumps(asdict(result), indent=2) + "\n")
    return path
