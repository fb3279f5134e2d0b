"""Contracts of the in-memory batch loader and its batched augmentations."""

from __future__ import annotations

import pytest
import torch

from cnnkit.data import AugmentConfig, TensorLoader
from cnnkit.data.augment import RandomHorizontalFlip, RandomTranslate, translate_by_gather
from cnnkit.errors import ConfigError

torch.set_num_threads(1)

MEAN, STD = [0.5], [0.25]


def identified_images(count: int, size: int = 12, border: int = 2) -> torch.Tensor:
    """(count, 1, size, size) uint8 images, black border, a random interior unique to each image."""
    generator = torch.Generator().manual_seed(1)
    images = torch.zeros((count, 1, size, size), dtype=torch.uint8)
    images[:, :, border:-border, border:-border] = torch.randint(
        1, 256, (count, 1, size - 2 * border, size - 2 * border), dtype=torch.uint8, generator=generator
    )
    return images


def to_uint8(batch: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    """Inverts the loader's normalization."""
    mean_tensor = torch.tensor(mean).view(1, -1, 1, 1)
    std_tensor = torch.tensor(std).view(1, -1, 1, 1)
    return ((batch * std_tensor + mean_tensor) * 255).round().to(torch.uint8)


def make_loader(images, labels=None, **overrides) -> TensorLoader:
    arguments = dict(batch_size=4, mean=MEAN, std=STD, shuffle=True, augment=None, drop_last=False, seed=0)
    arguments.update(overrides)
    labels = torch.arange(len(images)) if labels is None else labels
    return TensorLoader(images, labels, **arguments)


def collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(loader)
    return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])


def test_evaluation_order_gives_every_sample_once_unchanged():
    images = identified_images(10)
    loader = make_loader(images, shuffle=False)
    assert len(loader) == 3
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x, y = collect(loader)
    assert x.dtype == torch.float32 and x.shape == (10, 1, 12, 12)
    assert y.dtype == torch.int64 and y.tolist() == list(range(10))
    assert torch.equal(to_uint8(x), images)


def test_shuffled_epoch_has_every_sample_once_and_drop_last_drops():
    images = identified_images(10)
    x, y = collect(make_loader(images))
    assert sorted(y.tolist()) == list(range(10)) and y.tolist() != list(range(10))
    assert torch.equal(to_uint8(x), images[y])  # labels stay with their images
    dropping = make_loader(images, drop_last=True)
    assert len(dropping) == 2 and [len(y) for _, y in dropping] == [4, 4]


def test_set_epoch_determines_order_and_augmentation():
    images = identified_images(16)
    augment = AugmentConfig(hflip=True, translate=2)
    loader = make_loader(images, augment=augment, seed=7)
    loader.set_epoch(3)
    first_x, first_y = collect(loader)
    fresh = make_loader(images, augment=augment, seed=7)  # a resumed run
    fresh.set_epoch(3)
    again_x, again_y = collect(fresh)
    assert torch.equal(first_x, again_x) and torch.equal(first_y, again_y)
    loader.set_epoch(4)
    other_x, other_y = collect(loader)
    assert not torch.equal(first_y, other_y)
    # Without set_epoch, each iteration moves on: the one after epoch 4 is epoch 5.
    next_x, _ = collect(loader)
    fresh.set_epoch(5)
    assert torch.equal(next_x, collect(fresh)[0])
    other_seed = make_loader(images, augment=augment, seed=8)
    other_seed.set_epoch(3)
    assert not torch.equal(collect(other_seed)[1], first_y)


def all_variants(image: torch.Tensor, shift: int) -> list[torch.Tensor]:
    """Every flip/translate result of one (1, H, W) image with zero padding."""
    padded = torch.nn.functional.pad(image, (shift,) * 4)
    height, width = image.shape[-2:]
    variants = []
    for source in (padded, padded.flip(-1)):
        for offset_y in range(2 * shift + 1):
            for offset_x in range(2 * shift + 1):
                variants.append(source[:, offset_y : offset_y + height, offset_x : offset_x + width])
    return variants


@pytest.mark.parametrize("augment", [AugmentConfig(hflip=True), AugmentConfig(translate=2, translate_padding="zeros"),
                                     AugmentConfig(hflip=True, translate=1, translate_padding="zeros")])
def test_augmentation_changes_images_but_keeps_shape_and_labels(augment):
    images = identified_images(64)
    loader = make_loader(images, augment=augment, batch_size=16)
    x, y = collect(loader)
    assert x.shape == (64, 1, 12, 12) and sorted(y.tolist()) == list(range(64))
    augmented = to_uint8(x)
    changed = 0
    for output, label in zip(augmented, y.tolist()):
        # The image is a flip/shift of *its own label's* image: the pairing survived reordering.
        assert any(torch.equal(output, variant) for variant in all_variants(images[label], augment.translate))
        changed += not torch.equal(output, images[label])
    assert changed > 64 // 3


def test_reflect_translation_pads_by_reflection():
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4)
    translate = RandomTranslate(1, "reflect")
    shifted, _ = translate.apply(image, torch.zeros(1), torch.tensor([[0, 0]]))  # window at the top-left corner
    assert shifted[0, 0, 0].tolist() == [5, 4, 5, 6] and shifted[0, 0, 1].tolist() == [1, 0, 1, 2]
    with pytest.raises(ConfigError, match="translate"):
        RandomTranslate(-1)


def test_cpu_and_gpu_strategies_agree():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8, generator=generator)
    labels = torch.arange(32)
    translate = RandomTranslate(2, "zeros")
    offsets = translate.sample(32, generator)
    grouped, grouped_labels = translate.apply(images, labels, offsets)
    gathered = translate_by_gather(translate._pad(images), offsets, (8, 8))  # the CUDA form, run on the CPU
    assert torch.equal(grouped, gathered[grouped_labels])
    flip = RandomHorizontalFlip()
    flags = flip.sample(32, generator)
    flipped, flipped_labels = flip.apply(images, labels, flags)
    expected = torch.where(flags.view(-1, 1, 1, 1), images.flip(-1), images)
    assert torch.equal(flipped, expected[flipped_labels])


def test_two_ranks_shard_disjointly_and_completely():
    images = identified_images(10)
    rank_labels = []
    for rank in range(2):
        loader = make_loader(images, rank=rank, world_size=2, batch_size=2)
        loader.set_epoch(1)
        rank_labels.append(collect(loader)[1].tolist())
    assert len(rank_labels[0]) == len(rank_labels[1]) == 5
    assert set(rank_labels[0]).isdisjoint(rank_labels[1]) and sorted(rank_labels[0] + rank_labels[1]) == list(range(10))
    single = make_loader(images, batch_size=10)
    single.set_epoch(1)
    assert [value for pair in zip(*rank_labels) for value in pair] == collect(single)[1].tolist()  # same permutation


def test_uneven_shards_have_equal_batch_counts():
    images = identified_images(11)
    padded = [make_loader(images, rank=rank, world_size=2, batch_size=4) for rank in range(2)]
    assert [len(loader) for loader in padded] == [2, 2]
    labels = [collect(loader)[1].tolist() for loader in padded]
    assert [len(part) for part in labels] == [6, 6] and set(labels[0]) | set(labels[1]) == set(range(11))
    truncated = [make_loader(images, rank=rank, world_size=2, batch_size=2, drop_last=True) for rank in range(2)]
    assert [len(loader) for loader in truncated] == [2, 2]
    parts = [collect(loader)[1].tolist() for loader in truncated]
    assert len(set(parts[0] + parts[1])) == 8


def test_normalization_of_constant_images_and_channels_last():
    images = torch.full((6, 3, 4, 4), 51, dtype=torch.uint8)  # 51 / 255 = 0.2
    mean, std = [0.2, 0.1, 0.6], [0.5, 0.25, 0.2]
    loader = make_loader(images, mean=mean, std=std, channels_last=True, batch_size=6)
    x, _ = next(iter(loader))
    assert x.is_contiguous(memory_format=torch.channels_last)
    expected = [0.0, 0.4, -2.0]  # (0.2 - mean) / std
    for channel in range(3):
        assert x[:, channel].mean().item() == pytest.approx(expected[channel], abs=1e-6)
        assert x[:, channel].std().item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="one value per channel"):
        make_loader(images, mean=[0.5], std=[0.5])
