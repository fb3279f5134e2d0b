"""Segmentation data (cnnkit.data.segmentation): a scenes-style folder ({train,val,test}/images + masks,
classes.txt) or a Pascal VOC folder. Without a val split, `val_fraction` of the training images is held out
(seeded). Images are resized to `image_size` (default: the first training image's size).

A study layout (a studies CSV or patient folders of image + mask volumes, cnnkit.data.medical.studies) is
first written as such a folder of windowed axial slices / 2.5-D stacks, split by patient
(cnnkit.data.medical.slices.prepare_slices, cached next to the studies); its window and stack go into the
checkpoint's preprocessing ("medical"), so `predict` windows a raw DICOM or NIfTI the same way."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from cnnkit.data.preprocess import Preprocessing
from cnnkit.data.segmentation import (SegmentationDataset, SegmentationFiles, check_masks, class_balanced_weights,
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
    medical: dict | None = None  # window and slice stack of a study layout's slices (checkpoint preprocessing)


def prepare_data(config, preprocessing: Preprocessing | None = None, check: bool = True) -> SegmentationData:
    """Scan the splits, hold out validation images if the data has no val split, check masks, derive
    the channels, size and normalization (unless `preprocessing`, from a checkpoint, is given)."""
    root, medical = _dataset_root(config)
    train = scan_segmentation(root, "train")
    if has_split(root, "val"):
        val = scan_segmentation(root, "val", train.classes)
    elif medical is not None and config.val_fraction > 0:
        raise ConfigError(f"{config.data}: no study is in the val split (every study has a fixed split); slices of "
                          "one patient must not be split at random: give some studies split=val, or set "
                          "val_fraction=0 monitor=train_loss")
    elif config.val_fraction > 0:
        train_indices, val_indices = train_val_split(len(train), config.val_fraction, config.seed, min_val=1)
        train, val = train.subset(train_indices.tolist()), train.subset(val_indices.tolist())
    else:
        val = None
    test = scan_segmentation(root, "test", train.classes) if has_split(root, "test") else None
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
    return SegmentationData(train, val, test, train.classes, preprocessing, medical)


def _dataset_root(config) -> tuple[str, dict | None]:
    """The folder of slices to read: config.data, or the slices written from a study layout (and their window)."""
    from cnnkit.data.medical.studies import is_study_layout

    if not is_study_layout(config.data):
        return config.data, None
    from cnnkit.data.medical.slices import prepare_slices

    root = prepare_slices(config.data, config.window, config.slice_stack, config.val_fraction, config.seed,
                          config.empty_slice_fraction, config.voxel_spacing)
    return str(root), {"window": config.window or "minmax", "stack": config.slice_stack, "axis": "axial (RAS z)",
                       "spacing": config.voxel_spacing, "slice_image": "flipud(volume[:, :, z].T), windowed, 8-bit"}


def make_loader(files: SegmentationFiles, preprocessing: Preprocessing, config, train: bool,
                dist_info=None) -> ShardedLoader:
    """A loader of normalized (images, masks) batches; training batches augmented as the config asks."""
    rank, world_size = (dist_info.rank, dist_info.world_size) if dist_info is not None else (0, 1)
    transform = segmentation_transform(tuple(preprocessing.image_size), preprocessing.mean, preprocessing.std,
                                       config.augment_config() if train else None, config.ignore_index)
    dataset = SegmentationDataset(files, preprocessing.channels, transform, config.ignore_index)
    workers = config.num_workers if config.num_workers >= 0 else min(4, max(0, (os.cpu_count() or 1) - 1))
    batch_size = max(1, config.batch_size // world_size) if train else config.batch_size
    weights = class_balanced_weights(files, config.ignore_index) if train and config.sampler == "oversample" else None
    return ShardedLoader(dataset, batch_size, train, config.seed, workers, rank, world_size, weights=weights)


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
