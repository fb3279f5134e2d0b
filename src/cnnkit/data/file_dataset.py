"""Streaming dataset: images decoded from their files one at a time, for data too large to hold decoded.

Use it with a ``torch.utils.data.DataLoader`` (with workers) when ``fits_in_memory`` says the
in-memory ``ArrayDataset`` route would not fit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.utils.data

from cnnkit.data.images import decode_image
from cnnkit.data.listing import read_csv_index, scan_image_folder
from cnnkit.errors import DataError

__all__ = ["FileDataset", "collate_skip_bad"]

logger = logging.getLogger(__name__)


class FileDataset(torch.utils.data.Dataset):
    """Images decoded from their files one at a time, for data too large to hold decoded.

    ``__getitem__`` returns ``(image, label)``, image being ``transform(decode_image(...))``
    (uint8 (C, H, W) without a transform), or None for an unreadable file: pass
    ``collate_fn=collate_skip_bad`` to the DataLoader to drop those. Unreadable files are
    logged and counted in ``num_bad``; with DataLoader workers each worker process counts
    its own, so read the log (or use num_workers=0) for an exact count.

    Args:
        paths: Image files.
        labels: One class index per file.
        classes: Class names.
        channels: 1 or 3.
        size: (height, width) to resize to; None keeps each file's size (then a transform
            must make sizes equal before batching).
        transform: A callable on the uint8 tensor, e.g. a torchvision.transforms.v2 pipeline.
    """

    # Subclasses that report unreadable files themselves (StreamingLoader, once per epoch in
    # the main process) turn the per-file log line off.
    log_unreadable = True

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int],
        classes: list[str],
        channels: int,
        size: tuple[int, int] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        if len(paths) != len(labels):
            raise DataError(f"FileDataset: {len(paths)} paths but {len(labels)} labels; expected one label per path.")
        self.paths = [Path(path) for path in paths]
        self.labels = list(labels)
        self.classes = list(classes)
        self.channels = channels
        self.size = size
        self.transform = transform
        self.num_bad = 0

    @classmethod
    def from_folder(cls, root: str | Path, channels: int, size: tuple[int, int] | None = None, transform=None) -> FileDataset:
        """A FileDataset over a class-folder tree (layout as ``load_image_folder``)."""
        return cls(*scan_image_folder(root), channels=channels, size=size, transform=transform)

    @classmethod
    def from_csv(cls, path: str | Path, channels: int, size: tuple[int, int] | None = None, transform=None) -> FileDataset:
        """A FileDataset over a ``path,label`` CSV (format as ``read_csv_index``)."""
        return cls(*read_csv_index(path), channels=channels, size=size, transform=transform)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        try:
            image = decode_image(self.paths[index], self.channels, self.size)
        except DataError as error:
            self.num_bad += 1
            if self.log_unreadable:
                logger.warning("skipping unreadable image: %s", error)
            return None
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


def collate_skip_bad(batch: list[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """DataLoader collate_fn that drops the None samples of unreadable files.

    Returns:
        (images, labels) stacked, or None when every sample of the batch was unreadable
        (the training loop should skip such a batch).
    """
    kept = [sample for sample in batch if sample is not None]
    if not kept:
        return None
    return torch.utils.data.default_collate(kept)
