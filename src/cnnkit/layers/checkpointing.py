"""Gradient (activation) checkpointing: keep fewer activations, recompute them during backward.

Training stores every layer's input for the backward pass; for big images that is most of the
memory. With checkpointing, each block of the network's main trunk keeps only its own input and
recomputes its insides when backward reaches it: activation memory falls to roughly one block's
worth plus the block boundaries, for about one extra forward pass of compute (~30% slower steps).
benchmarks/grad_checkpointing.py measures both on this machine.

`enable_grad_checkpointing(model)` uses timm's own `set_grad_checkpointing` where the model has it,
and otherwise wraps the blocks of the trunk (`features`, `stages`, `groups`, `layers`, `blocks`, `layer1..4`,
`trunk`) with torch.utils.checkpoint. Only `forward` is replaced, so parameter names and checkpoints
are unchanged. BatchNorm layers inside a checkpointed block see each batch twice in training (the
recomputation updates their running statistics again), as in timm and torchvision.
"""

from __future__ import annotations

import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from cnnkit.errors import ConfigError

_TRUNK_NAMES = ("features", "stages", "groups", "layers", "blocks", "trunk", "layer1", "layer2", "layer3", "layer4")


def _checkpointed(block: nn.Module):
    forward = block.forward

    def run(*args, **kwargs):
        if not block.training:
            return forward(*args, **kwargs)
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    return run


def enable_grad_checkpointing(model: nn.Module) -> int:
    """Checkpoint the trunk's blocks; returns how many blocks were wrapped (timm models: -1)."""
    if hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
        return -1
    blocks = []
    for name in _TRUNK_NAMES:
        trunk = getattr(model, name, None)
        if isinstance(trunk, (nn.Sequential, nn.ModuleList)):
            blocks.extend(trunk)
    if not blocks:
        raise ConfigError(f"grad_checkpointing: {type(model).__name__} has no block sequence named "
                          f"{', '.join(_TRUNK_NAMES)}; leave grad_checkpointing=false for this model")
    for block in blocks:
        block.forward = _checkpointed(block)
    return len(blocks)
