"""Stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth").

`DropPath` is timm's (`timm.layers.DropPath`): it zeroes the residual branch per sample in training and
rescales the kept ones by 1 / (1 - p), so nothing changes at evaluation time. Only the schedule is ours.
"""

from __future__ import annotations

from timm.layers import DropPath

from cnnkit.errors import ModelError

__all__ = ["DropPath", "drop_path_rates"]


def drop_path_rates(drop_path_rate: float, num_blocks: int) -> list[float]:
    """Per-block drop probabilities, increasing linearly with depth (Huang et al.'s linear decay rule).

    Block l of L (l = 1..L) is dropped with probability drop_path_rate * l / L, so the last block gets
    the full rate and the early blocks, whose features everything downstream uses, are rarely dropped.

    Args:
        drop_path_rate: Drop probability of the last block, in [0, 1).
        num_blocks: Number of residual blocks.

    Raises:
        ModelError: If drop_path_rate is outside [0, 1).
    """
    if not 0.0 <= drop_path_rate < 1.0:
        raise ModelError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
    return [drop_path_rate * (index + 1) / num_blocks for index in range(num_blocks)]
