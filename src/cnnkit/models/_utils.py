"""Argument checks shared by the model builders."""

from __future__ import annotations

from cnnkit.errors import ModelError


def image_size(input_size: int | tuple[int, int]) -> tuple[int, int]:
    """`input_size` as (height, width); an int means a square image.

    Raises:
        ModelError: If it is not a positive int or a pair of positive ints.
    """
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if len(size) != 2 or not all(isinstance(side, int) and side > 0 for side in size):
        raise ModelError(f"input_size must be a positive int or (height, width), got {input_size!r}")
    return size


def check_positive(name: str, value: int) -> None:
    """Raise ModelError unless `value` is a positive int (num_classes, in_chans ...)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ModelError(f"{name} must be a positive integer, got {value!r}")


def check_probability(name: str, value: float) -> None:
    """Raise ModelError unless 0 <= value < 1 (drop_rate ...)."""
    if not 0.0 <= value < 1.0:
        raise ModelError(f"{name} must be in [0, 1), got {value!r}")


def check_input_size(model_name: str, x, expected: tuple[int, int]) -> None:
    """Raise ModelError if the images in `x` (B, C, H, W) are not the size the model was built for."""
    if tuple(x.shape[-2:]) != expected:
        raise ModelError(f"{model_name} was built for {expected[0]}x{expected[1]} images, got "
                         f"{x.shape[-2]}x{x.shape[-1]}; build it with input_size={tuple(x.shape[-2:])}")
