"""Segmentation data (cnnkit.data.segmentation): a scenes-style folder ({train,val,test}/images + masks,
classes.txt) or a Pascal VOC folder. Without a val split, `val_fraction` of the training images is held out
(seeded). Images are resized to `image_size` (default: the first training image's size)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from cnnkit.data.preprocess import Preprocessing
from cnnkit.data.segmentation import (SegmentationDataset, SegmentationFiles, check_masks,
                                      class_pixel_counts, has_split, image_channels, mean_std, read_image,
                                      scan_segmentation, segmentation_transform)
from cnnkit.data.sharded_loader import ShardedLoader
from cnnkit.data.splits import train_val_split
from cnnkit.errors import ConfigError


@dataclass
class SegmentationData:
    """The splits of a segmentation dataset and the preprocessing derived from its training split."""

    train: SegmentationFiles
    val: SegmentationFiles | None
    test: SegmentationFiles | None
    classes: list[str]
    preprocessing: Preprocessing


def prepare_data(config, preprocessing: Preprocessing | None = None, check: bool = True) -> SegmentationData:
    """Scan the splits, hold out validation images if the data has no val split, check masks, derive
    the channels, size and normalization (unless `preprocessing`, from a checkpoint, is given)."""
    train = scan_segmentation(config.data, "train")
    if has_split(config.data, "val"):
        val = scan_segmentation(config.data, "val", train.classes)
    elif config.val_fraction > 0:
        train_indices, val_indices = train_val_split(len(train), config.val_fraction, config.seed, min_val=1)
        train, val = train.subset(train_indices.tolist()), train.subset(val_indices.tolist())
    else:
        val = None
    test = scan_segmentation(config.data, "test", train.classes) if has_split(config.data, "test") else None
    ignore_index = config.ignore_index
    if ignore_index < len(train.classes):
        raise ConfigError(f"ignore_index={ignore_index} is one of the {len(train.classes)} class indices; "
                          "choose a value no class uses (255 by default)")
    if check:
        for files in (train, val):
            if files is not None:
                check_masks(files, ignore_index)
    if preprocessing is None:
        channels = config.channels or image_channels(train.pairs[0][0])
        size = (config.image_size,) * 2 if config.image_size else tuple(read_image(train.pairs[0][0], 1).shape[-2:])
        mean, std = mean_std(train, channels, seed=config.seed)
        preprocessing = Preprocessing(channels, size, tuple(mean), tuple(std))
    return SegmentationData(train, val, test, train.classes, preprocessing)


def make_loader(files: SegmentationFiles, preprocessing: Preprocessing, config, train: bool,
                dist_info=None) -> ShardedLoader:
    """A loader of normalized (images, masks) batches; training batches augmented as the config asks."""
    rank, world_size = (dist_info.rank, dist_info.world_size) if dist_info is not None else (0, 1)
    transform = segmentation_transform(tuple(preprocessing.image_size), preprocessing.mean, preprocessing.std,
                                       config.augment_config() if train else None, config.ignore_index)
    dataset = SegmentationDataset(files, preprocessing.channels, transform, config.ignore_index)
    workers = config.num_workers if config.num_workers >= 0 else min(4, max(0, (os.cpu_count() or 1) - 1))
    batch_size = max(1, config.batch_size // world_size) if train else config.batch_size
    return ShardedLoader(dataset, batch_size, train, config.seed, workers, rank, world_size)


def pixel_class_weights(files: SegmentationFiles, mode: str, beta: float, ignore_index: int) -> torch.Tensor | None:
    """Loss weights per class from the training split's pixel counts (class_weights=inverse|effective),
    normalised to mean 1 over the classes present: the classification recipe, counting pixels."""
    if mode == "none":
        return None
    counts = class_pixel_counts(files, ignore_index).double()
    present = counts > 0
    raw = 1 / counts[present] if mode == "inverse" else (1 - beta) / (1 - beta ** counts[present])
    weights = torch.zeros(len(counts), dtype=torch.float64)
    weights[present] = raw / raw.mean()
    return weights.float()
