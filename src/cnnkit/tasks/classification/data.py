"""Classification data: the dataset read, validation split off (seeded), normalisation from the training split.

Small images of in-memory datasets (Fashion-MNIST, IDX, folders that fit in memory) become one uint8 tensor
with batched augmentation (`TensorLoader`, the measured fast path); larger file datasets are decoded per
batch (`StreamingLoader`). Both loaders have the same interface.

A folder of class folders holding DICOM files (cnnkit.data.medical.classify) is first written as windowed
8-bit PNGs, split by patient (cached next to it); its window goes into the checkpoint's preprocessing
("medical"), so `predict` on a raw .dcm windows it the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from cnnkit.data import (ArrayDataset, FileSplit, FileSplits, StreamingLoader, TensorLoader, compute_mean_std,
                         fits_in_memory, load_dataset, train_val_split)
from cnnkit.data.preprocess import Preprocessing
from cnnkit.data.streaming import estimate_mean_std, infer_size_and_channels, scan_dataset
from cnnkit.engine.distributed import DistInfo
from cnnkit.errors import DataError, DatasetNotFoundError


@dataclass
class PreparedData:
    """Train/validation/test data and the preprocessing derived from the training split.

    The splits are in-memory `ArrayDataset`s, or `FileSplit`s whose files are decoded per batch
    (`data_mode=stream`, or `auto` when the decoded images would not fit in memory).
    """

    train: ArrayDataset | FileSplit
    val: ArrayDataset | FileSplit | None
    test: ArrayDataset | FileSplit | None
    classes: list[str]
    preprocessing: Preprocessing
    medical: dict | None = None  # the window of DICOM class folders (checkpoint preprocessing)


def prepare_data(config, preprocessing: Preprocessing | None = None) -> PreparedData:
    """Load the dataset, split off validation (seeded) and compute normalization from the training split.

    Args:
        config: The run's settings (data, data_mode, val_fraction, seed, image_size, channels).
        preprocessing: Known preprocessing (from a checkpoint): skips computing the statistics.
    """
    size = (config.image_size, config.image_size) if config.image_size else None
    channels = config.channels
    root, medical = _dataset_root(config)
    if preprocessing is not None:
        channels, size = preprocessing.channels, tuple(preprocessing.image_size)
    files = _scan_files(config, root)
    if files is not None:
        train_indices, val_indices = _val_split(config, root, files, medical)
        train = files.train.subset(train_indices)
        # From a sample of file headers; the in-memory path below decides again from every image.
        sampled_channels, sampled_size = infer_size_and_channels(train, channels=channels, size=size)
        total = len(files.train) + (len(files.test) if files.test is not None else 0)
        if config.data_mode == "stream" or not fits_in_memory(total, sampled_channels, sampled_size):
            val = files.train.subset(val_indices) if len(val_indices) else None
            if preprocessing is None:
                mean, std = estimate_mean_std(train, sampled_channels, sampled_size, seed=config.seed)
                preprocessing = Preprocessing(sampled_channels, sampled_size, tuple(mean), tuple(std))
            return PreparedData(train, val, files.test, list(files.classes), preprocessing, medical)
    splits = load_dataset(root, channels=channels, size=size, max_bad_fraction=config.max_bad_fraction)
    if medical is not None:  # by patient, from the file list (the PNGs cnnkit wrote all decode)
        files = files if files is not None else scan_dataset(root)
        if len(files.train) != len(splits.train):
            raise DataError(f"{root}: {len(files.train) - len(splits.train)} of the slices cnnkit wrote could not be "
                            f"read back; delete {root} so cnnkit writes them again")
        train_indices, val_indices = _val_split(config, root, files, medical)
    else:
        train_indices, val_indices = train_val_split(len(splits.train), config.val_fraction, config.seed,
                                                     labels=splits.train.labels)
    train = splits.train.subset(train_indices)
    val = splits.train.subset(val_indices) if len(val_indices) else None
    if preprocessing is None:
        mean, std = compute_mean_std(train.images)
        preprocessing = Preprocessing(train.channels, train.image_size, tuple(mean), tuple(std))
    return PreparedData(train, val, splits.test, list(splits.classes), preprocessing, medical)


def _val_split(config, root: str, files, medical: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation indices into the training files: by image (stratified, seeded), or by patient for the PNGs
    written from DICOM class folders (a patient's images never in both train and val)."""
    if medical is not None:
        from cnnkit.data.medical.classify import patient_val_split

        return patient_val_split(root, files.train.paths, config.val_fraction, config.seed)
    return train_val_split(len(files.train), config.val_fraction, config.seed, labels=files.train.labels)


def _dataset_root(config) -> tuple[str, dict | None]:
    """config.data, or the PNG folder written from DICOM class folders (and its window)."""
    from cnnkit.data.medical.classify import is_dicom_class_folder

    if not is_dicom_class_folder(config.data):
        return config.data, None
    from cnnkit.data.medical.classify import prepare_dicom_classes

    root = prepare_dicom_classes(config.data, config.window, config.seed)
    return str(root), {"window": config.window or "minmax", "picture": "windowed, 8-bit grey (middle frame)"}


def _scan_files(config, root: str | None = None) -> FileSplits | None:
    """The file lists of users' image data, or None where the data is in-memory only (Fashion-MNIST, IDX)."""
    if config.data_mode == "memory":
        return None
    try:
        return scan_dataset(root or config.data)
    except DatasetNotFoundError:
        raise
    except DataError:
        if config.data_mode == "stream":
            raise
        return None  # Fashion-MNIST / IDX files: load_dataset reads them (and reports real problems)


def make_loader(dataset: ArrayDataset | FileSplit, preprocessing: Preprocessing, config, device: torch.device,
                train: bool, dist_info: DistInfo = DistInfo()):
    """A TensorLoader (in-memory data) or StreamingLoader (files) with the same interface.

    Training: shuffled, augmented, full batches, each rank its shard, batch_size / world_size per rank
    (the global batch, and the LR tuned for it, stay the same). Evaluation: every sample once, in order;
    under DDP each rank takes every world_size-th sample.
    """
    if not train and dist_info.enabled:
        dataset = dataset.subset(torch.arange(dist_info.rank, len(dataset), dist_info.world_size))
    options = dict(
        batch_size=max(1, config.batch_size // dist_info.world_size) if train else max(config.batch_size, 512),
        mean=list(preprocessing.mean), std=list(preprocessing.std), shuffle=train,
        augment=config.augment_config() if train else None,
        drop_last=train, seed=config.seed, channels_last=config.channels_last, device=device,
        rank=dist_info.rank if train else 0, world_size=dist_info.world_size if train else 1,
        oversample=train and config.sampler == "oversample")
    if isinstance(dataset, ArrayDataset):
        return TensorLoader(dataset.images, dataset.labels, **options)
    workers = config.num_workers if config.num_workers >= 0 else min(8, max(0, (os.cpu_count() or 1) - 1))
    loader_class = StreamingLoader
    if getattr(config, "decode", "cpu") == "gpu":  # JPEGs decoded in batches on the device (cnnkit.data.gpu_decode)
        from cnnkit.data.gpu_decode import GpuJpegLoader as loader_class
    return loader_class(dataset, preprocessing.channels, tuple(preprocessing.image_size),
                        num_workers=workers, max_bad_fraction=config.max_bad_fraction, **options)
