"""Datasets and the data pipeline: files -> one uint8 tensor -> normalized, augmented batches.

``load_dataset`` turns a dataset spec (a name, a folder or a CSV) into an in-memory
``DatasetSplits``; ``TensorLoader`` cuts batches from it. For data too large for memory,
``scan_dataset`` lists the files and ``StreamingLoader`` decodes them per batch (``streaming.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnkit.data.augment import AugmentConfig
from cnnkit.data.datasets import ArrayDataset, compute_mean_std, train_val_split
from cnnkit.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from cnnkit.data.fashion_mnist import files_in as fashion_mnist_files_in
from cnnkit.data.file_dataset import FileDataset, collate_skip_bad
from cnnkit.data.folder import SkippedImagesWarning, fits_in_memory, load_csv, load_image_folder
from cnnkit.data.idx import read_idx
from cnnkit.data.images import IMAGE_EXTENSIONS, decode_image
from cnnkit.data.listing import read_csv_index, scan_image_folder
from cnnkit.data.loader import TensorLoader
from cnnkit.data.streaming import (
    FileSplit,
    FileSplits,
    StreamingLoader,
    estimate_mean_std,
    infer_size_and_channels,
    scan_dataset,
)
from cnnkit.errors import DataError, DatasetNotFoundError

__all__ = [
    "ArrayDataset",
    "AugmentConfig",
    "DatasetSplits",
    "FASHION_MNIST_CLASSES",
    "FileDataset",
    "FileSplit",
    "FileSplits",
    "IMAGE_EXTENSIONS",
    "SkippedImagesWarning",
    "StreamingLoader",
    "TensorLoader",
    "collate_skip_bad",
    "compute_mean_std",
    "decode_image",
    "estimate_mean_std",
    "fits_in_memory",
    "infer_size_and_channels",
    "load_csv",
    "load_dataset",
    "load_fashion_mnist",
    "load_image_folder",
    "read_csv_index",
    "read_idx",
    "scan_dataset",
    "scan_image_folder",
    "train_val_split",
]

FASHION_MNIST_NAMES = ("fashion-mnist", "fashion_mnist", "fmnist")

ACCEPTED_SPECS = (
    "Accepted dataset specs:\n"
    "  - fashion-mnist (also fashion_mnist, fmnist)\n"
    "  - a folder holding the four Fashion-MNIST IDX files (train-images-idx3-ubyte.gz ...)\n"
    "  - a folder with train/ and test/ subfolders, each with one subfolder per class\n"
    "  - a folder with one subfolder per class (train split only)\n"
    "  - a .csv file with header 'path,label' (train split only)"
)


@dataclass
class DatasetSplits:
    """A dataset's splits, decoded into memory.

    Attributes:
        train: The training split (take a validation split from it with ``train_val_split``).
        test: The test split, or None when the source has none.
        classes: Class names; labels of both splits index this list.
        name: A short name for logs and run records.
    """

    train: ArrayDataset
    test: ArrayDataset | None
    classes: list[str]
    name: str


def _adapt(dataset: ArrayDataset, channels: int | None, size: tuple[int, int] | None, chunk_size: int = 4096) -> ArrayDataset:
    """Converts a decoded dataset to ``channels`` and ``size`` (None keeps what it has)."""
    images = dataset.images
    if channels is not None and channels != images.shape[1]:
        if (images.shape[1], channels) != (1, 3):
            raise DataError(f"cannot convert {images.shape[1]}-channel images to {channels} channels; use channels=1 or 3.")
        images = images.expand(-1, 3, -1, -1).contiguous()  # gray -> RGB: repeat the channel
    if size is not None and tuple(size) != tuple(images.shape[-2:]):
        resized = torch.empty((images.shape[0], images.shape[1], *size), dtype=torch.uint8)
        for start in range(0, images.shape[0], chunk_size):
            chunk = images[start : start + chunk_size].float()
            # antialias=True follows Pillow's filter, which decode_image uses for files.
            chunk = F.interpolate(chunk, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
            resized[start : start + chunk_size] = chunk.round_().clamp_(0, 255).to(torch.uint8)
        images = resized
    if images is dataset.images:
        return dataset
    return ArrayDataset(images, dataset.labels, dataset.classes)


def _has_class_folders(folder: Path) -> bool:
    return folder.is_dir() and any(entry.is_dir() and not entry.name.startswith(".") for entry in folder.iterdir())


def _load_train_test_folders(root: Path, channels: int | None, size: tuple[int, int] | None,
                             max_bad_fraction: float = 0.01) -> DatasetSplits:
    train = load_image_folder(root / "train", channels=channels, size=size, max_bad_fraction=max_bad_fraction)
    # The test split is decoded like the training split, whatever its own images look like.
    test = load_image_folder(root / "test", channels=train.channels, size=train.image_size,
                             max_bad_fraction=max_bad_fraction)
    unknown = sorted(set(test.classes) - set(train.classes))
    if unknown:
        raise DataError(
            f"{root / 'test'} has class folders that {root / 'train'} lacks: {', '.join(unknown)}. "
            "Both splits must use the same class folder names."
        )
    if test.classes != train.classes:
        # Test may lack some classes: relabel its labels into the training split's class list.
        mapping = torch.tensor([train.classes.index(name) for name in test.classes], dtype=torch.int64)
        test = ArrayDataset(test.images, mapping[test.labels], list(train.classes))
    return DatasetSplits(train, test, list(train.classes), root.name)


def load_dataset(
    spec: str | Path,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    download: bool = True,
    max_bad_fraction: float = 0.01,
) -> DatasetSplits:
    """Loads a dataset into memory from a name, a folder or a CSV file.

    Args:
        spec: One of the forms in ``ACCEPTED_SPECS``: "fashion-mnist" (aliases fashion_mnist,
            fmnist); a folder holding the Fashion-MNIST IDX files (it or its fashion-mnist/
            subfolder; the classes are Fashion-MNIST's); a folder with train/ and test/
            class-folder trees; one class-folder tree (train only); a .csv file (train only).
        channels: 1 or 3; None keeps the dataset's own (for image folders: 1 if every image
            is grayscale, else 3).
        size: (height, width); None keeps the dataset's own (for image folders: their common
            size, or the median size when they differ).
        download: For Fashion-MNIST, download the files when they are found nowhere.
        max_bad_fraction: Image folders and CSVs: unreadable files skipped (see ``load_image_folder``).

    Returns:
        The splits. Image folders with a train/test split decode the test images with the
        training split's channels and size.

    Raises:
        DatasetNotFoundError: If the dataset cannot be found (or downloaded).
        DataError: If the spec is not one of the accepted forms, or the data is malformed.
    """
    text = str(spec)
    if text.lower() in FASHION_MNIST_NAMES:
        train, test = load_fashion_mnist(download=download)
        return DatasetSplits(_adapt(train, channels, size), _adapt(test, channels, size), list(FASHION_MNIST_CLASSES), "fashion-mnist")
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"dataset spec {text!r} is a file but not a .csv file.\n{ACCEPTED_SPECS}")
        train = load_csv(path, channels=channels, size=size, max_bad_fraction=max_bad_fraction)
        return DatasetSplits(train, None, list(train.classes), path.stem)
    if path.is_dir():
        if fashion_mnist_files_in(path) is not None or fashion_mnist_files_in(path / "fashion-mnist") is not None:
            train, test = load_fashion_mnist(root=path, download=False)
            return DatasetSplits(_adapt(train, channels, size), _adapt(test, channels, size), list(FASHION_MNIST_CLASSES), "fashion-mnist")
        if _has_class_folders(path / "train") and _has_class_folders(path / "test"):
            return _load_train_test_folders(path, channels, size, max_bad_fraction)
        train = load_image_folder(path, channels=channels, size=size, max_bad_fraction=max_bad_fraction)
        return DatasetSplits(train, None, list(train.classes), path.name)
    if any(separator in text for separator in ("/", "\\")) or path.suffix:
        raise DatasetNotFoundError(f"dataset {text!r}: no such file or folder.\n{ACCEPTED_SPECS}")
    raise DataError(f"unknown dataset {text!r}.\n{ACCEPTED_SPECS}")
