"""Users' own images: a folder of class folders, or a CSV of (path, label) rows.

Two ways to use them:

- ``load_image_folder`` / ``load_csv`` decode everything once into one uint8 tensor (an
  ``ArrayDataset``), for the fast batched ``TensorLoader``. Right for data that fits in memory:
  check with ``fits_in_memory``.
- ``FileDataset`` (``file_dataset.py``, re-exported here) decodes one file per ``__getitem__``,
  for a ``torch.utils.data.DataLoader`` with workers, when the images are too many or too
  large to hold decoded.

Listing the files (layouts, CSV format) is in ``listing.py``.

Unreadable images (corrupt, truncated, not an image) do not stop a load: they are skipped,
counted, and reported in one ``SkippedImagesWarning`` (also logged). Only when more than the
allowed number are bad does loading fail, because then something is wrong with the data
rather than with a stray file. Allowed = ``max(1, floor(max_bad_fraction * N))`` for a
positive fraction (so one bad file among a handful never aborts), 0 for ``max_bad_fraction=0``
(strict).

Decoding runs in a thread pool: Pillow releases the GIL while decoding and resizing, so
threads scale without the start-up and pickling cost of processes.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from cnnkit.data.datasets import ArrayDataset
from cnnkit.data.file_dataset import FileDataset, collate_skip_bad
from cnnkit.data.images import decode_image
from cnnkit.data.listing import FOLDER_LAYOUT_HELP, read_csv_index, scan_image_folder
from cnnkit.errors import DataError

__all__ = [
    "SkippedImagesWarning",
    "scan_image_folder",
    "read_csv_index",
    "load_image_folder",
    "load_csv",
    "FileDataset",
    "collate_skip_bad",
    "fits_in_memory",
    "FOLDER_LAYOUT_HELP",
]

logger = logging.getLogger(__name__)

DEFAULT_MEMORY_BUDGET = 4 * 1024**3
_PROGRESS_MIN_FILES = 1000  # below this a progress bar is noise: decoding takes a second or less
_CHUNK = 64  # files per thread-pool task: amortizes task overhead, still balances well
_SHOWN_IN_MESSAGES = 10  # bad files named in a warning or error; the rest are counted
# Pillow modes whose pixels are grayscale whatever they contain; any other mode (RGB, P, CMYK ...)
# may hold colour and is decoded as RGB, then checked pixel by pixel.
_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
# EXIF orientations 5..8 rotate by 90 degrees, swapping height and width.
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}


class ImageSizeWarning(UserWarning):
    """The images differ in size and no image_size was given: all are resized to the median size."""


class SkippedImagesWarning(UserWarning):
    """Some images could not be decoded and were left out.

    Attributes:
        skipped: (path, reason) of every skipped image.
        total: Number of images the dataset listed.
    """

    def __init__(self, message: str, skipped: list[tuple[Path, str]], total: int):
        super().__init__(message)
        self.skipped = skipped
        self.total = total


def fits_in_memory(num_images: int, channels: int, size: tuple[int, int], budget_bytes: int = DEFAULT_MEMORY_BUDGET) -> bool:
    """Whether ``num_images`` decoded uint8 images of ``channels`` x ``size`` fit in ``budget_bytes``."""
    height, width = size
    return num_images * channels * height * width <= budget_bytes


def _probe(path: Path) -> tuple[str, tuple[int, int]]:
    """Mode and (height, width) after EXIF rotation, from the file's header (no pixel decoding)."""
    with Image.open(path) as image:
        width, height = image.size
        try:
            if image.getexif().get(0x0112, 1) in _SWAPPING_ORIENTATIONS:
                width, height = height, width
        except Exception:  # noqa: BLE001 - decode_image ignores bad EXIF too
            pass
        return image.mode, (height, width)


def _run_chunked(function: Callable[[int], None], count: int, num_workers: int, description: str) -> None:
    """Calls ``function(i)`` for i in range(count) in a thread pool, with a progress bar for many files."""
    chunks = [range(start, min(start + _CHUNK, count)) for start in range(0, count, _CHUNK)]

    def run_chunk(indices: range) -> int:
        for index in indices:
            function(index)
        return len(indices)

    with tqdm(total=count, desc=description, unit="img", disable=count <= _PROGRESS_MIN_FILES) as progress:
        if num_workers <= 1:
            for chunk in chunks:
                progress.update(run_chunk(chunk))
            return
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            for done in pool.map(run_chunk, chunks):
                progress.update(done)


def _report_bad(bad: list[tuple[Path, str]], total: int, max_bad_fraction: float, source: str) -> None:
    """Warns about skipped images, or raises DataError when there are too many."""
    if not bad:
        return
    allowed = max(1, math.floor(max_bad_fraction * total)) if max_bad_fraction > 0 else 0
    listed = "; ".join(f"{path} ({reason})" for path, reason in bad[:_SHOWN_IN_MESSAGES])
    more = f"; and {len(bad) - _SHOWN_IN_MESSAGES} more" if len(bad) > _SHOWN_IN_MESSAGES else ""
    noun = "image" if len(bad) == 1 else "images"
    if len(bad) > allowed:
        raise DataError(
            f"{source}: {len(bad)} unreadable {noun} of {total}, more than the {allowed} allowed "
            f"(max_bad_fraction={max_bad_fraction}): {listed}{more}. Replace or remove these files, "
            "or raise max_bad_fraction."
        )
    message = f"{source}: skipped {len(bad)} unreadable {noun} of {total}: {listed}{more}"
    # One warning, no log line as well: the CLI prints it once, in words (cnnkit.cli.show_warning).
    warnings.warn(SkippedImagesWarning(message, list(bad), total), stacklevel=3)


def _short_reason(error: Exception) -> str:
    # decode_image's messages repeat the path and the advice; keep the cause only.
    text = str(error)
    if text.startswith("cannot read image "):
        text = text.split(": ", 1)[-1].split(". The file is", 1)[0]
    return text or type(error).__name__


def _probe_all(
    paths: Sequence[Path], channels: int | None, size: tuple[int, int] | None, num_workers: int,
    errors: dict[int, str], max_bad_fraction: float, source: str,
) -> tuple[list[int], int, tuple[int, int]]:
    """Pass 1, headers only: the readable files, the channels to decode at, and the size."""
    probed: dict[int, tuple[str, tuple[int, int]]] = {}

    def probe(index: int) -> None:
        try:
            probed[index] = _probe(paths[index])
        except Exception as error:  # noqa: BLE001 - any failure makes the file unreadable
            errors[index] = str(error) or type(error).__name__

    _run_chunked(probe, len(paths), num_workers, "reading image headers")
    candidates = sorted(probed)
    if not candidates:
        _report_bad(sorted((paths[i], errors[i]) for i in errors), len(paths), max_bad_fraction, source)
        raise DataError(f"{source}: none of the {len(paths)} images could be read.")
    if size is None:
        sizes = {probed[index][1] for index in candidates}
        if len(sizes) == 1:
            size = sizes.pop()
        else:
            # Mixed sizes: the per-axis median is robust to a few odd images and close to what
            # most images are, so most are resized only slightly.
            size = (
                round(statistics.median(probed[index][1][0] for index in candidates)),
                round(statistics.median(probed[index][1][1] for index in candidates)),
            )
            warnings.warn(ImageSizeWarning(
                f"{source}: the images have {len(sizes)} different sizes and no image_size was given; all are "
                f"resized to their median, {size[0]}x{size[1]} (HxW). Set image_size=N to choose (smaller trains "
                "faster; e.g. image_size=64)"), stacklevel=2)
    if channels is None:
        # Modes that cannot hold colour decide at once; any other mode is decoded as RGB and its
        # pixels are checked afterwards.
        channels = 1 if all(probed[index][0] in _GRAY_MODES for index in candidates) else 3
    return candidates, channels, size


def _load_files(
    paths: Sequence[Path],
    labels: Sequence[int],
    classes: list[str],
    channels: int | None,
    size: tuple[int, int] | None,
    max_bad_fraction: float,
    num_workers: int | None,
    memory_budget_bytes: int,
    source: str,
) -> ArrayDataset:
    if channels not in (None, 1, 3):
        raise DataError(f"{source}: channels must be 1 (grayscale), 3 (RGB) or None (automatic), got {channels}.")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise DataError(f"{source}: size must be (height, width) with both >= 1, got {size}.")
    total = len(paths)
    num_workers = num_workers if num_workers is not None else min(8, os.cpu_count() or 1)
    errors: dict[int, str] = {}  # file index -> why it is unreadable
    if channels is None or size is None:
        candidates, decode_channels, size = _probe_all(paths, channels, size, num_workers, errors, max_bad_fraction, source)
    else:
        candidates, decode_channels = list(range(total)), channels
    if not fits_in_memory(len(candidates), decode_channels, size, memory_budget_bytes):
        gigabytes = len(candidates) * decode_channels * size[0] * size[1] / 1024**3
        raise DataError(
            f"{source}: {len(candidates)} images of {decode_channels}x{size[0]}x{size[1]} need {gigabytes:.1f} GiB decoded, "
            f"over the memory budget of {memory_budget_bytes / 1024**3:.1f} GiB. Pass a smaller size, a larger "
            "memory_budget_bytes, or stream the files with FileDataset."
        )

    # Pass 2: decode into one preallocated tensor, slot by slot (threads write disjoint rows).
    images = torch.empty((len(candidates), decode_channels, *size), dtype=torch.uint8)
    is_gray = torch.ones(len(candidates), dtype=torch.bool)
    decoded = torch.zeros(len(candidates), dtype=torch.bool)

    def decode(slot: int) -> None:
        index = candidates[slot]
        try:
            image = decode_image(paths[index], decode_channels, size)
        except Exception as error:  # noqa: BLE001 - any failure makes the file unreadable
            errors[index] = _short_reason(error)
            return
        images[slot] = image
        if decode_channels == 3:
            is_gray[slot] = bool(torch.equal(image[0], image[1]) and torch.equal(image[1], image[2]))
        decoded[slot] = True

    _run_chunked(decode, len(candidates), num_workers, "decoding images")
    _report_bad(sorted((paths[i], reason) for i, reason in errors.items()), total, max_bad_fraction, source)
    if not bool(decoded.any()):
        raise DataError(f"{source}: none of the {total} images could be decoded.")
    kept_slots = torch.nonzero(decoded).flatten()
    if len(kept_slots) < len(candidates):
        images, is_gray = images[kept_slots], is_gray[kept_slots]
    label_tensor = torch.tensor([labels[candidates[slot]] for slot in kept_slots.tolist()], dtype=torch.int64)
    if channels is None and decode_channels == 3 and bool(is_gray.all()):
        # Colour files with gray pixels (common for scanned or re-saved JPEGs): R == G == B, and
        # Pillow's L conversion of (v, v, v) is exactly v, so channel 0 is the grayscale image.
        images = images[:, :1].contiguous()
    return ArrayDataset(images, label_tensor, classes)


def load_image_folder(
    root: str | Path,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    max_bad_fraction: float = 0.01,
    num_workers: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> ArrayDataset:
    """Decodes a class-folder tree (``root/<class>/<image>``) into memory.

    Args:
        root: Folder with one subfolder per class; class order is the sorted folder names.
        channels: 1 or 3. None: 1 if every image is grayscale, judged on all images' decoded
            pixels (a colour file whose pixels all have R == G == B counts as grayscale), else 3.
        size: (height, width) every image is resized to. None: the images' size if they all
            share one, else the per-axis median of their sizes, rounded.
        max_bad_fraction: Unreadable images are skipped while at most
            ``max(1, floor(max_bad_fraction * N))`` of N are bad (0: none allowed).
        num_workers: Decoding threads; None uses min(8, CPU count).
        memory_budget_bytes: Refuse (with advice) to decode more than this many bytes.

    Returns:
        The images, (N, C, H, W) uint8, with labels indexing the class folder names.

    Raises:
        DatasetNotFoundError: If root does not exist.
        DataError: On a wrong layout, too many unreadable images, or a dataset over the memory budget.
    """
    paths, labels, classes = scan_image_folder(root)
    return _load_files(paths, labels, classes, channels, size, max_bad_fraction, num_workers, memory_budget_bytes, f"image folder {root}")


def load_csv(
    path: str | Path,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    max_bad_fraction: float = 0.01,
    num_workers: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET,
) -> ArrayDataset:
    """Decodes the images listed in a ``path,label`` CSV into memory.

    Arguments, defaults and errors as ``load_image_folder``; the CSV format is described in
    ``read_csv_index``. A listed file that does not exist counts as an unreadable image.
    """
    paths, labels, classes = read_csv_index(path)
    return _load_files(paths, labels, classes, channels, size, max_bad_fraction, num_workers, memory_budget_bytes, f"CSV {path}")
