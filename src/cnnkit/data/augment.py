"""Batched augmentations of uint8 image batches: one tensor operation per batch, no per-sample Python.

Every augmentation is a ``BatchAugmentation``: ``sample`` draws the random parameters of many
samples at once on the CPU (the loader draws a whole epoch's up front, from a generator seeded
by (seed, epoch), so a resumed run repeats them exactly), and ``apply`` transforms a batch
with its parameters. Parameters and all bookkeeping stay on the CPU, so ``apply`` never reads
a GPU value back: no device synchronization per batch.

Adding an augmentation: write a class with ``sample`` and ``apply``, add a field to
``AugmentConfig``, and one line to ``build_augmentations``. Flips and translation live here;
the affine/crop warp, colour jitter, random erasing and the AutoAugment-family policies in
``augment_ops.py``.

Strategies measured (one CPU thread, ``torch.set_num_threads(1)``, development machine; microseconds
per batch of 512 uint8 images, including the padding; the scripts were throwaway micro-timings):

=========================================  =======  =======  =======  =======
operation                                  1x28x28, t=2      3x32x32, t=4
-----------------------------------------  ----------------  ----------------
padding                                    zeros    reflect  zeros    reflect
=========================================  =======  =======  =======  =======
crop: sort batch by offset, slice copies   234      296      611      851
crop: index_copy per offset group          463      530      1582     1782
crop: one ``take``, per-sample indices     531      634      1981     2150
crop: two ``torch.gather`` (rows, cols)    688      749      2694     2914
crop: airbench's boolean mask per offset   768      831      2709     2907
crop: advanced indexing ``p[b, r, c]``     1368     -        -        -
crop: ``F.unfold`` windows                 25620    -        -        -
flip: sort, flip one contiguous slice      55                110
flip: masked assignment ``x[m] = ...``     212               -
flip: ``torch.where(m, x.flip(-1), x)``    341               1100
=========================================  =======  =======  =======  =======

So on the CPU both ops *reorder the batch* (labels follow) to make each group of equal
parameters one contiguous slice. The order of samples inside a batch carries no meaning for
training. On CUDA, where every slice is a kernel launch, the gather/where forms are used
(a constant handful of kernels per batch).
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
import torch.nn.functional as F

from cnnkit.errors import ConfigError

__all__ = ["AUTO_AUGMENT_POLICIES", "AugmentConfig", "BatchAugmentation", "RandomFlip", "RandomHorizontalFlip",
           "RandomTranslate", "build_augmentations"]

from cnnkit.config import AUTO_AUGMENT_POLICIES, AugmentConfig  # the settings live with the config


class BatchAugmentation(Protocol):
    """One batched augmentation (see the module docstring)."""

    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        """Random parameters of ``num_samples`` samples, (num_samples, ...) on the CPU."""
        ...

    def apply(self, images: torch.Tensor, labels: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Augments a uint8 (B, C, H, W) batch; may reorder it, with labels reordered alike."""
        ...


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copies a small CPU index tensor to ``device`` without blocking the host."""
    if device.type == "cpu":
        return tensor
    if device.type == "cuda":
        # Pinned source + non_blocking: the copy is queued on the stream, the host does not wait.
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _group_order(keys: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, list[int]]:
    """Stable order that sorts ``keys`` (CPU, values in range(num_groups)), and the group sizes."""
    order = torch.argsort(keys, stable=True)
    counts = torch.bincount(keys, minlength=num_groups).tolist()  # CPU tensor: no device sync
    return order, counts


class RandomFlip:
    """Flips each image with probability ``probability``: left-right (``dim=-1``) or upside down (``dim=-2``)."""

    def __init__(self, probability: float = 0.5, dim: int = -1):
        self.probability, self.dim = probability, dim

    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(num_samples, generator=generator) < self.probability  # (N,) bool

    def apply(self, images: torch.Tensor, labels: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.device.type != "cpu":
            flip = _to_device(params, images.device).view(-1, 1, 1, 1)
            return torch.where(flip, images.flip(self.dim), images), labels
        order, (num_kept, _) = _group_order(params.to(torch.int64), 2)
        images, labels = images.index_select(0, order), labels.index_select(0, order)
        # After sorting, the flipped samples are the contiguous tail of the batch.
        images[num_kept:] = images[num_kept:].flip(self.dim)
        return images, labels


class RandomHorizontalFlip(RandomFlip):
    """Flips each image left-right with probability ``probability``."""

    def __init__(self, probability: float = 0.5):
        super().__init__(probability, dim=-1)


class RandomTranslate:
    """Pads by ``max_shift`` and crops back at a random offset: a shift of up to ``max_shift`` pixels."""

    def __init__(self, max_shift: int, padding: Literal["reflect", "zeros"] = "reflect"):
        if max_shift < 0:
            raise ConfigError(f"augment.translate must be >= 0 pixels, got {max_shift}.")
        if padding not in ("reflect", "zeros"):
            raise ConfigError(f"augment.translate_padding must be 'reflect' or 'zeros', got {padding!r}.")
        self.max_shift = max_shift
        self.padding = padding

    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        # (N, 2): crop offsets (dy, dx) into the padded image, each in 0..2*max_shift.
        return torch.randint(0, 2 * self.max_shift + 1, (num_samples, 2), generator=generator)

    def _pad(self, images: torch.Tensor) -> torch.Tensor:
        shift = self.max_shift
        if self.padding == "reflect" and min(images.shape[-2:]) <= shift:
            raise ConfigError(
                f"augment.translate={shift} with reflect padding needs images larger than {shift} pixels, "
                f"got {tuple(images.shape[-2:])}. Use a smaller translate or translate_padding='zeros'."
            )
        mode = "reflect" if self.padding == "reflect" else "constant"
        return F.pad(images, (shift, shift, shift, shift), mode=mode)  # (B, C, H+2s, W+2s)

    def apply(self, images: torch.Tensor, labels: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.max_shift == 0:
            return images, labels
        if images.device.type != "cpu":
            return translate_by_gather(self._pad(images), params, images.shape[-2:]), labels
        width = 2 * self.max_shift + 1
        order, counts = _group_order(params[:, 0] * width + params[:, 1], width * width)
        images, labels = images.index_select(0, order), labels.index_select(0, order)
        padded = self._pad(images)
        height, image_width = images.shape[-2:]
        output = torch.empty_like(images)
        start = 0
        for group, count in enumerate(counts):
            if count:
                offset_y, offset_x = divmod(group, width)
                stop = start + count
                output[start:stop] = padded[start:stop, :, offset_y : offset_y + height, offset_x : offset_x + image_width]
                start = stop
        return output, labels


def translate_by_gather(padded: torch.Tensor, offsets: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
    """Crops ``size`` windows at per-sample ``offsets`` (B, 2) out of ``padded`` (B, C, Hp, Wp), order kept.

    One ``take`` with linear indices: a fixed number of kernels whatever the offsets, the
    right form for a GPU.
    """
    batch, channels, padded_height, padded_width = padded.shape
    height, width = size
    device = padded.device
    offsets = _to_device(offsets, device)
    pixel = torch.arange(height, device=device).view(-1, 1) * padded_width + torch.arange(width, device=device)  # (H, W)
    start = offsets[:, 0] * padded_width + offsets[:, 1]  # (B,)
    plane = torch.arange(batch * channels, device=device).view(batch, channels) * (padded_height * padded_width)  # (B, C)
    index = (plane + start.view(-1, 1)).view(batch, channels, 1, 1) + pixel  # (B, C, H, W)
    return padded.reshape(-1).take(index)


def build_augmentations(config: AugmentConfig | None) -> list[BatchAugmentation]:
    """The batched augmentations an ``AugmentConfig`` asks for, in the order they are applied:
    flips, translation, one affine/crop warp, the AutoAugment-family policy, colour, erasing last."""
    if config is None:
        return []
    from cnnkit.data.augment_ops import ColorJitter, PolicyAugment, RandomErasing, RandomWarp

    augmentations: list[BatchAugmentation] = []
    if config.hflip:
        augmentations.append(RandomFlip(dim=-1))
    if config.vflip:
        augmentations.append(RandomFlip(dim=-2))
    if config.translate:
        augmentations.append(RandomTranslate(config.translate, config.translate_padding))
    if config.rotate or config.scale or config.shear or config.resized_crop:
        augmentations.append(RandomWarp(config.rotate, config.scale, config.shear, config.resized_crop))
    if config.auto_augment != "none":
        augmentations.append(PolicyAugment(config.auto_augment))
    if config.brightness or config.contrast or config.saturation or config.hue:
        augmentations.append(ColorJitter(config.brightness, config.contrast, config.saturation, config.hue))
    if config.random_erasing:
        augmentations.append(RandomErasing(config.random_erasing))
    return augmentations
