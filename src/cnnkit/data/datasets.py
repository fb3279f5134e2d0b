"""In-memory datasets: one uint8 tensor of images, one int64 tensor of labels.

A dataset that fits in memory is one uint8 tensor of images plus one int64 tensor of labels
(the airbench habit): indexing, shuffling and augmenting then are batched tensor operations,
and uint8 keeps Fashion-MNIST's 60 000 training images at 47 MB instead of 188 MB as float32.

The seeded split (``train_val_split``, splits.py) and the statistics (``compute_mean_std``,
statistics.py) are shared with the file-based tasks and live in their own modules; they are
re-exported here, where they were first defined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cnnkit.data.splits import train_val_split
from cnnkit.data.statistics import compute_mean_std
from cnnkit.errors import DataError

__all__ = ["ArrayDataset", "train_val_split", "compute_mean_std"]


@dataclass
class ArrayDataset:
    """Images and labels held as two tensors.

    Attributes:
        images: (N, C, H, W) uint8, contiguous.
        labels: (N,) int64, each in ``range(len(classes))``.
        classes: Class names; ``classes[label]`` names a label.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        # Checked once here so that every consumer (loader, trainer, statistics) can rely on it.
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"ArrayDataset images must be a (N, C, H, W) uint8 tensor, got {self.images.dtype} "
                f"of shape {tuple(self.images.shape)}. Convert with images.to(torch.uint8) and add a channel axis."
            )
        if self.labels.dim() != 1 or self.labels.shape[0] != self.images.shape[0]:
            raise DataError(
                f"ArrayDataset has {self.images.shape[0]} images but labels of shape {tuple(self.labels.shape)}; "
                "expected one label per image."
            )
        self.images = self.images.contiguous()
        self.labels = self.labels.to(torch.int64)
        self.classes = list(self.classes)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        """Number of image channels (1 for grayscale, 3 for RGB)."""
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        """Image size as (height, width)."""
        return (self.images.shape[2], self.images.shape[3])

    def subset(self, indices: torch.Tensor | Sequence[int]) -> ArrayDataset:
        """Returns the samples at ``indices`` as a new dataset (copied, same classes).

        Args:
            indices: 1-D integer tensor or sequence of sample indices.
        """
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return ArrayDataset(self.images[indices], self.labels[indices], list(self.classes))
