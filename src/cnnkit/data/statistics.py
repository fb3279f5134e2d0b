"""Normalisation statistics: which images are looked at, and their per-channel mean and std.

One module for every task's mean/std (hand-written: torchvision has no dataset-statistics helper, and
the numbers must be reproducible to the last bit, because the measured benchmark figures and every
checkpoint's preprocessing record depend on them):

- which images: ``sample_indices`` (a seeded sample, sorted or in drawn order) and ``spread_indices``
  (evenly spread, no randomness);
- how they are summed: ``PixelMoments``, per-channel sums of x and x^2 in float64 (summing 47 million
  squared values in float32 loses about 3 digits), reduced over every axis but the channel axis;
- what is returned: ``moments_mean_std`` turns the sums into (mean, std) with the caller's floors,
  unit and rounding.

The callers, each keeping the arithmetic it had before this module existed (the tests in
tests/test_data_consolidated.py compare them with frozen copies of the old code):

    compute_mean_std       classification, in memory: uint8 tensor, raw 0..255 sums in chunks, /255 at the end
    estimate_mean_std      classification, files: a sorted seeded sample decoded as the loader does, the
                           chunks' (mean, std) combined exactly
    segmentation.mean_std  a seeded sample in drawn order, float [0, 1] images (16-bit: min-max)
    tasks/detection/data.image_statistics   evenly spread RGB images, rounded to 4 decimals
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from cnnkit.data.images import decode_image
from cnnkit.errors import DataError

__all__ = ["PixelMoments", "compute_mean_std", "estimate_mean_std", "images_mean_std", "moments_mean_std",
           "sample_indices", "spread_indices"]

_CHUNK = 256  # images decoded per statistics chunk of estimate_mean_std: bounds memory at 256 decoded images


def sample_indices(total: int, count: int, seed: int, *, sort: bool = True) -> list[int]:
    """``count`` of ``range(total)`` drawn with a generator seeded by ``seed`` (all of them if fewer).

    Args:
        total: Number of items to draw from.
        count: Sample size.
        seed: Seed of ``torch.randperm``'s generator.
        sort: Return the sample in ascending order (file order); False keeps the drawn order, which
            for ``total <= count`` is a permutation of every index.
    """
    if sort:
        if total <= count:
            return list(range(total))
        return sorted(torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count].tolist())
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count].tolist()


def spread_indices(total: int, count: int) -> list[int]:
    """Up to ``count`` indices of ``range(total)``, evenly spread: every (total // count)-th from 0."""
    step = max(1, total // count)
    return list(range(0, total, step))[:count]


class PixelMoments:
    """Per-channel sums of x and x^2 (float64) and the pixel count, over images added one at a time.

    ``add`` takes one image (C, H, W) or a batch (N, C, H, W) of any dtype, converted to float64 as
    it comes (uint8 stays in 0..255, floats in their own units).
    """

    def __init__(self, channels: int):
        self.total = torch.zeros(channels, dtype=torch.float64)
        self.squares = torch.zeros(channels, dtype=torch.float64)
        self.count = 0  # pixels per channel

    def add(self, images: torch.Tensor) -> None:
        values = images.double()
        dims = (0, 2, 3) if values.dim() == 4 else (1, 2)  # every axis but the channel axis
        self.total += values.sum(dim=dims)
        self.squares += values.square().sum(dim=dims)
        self.count += values.numel() // values.shape[-3]

    def mean(self) -> torch.Tensor:
        return self.total / self.count

    def variance(self) -> torch.Tensor:
        """E[x^2] - E[x]^2 (population variance; may be slightly negative from rounding: clamp it)."""
        return self.squares / self.count - self.mean().square()


def moments_mean_std(moments: PixelMoments, *, variance_floor: float = 0.0, std_floor: float = 0.0,
                     unit: float = 1.0, decimals: int | None = None) -> tuple[list[float], list[float]]:
    """(mean, std) lists from ``moments``: std = max(sqrt(max(variance, variance_floor)), std_floor).

    Args:
        moments: The sums.
        variance_floor: Lower bound of the variance before the square root.
        std_floor: Lower bound of the std (e.g. 1e-3, so that normalising never divides by ~0).
        unit: Both are divided by it at the end (255 for raw uint8 sums).
        decimals: Round both to this many decimals (None: full float64).
    """
    mean = moments.mean()
    std = moments.variance().clamp_min(variance_floor).sqrt()
    if std_floor:
        std = std.clamp_min(std_floor)
    if unit != 1.0:
        mean, std = mean / unit, std / unit
    if decimals is not None:
        return [round(float(v), decimals) for v in mean], [round(float(v), decimals) for v in std]
    return mean.tolist(), std.tolist()


def compute_mean_std(images: torch.Tensor, chunk_size: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images, in [0, 1] units.

    Works in chunks of ``chunk_size`` images, so memory stays at one float64 chunk instead of a
    float copy of the whole dataset (188 MB for Fashion-MNIST's training set as float32).

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
    moments = PixelMoments(images.shape[1])
    for start in range(0, images.shape[0], chunk_size):
        moments.add(images[start : start + chunk_size])  # (n, C, H, W), summed in float64
    # Clamp at 0: rounding can make E[x^2] - E[x]^2 slightly negative for constant images.
    return moments_mean_std(moments, unit=255.0)


def estimate_mean_std(
    split,
    channels: int,
    size: tuple[int, int],
    max_images: int = 2000,
    seed: int = 0,
    num_workers: int | None = None,
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units from a seeded sample of a file split's images.

    Decodes up to ``max_images`` files (a sorted ``sample_indices``) as the streaming loader does
    (``decode_image``), skipping unreadable ones, and combines ``compute_mean_std`` of 256-image
    chunks exactly (memory: one chunk). With ``len(split) <= max_images``: ``compute_mean_std`` of
    all images, up to float64 rounding.

    Args:
        split: The training split (a ``FileSplit``; never the validation or test split).
        channels: 1 or 3.
        size: (height, width).
        max_images: Sample size.
        seed: Seed of the sample.
        num_workers: Decoding threads (Pillow releases the GIL); None uses min(8, CPU count).

    Raises:
        DataError: If no image of the sample can be decoded.
    """
    paths = [split.paths[index] for index in sample_indices(len(split), max_images, seed)]

    def decode(path: Path) -> torch.Tensor | None:
        try:
            return decode_image(path, channels, size)
        except DataError:
            return None

    # Chunks have equal pixel counts per image: combine their E[x] and E[x^2] weighted by images.
    count, first, second = 0, torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)
    with ThreadPoolExecutor(max_workers=num_workers or min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(paths), _CHUNK):
            images = [image for image in pool.map(decode, paths[start : start + _CHUNK]) if image is not None]
            if images:
                mean, std = (torch.tensor(values, dtype=torch.float64) for values in compute_mean_std(torch.stack(images)))
                count += len(images)
                first += len(images) * mean
                second += len(images) * (std.square() + mean.square())
    if not count:
        raise DataError(f"estimate_mean_std: none of the {len(paths)} sampled images could be decoded.")
    mean = first / count
    return mean.tolist(), (second / count - mean.square()).clamp_min(0.0).sqrt().tolist()


def images_mean_std(images: Iterable[torch.Tensor], channels: int, **options) -> tuple[list[float], list[float]]:
    """``moments_mean_std`` (same keyword options) of images (C, H, W) taken one at a time."""
    moments = PixelMoments(channels)
    for image in images:
        moments.add(image)
    return moments_mean_std(moments, **options)
