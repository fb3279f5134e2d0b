"""Optimizers and learning-rate schedules.

Schedules are plain functions of the optimizer step, wrapped in `torch.optim.lr_scheduler.LambdaLR`.
Because the LR depends only on (step, total steps), resuming is exact (restore the step count) and
resuming with more epochs simply stretches the remaining schedule over the new length.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from cnnkit.config import TrainConfig


def parameter_groups(model: nn.Module, weight_decay: float, lr: float | None = None,
                     head_names: set[str] | dict[str, float] | None = None, backbone_lr_ratio: float = 1.0) -> list[dict]:
    """Weights with decay, and norm parameters and biases (1-D tensors) without.

    Decaying BN/LayerNorm scales and biases only fights the normalisation and hurts accuracy
    (Goyal et al. 2017, "Accurate, Large Minibatch SGD"; the timm default does the same).
    With `head_names` (transfer learning), the backbone's groups get `backbone_lr_ratio` x `lr`; given as a
    dict of name -> multiplier instead (embed's margin head), those parameters get multiplier x `lr` and the
    others `lr`. Frozen parameters stay in the groups: they get no gradient, so optimizers skip them until
    released.
    """
    if isinstance(head_names, dict):
        scaled: dict[tuple[float, bool], list] = {}
        for name, parameter in model.named_parameters():
            scaled.setdefault((head_names.get(name, 1.0), parameter.ndim > 1), []).append(parameter)
        return [{"params": parameters, "weight_decay": weight_decay if decays else 0.0,
                 **({"lr": lr * multiplier} if lr is not None else {})}
                for (multiplier, decays), parameters in sorted(scaled.items())]
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        is_backbone = head_names is not None and name not in head_names
        groups.setdefault((is_backbone, parameter.ndim > 1), []).append(parameter)
    result = []
    for (is_backbone, decays), parameters in sorted(groups.items()):
        group = {"params": parameters, "weight_decay": weight_decay if decays else 0.0}
        if lr is not None:
            group["lr"] = lr * (backbone_lr_ratio if is_backbone else 1.0)
        result.append(group)
    if head_names is None:  # the plain case: [decay, no decay], in that order
        result.sort(key=lambda group: group["weight_decay"] == 0.0)
    return result


# Peak LR per 256 images of (global) batch. SGD 0.2: tuned for fastnet on Fashion-MNIST at batch 256
# (benchmarks/demo_accuracy.py); AdamW 2e-3: a common default for CNNs at this batch size.
BASE_LR_PER_256 = {"sgd": 0.2, "adamw": 2e-3}


def peak_lr(config: TrainConfig) -> float:
    """`config.lr`, or the linear scaling rule (Goyal et al. 2017): base LR x batch / 256.

    Scaling keeps small batches (e.g. small datasets of your own images) from diverging at an LR
    tuned for batch 256.
    """
    if config.lr is not None:
        return config.lr
    return BASE_LR_PER_256[config.optimizer] * config.batch_size * config.accumulate_steps / 256


def make_optimizer(model: nn.Module, config: TrainConfig,
                   head_names: set[str] | dict[str, float] | None = None) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum, or AdamW, with `peak_lr(config)` as the peak learning rate.

    Args:
        head_names: Parameters at the peak LR, the others at peak x config.backbone_lr_ratio (a pretrained
            backbone: cnnkit.transfer.head_parameter_names); or name -> LR multiplier (embed's margin head);
            None: every parameter at the peak LR.
    """
    lr = peak_lr(config)
    groups = parameter_groups(model, config.weight_decay, lr, head_names, config.backbone_lr_ratio)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=lr, betas=(config.momentum, 0.999))


def lr_factor_function(config: TrainConfig, steps_per_epoch: int,
                       planned_steps: Callable[[int], int] | None = None) -> Callable[[int], float]:
    """The LR multiplier (of the peak LR) as a function of the optimizer step.

    `planned_steps(step)`: the length of the schedule, asked at every step (a time budget re-plans it,
    cnnkit.engine.budget); default: config.epochs x steps_per_epoch.
    """
    fixed_total = max(1, config.epochs * steps_per_epoch)
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    floor = config.min_lr_ratio

    def decay(step: int) -> float:
        total_steps = max(1, planned_steps(step)) if planned_steps is not None else fixed_total
        progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))
        if config.schedule == "constant":
            return 1.0
        if config.schedule == "step":
            return config.step_gamma ** ((step // steps_per_epoch) // config.step_epochs)
        if config.schedule == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if config.schedule == "cosine_restarts":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * _sgdr_position(step / steps_per_epoch, config)))
        # onecycle: linear ramp from lr/25 to lr, then linear decay to lr*min_lr_ratio (Smith 2018;
        # linear annealing as in the fast CIFAR-10 recipes).
        peak = config.onecycle_pct * total_steps
        if step < peak:
            return 1 / 25 + (1 - 1 / 25) * step / peak
        return floor + (1 - floor) * max(0.0, (total_steps - step) / max(1.0, total_steps - peak))

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        return warm * decay(step)

    return factor


def _sgdr_position(epoch: float, config: TrainConfig) -> float:
    """Position in [0, 1) within the current SGDR cycle (Loshchilov & Hutter 2017)."""
    length = float(config.restart_epochs)
    while epoch >= length:
        epoch -= length
        length *= config.restart_mult
    return epoch / length


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-optimizer-step scheduler; call `.step()` after every `optimizer.step()`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor_function(config, steps_per_epoch))
