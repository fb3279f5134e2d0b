"""Errors of exporting and running exported models (subclasses of cnnkit.errors.CnnkitError).

The CLI prints them as one message and exits with status 2, like every CnnkitError.
"""

from __future__ import annotations

from cnnkit.errors import CnnkitError


class ExportError(CnnkitError):
    """A model could not be exported, an exported file is unreadable, or a backend cannot run it."""


class ParityError(ExportError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance.

    Attributes:
        differences: Max abs difference of the logits per check, e.g. {"batch_1": 2e-7, "batch_4": 3e-3}.
        tolerance: The largest difference allowed.
    """

    def __init__(self, message: str, differences: dict[str, float], tolerance: float):
        super().__init__(message)
        self.differences, self.tolerance = differences, tolerance
