"""In-memory datasets and the small operations on them: subsets, splits, statistics.

A dataset that fits in memory is one uint8 tensor of images plus one int64 tensor of labels
(the airbench habit): indexing, shuffling and augmenting then are batched tensor operations,
and uint8 keeps Fashion-MNIST's 60 000 training images at 47 MB instead of 188 MB as float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

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


def train_val_split(
    num_samples: int,
    val_fraction: float,
    seed: int,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits ``range(num_samples)`` into train and validation indices, deterministically.

    The split depends only on (num_samples, val_fraction, seed, labels): the same arguments give
    the same split on every machine, so a resumed or repeated run validates on the same samples.

    Args:
        num_samples: Number of samples to split.
        val_fraction: Fraction in [0, 1) that goes to validation; the validation size is
            ``round(val_fraction * num_samples)``. 0 gives an empty validation set.
        seed: Seed of the torch.Generator that draws the permutation.
        labels: Optional (num_samples,) labels. When given, the split is stratified: each class
            contributes ``round(val_fraction * class_count)`` samples, so rare classes appear in
            validation in proportion.

    Returns:
        (train_indices, val_indices): sorted int64 tensors, disjoint, together covering
        ``range(num_samples)``. Sorted so that subsets keep the file order, which keeps them
        readable and memory access sequential.

    Raises:
        DataError: If val_fraction is outside [0, 1) or labels have the wrong length.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}. Use e.g. 0.1 for 10% validation.")
    generator = torch.Generator().manual_seed(seed)
    if labels is None:
        num_val = round(val_fraction * num_samples)
        permutation = torch.randperm(num_samples, generator=generator)
        val_indices = permutation[:num_val]
    else:
        labels = torch.as_tensor(labels)
        if labels.shape != (num_samples,):
            raise DataError(f"stratified split: labels have shape {tuple(labels.shape)}, expected ({num_samples},).")
        val_parts = []
        # Classes in sorted order and one generator: the draw order is fixed, so the split is too.
        for label in torch.unique(labels).tolist():
            class_indices = torch.nonzero(labels == label).flatten()
            num_val = round(val_fraction * class_indices.numel())
            order = torch.randperm(class_indices.numel(), generator=generator)
            val_parts.append(class_indices[order[:num_val]])
        val_indices = torch.cat(val_parts) if val_parts else torch.empty(0, dtype=torch.int64)
    is_val = torch.zeros(num_samples, dtype=torch.bool)
    is_val[val_indices] = True
    # nonzero returns ascending indices: both parts come out sorted.
    return torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()


def compute_mean_std(images: torch.Tensor, chunk_size: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images, in [0, 1] units.

    Works in chunks of ``chunk_size`` images, so memory stays at one float64 chunk instead of a
    float copy of the whole dataset (188 MB for Fashion-MNIST's training set as float32).
    Sums are accumulated in float64: summing 47 million squared values in float32 loses
    about 3 digits.

    Args:
        images: (N, C, H, W) uint8 tensor.
        chunk_size: Images per chunk.

    Returns:
        (mean, std): lists of C floats. std is the population standard deviation (divides by
        the number of pixels), the convention of torchvision's normalization constants.

    Raises:
        DataError: If images is not a non-empty (N, C, H, W) uint8 tensor.
    """
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[0] == 0:
        raise DataError(
            f"compute_mean_std needs a non-empty (N, C, H, W) uint8 tensor, got {images.dtype} of shape {tuple(images.shape)}."
        )
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk_size):
        chunk = images[start : start + chunk_size].to(torch.float64)  # (n, C, H, W)
        total += chunk.sum(dim=(0, 2, 3))
        total_squares += chunk.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    # Clamp: rounding can make E[x^2] - E[x]^2 slightly negative for constant images.
    variance = (total_squares / count - mean.square()).clamp_min(0.0)
    return (mean / 255.0).tolist(), (variance.sqrt() / 255.0).tolist()
