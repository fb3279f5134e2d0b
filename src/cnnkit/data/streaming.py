"""The streaming data path: images decoded from their files every epoch, for data too large to hold decoded.

``scan_dataset`` lists a dataset's files (no decoding), ``infer_size_and_channels`` and
``estimate_mean_std`` (statistics.py, re-exported here) derive the preprocessing from a seeded
sample of them, and
``StreamingLoader`` yields batches with the interface of the in-memory ``TensorLoader``
(same constructor keywords, ``set_epoch``, ``len``, ``num_samples``; float32 normalized
(B, C, H, W) images and int64 labels), so the Trainer does not care which one it gets.

Inside, a ``torch.utils.data.DataLoader`` runs ``FileDataset`` in worker processes: decode to
the model's size (``decode_image``, as prediction does), then a ``torchvision.transforms.v2``
pipeline per uint8 sample (hflip -> ``RandomHorizontalFlip``, translate t -> ``RandomCrop(size,
padding=t)``, the augmentations of ``augment.py``). With ``resized_crop`` the file is decoded at
its own size and ``RandomResizedCrop`` cuts from it (the ImageNet recipe), rather than from an image
already squashed to the model's size. Normalization is batched, on the device, with
``TensorLoader``'s arithmetic: an un-augmented batch is bit-identical to its batch. The workers live
for the whole run (persistent) and batches come in pinned memory on CUDA.

Determinism (what holds across resume, worker counts and world sizes):

- The order of epoch e is ``TensorLoader``'s (same permutation from ``epoch_generator(seed,
  e)``, same sharding across ranks), whatever the number of workers or a resume at e.
- Each sample's augmentation draws from the global generator reseeded per sample (then
  restored) with a seed for its position in epoch e: it depends on (seed, e, position) only,
  not on workers, ranks or resume. Its values are not ``TensorLoader``'s, its distribution is.
- The main process's global torch RNG is never consumed (the Trainer seeds dropout from it).

Unreadable files are skipped (the batch comes out smaller), counted, and named in one ``SkippedImagesWarning`` (and a log line) at the end of each epoch.
More than ``max(1, floor(max_bad_fraction * num_samples))`` raises ``DataError`` as soon as
the count is passed; under DDP each rank counts its own shard. A training batch (``shuffle``) of
only unreadable files is replaced by readable files of the rank's later batches, decoded in the main
process, so every rank yields exactly ``len`` batches (one rank a batch short would leave the others
waiting in DDP's gradient all-reduce). An evaluation batch of only unreadable files is left out: the
evaluation loop communicates only after its last batch.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.utils.data

from cnnkit.data.augment import AugmentConfig
from cnnkit.data.fashion_mnist import files_in as fashion_mnist_files_in
from cnnkit.data.file_dataset import FileDataset, collate_skip_bad
from cnnkit.data.folder import _probe_all, _report_bad, _short_reason
from cnnkit.data.images import decode_image
from cnnkit.data.listing import read_csv_index, scan_image_folder
from cnnkit.data.loader import check_batching, epoch_generator, epoch_order
from cnnkit.data.statistics import estimate_mean_std, sample_indices
from cnnkit.data.transforms import image_transform
from cnnkit.errors import ConfigError, DataError, DatasetNotFoundError

__all__ = ["FileSplit", "FileSplits", "StreamingLoader", "estimate_mean_std", "infer_size_and_channels", "scan_dataset"]

# Random streams of one epoch besides the permutation (loader.py's stream 0); the numbers only
# need to differ from it and from each other.
_SAMPLE_SEED_STREAM = 2
_DATALOADER_STREAM = 3


@dataclass
class FileSplit:
    """One split of a file dataset: image paths and labels, nothing decoded.

    Attributes:
        paths: Image files.
        labels: (N,) int64, each in ``range(len(classes))``.
        classes: Class names.
    """

    paths: list[Path]
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        self.paths = [Path(path) for path in self.paths]
        self.labels = torch.as_tensor(self.labels, dtype=torch.int64).reshape(-1)
        self.classes = list(self.classes)
        if self.labels.shape[0] != len(self.paths):
            raise DataError(f"FileSplit: {len(self.paths)} paths but {self.labels.shape[0]} labels; expected one label per path.")

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: torch.Tensor | Sequence[int]) -> FileSplit:
        """The files at ``indices`` (e.g. from ``train_val_split``), same classes."""
        indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        return FileSplit([self.paths[index] for index in indices.tolist()], self.labels[indices], self.classes)


@dataclass
class FileSplits:
    """A file dataset's splits, the streaming twin of ``DatasetSplits``."""

    train: FileSplit
    test: FileSplit | None
    classes: list[str]
    name: str


def scan_dataset(spec: str | Path) -> FileSplits:
    """Lists a dataset's files and labels without decoding, from the spec forms of ``load_dataset``.

    Args:
        spec: A folder with train/ and test/ class-folder trees; one class-folder tree (train
            only); or a .csv file with header ``path,label`` (train only).

    Returns:
        The splits; test labels index the training split's class list.

    Raises:
        DataError: For Fashion-MNIST (in-memory only), a test class the training split lacks,
            a spec that is none of the forms, or a malformed layout/CSV.
        DatasetNotFoundError: If the path does not exist.
    """
    # The package's spec rules; imported here because the package imports this module.
    from cnnkit.data import ACCEPTED_SPECS, FASHION_MNIST_NAMES, _has_class_folders

    text = str(spec)
    path = Path(text).expanduser()
    in_memory_only = (
        f"dataset {text!r} is Fashion-MNIST, which is loaded in memory only (55 MB decoded); "
        "use load_dataset and TensorLoader for it."
    )
    if text.lower() in FASHION_MNIST_NAMES:
        raise DataError(in_memory_only)
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DataError(f"dataset spec {text!r} is a file but not a .csv file.\n{ACCEPTED_SPECS}")
        train = FileSplit(*read_csv_index(path))
        return FileSplits(train, None, list(train.classes), path.stem)
    if path.is_dir():
        if fashion_mnist_files_in(path) is not None or fashion_mnist_files_in(path / "fashion-mnist") is not None:
            raise DataError(in_memory_only)
        if _has_class_folders(path / "train") and _has_class_folders(path / "test"):
            train = FileSplit(*scan_image_folder(path / "train"))
            test = FileSplit(*scan_image_folder(path / "test"))
            unknown = sorted(set(test.classes) - set(train.classes))
            if unknown:
                raise DataError(
                    f"{path / 'test'} has class folders that {path / 'train'} lacks: {', '.join(unknown)}. "
                    "Both splits must use the same class folder names."
                )
            mapping = torch.tensor([train.classes.index(name) for name in test.classes], dtype=torch.int64)
            test = FileSplit(test.paths, mapping[test.labels], train.classes)
            return FileSplits(train, test, list(train.classes), path.name)
        train = FileSplit(*scan_image_folder(path))
        return FileSplits(train, None, list(train.classes), path.name)
    if any(separator in text for separator in ("/", "\\")) or path.suffix:
        raise DatasetNotFoundError(f"dataset {text!r}: no such file or folder.\n{ACCEPTED_SPECS}")
    raise DataError(f"unknown dataset {text!r}.\n{ACCEPTED_SPECS}")


def _default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def infer_size_and_channels(
    split: FileSplit,
    sample: int = 200,
    seed: int = 0,
    *,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[int, tuple[int, int]]:
    """The channels and (height, width) to decode a split at, judged on a seeded sample of its files.

    ``load_image_folder``'s rules (reusing its header probe): the common size, or the per-axis
    median of differing sizes; 1 channel if every file is grayscale (a gray mode, or R == G == B
    pixels), else 3. Files outside the sample go unseen; with ``len(split) <= sample`` the
    decision is exactly ``load_image_folder``'s.

    Args:
        split: The files, usually the training split.
        sample: Number of files looked at.
        seed: Seed of the sample.
        channels: Fixed by the caller; then only the size is inferred.
        size: Fixed by the caller; then only the channels are inferred.

    Raises:
        DataError: If no file of the sample can be read.
    """
    if channels is not None and size is not None:
        return channels, tuple(size)
    paths = [split.paths[index] for index in sample_indices(len(split), sample, seed)]
    source = f"sample of {len(paths)} of {len(split)} images"
    errors: dict[int, str] = {}
    candidates, decode_channels, size = _probe_all(paths, channels, size, _default_workers(), errors, 1.0, source)
    if channels is None and decode_channels == 3:
        # Header modes that may hold colour: look at pixels, stopping at the first colour image
        # (for photos, the first one), as load_image_folder's R == G == B check.
        for index in candidates:
            try:
                image = decode_image(paths[index], 3, size)
            except DataError:
                continue
            if not (torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])):
                return 3, tuple(size)
        return 1, tuple(size)
    return decode_channels, tuple(size)


# The per-sample pipeline of an AugmentConfig lives with the other v2 pipelines (transforms.py).
build_transform = image_transform


class _SeededFileDataset(FileDataset):
    """``FileDataset`` keyed by (index, sample seed): the transform draws from a per-sample seed.

    Returns ``(image, label, index)``, or None for an unreadable file; the index tells the main
    process which files were skipped.
    """

    log_unreadable = False

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int] | None:
        index, sample_seed = key
        if self.transform is None:
            sample = super().__getitem__(index)
        else:
            # v2 transforms draw from the global CPU generator: reseed it for this sample and
            # restore it, so the main process's stream (num_workers=0) is left as it was.
            generator = torch.default_generator
            state = generator.get_state()
            generator.manual_seed(sample_seed)
            try:
                sample = super().__getitem__(index)
            finally:
                generator.set_state(state)
        return None if sample is None else (*sample, index)


class _EpochBatches:
    """The batch sampler of the persistent DataLoader: the current epoch's batches of keys."""

    def __init__(self):
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class StreamingLoader:
    """Batches decoded from files by DataLoader workers; the interface of ``TensorLoader``.

    Arguments as ``TensorLoader`` (see there for ``shuffle``, ``drop_last``, ``rank`` and
    ``world_size``, which behave the same), except that the data is a ``FileSplit`` decoded at
    ``channels`` and ``size``, plus:

    Args:
        split: The files and labels.
        channels: 1 or 3, as ``decode_image``.
        size: (height, width) every image is resized to.
        num_workers: DataLoader worker processes (0 decodes in the main process). The workers
            persist from epoch to epoch (each sample's augmentation is seeded by its own key).
        max_bad_fraction: Unreadable files allowed per epoch (see the module docstring).
        oversample: With ``shuffle``, class-balanced epochs drawn with replacement (``loader.epoch_order``).
    """

    def __init__(
        self,
        split: FileSplit,
        channels: int,
        size: tuple[int, int],
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool,
        augment: AugmentConfig | None,
        drop_last: bool,
        seed: int,
        channels_last: bool = False,
        device: str | torch.device = "cpu",
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 2,
        max_bad_fraction: float = 0.01,
        oversample: bool = False,
    ):
        if channels not in (1, 3):
            raise ConfigError(f"StreamingLoader: channels must be 1 or 3, got {channels}.")
        if len(size) != 2 or min(size) < 1:
            raise ConfigError(f"StreamingLoader: size must be (height, width) with both >= 1, got {size}.")
        check_batching(channels, mean, std, batch_size, rank, world_size,
                       "Estimate them with cnnkit.data.estimate_mean_std on the training files.")
        if num_workers < 0:
            raise ConfigError(f"num_workers must be >= 0, got {num_workers}.")
        self.split = split
        self.channels = channels
        self.size = (int(size[0]), int(size[1]))
        self.batch_size = batch_size
        self.mean = [float(value) for value in mean]
        self.std = [float(value) for value in std]
        self.shuffle = shuffle
        self.augment = augment
        self.drop_last = drop_last
        self.seed = seed
        self.oversample = oversample
        self.channels_last = channels_last
        self.device = torch.device(device)
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.max_bad_fraction = max_bad_fraction
        self.epoch = 0
        self.skipped: list[tuple[Path, str]] = []  # (path, reason) skipped in the last epoch
        self._reasons: dict[int, str] = {}
        transform, decode_size = build_transform(augment, self.size), self.size
        if augment is not None and augment.resized_crop:
            # RandomResizedCrop from the decoded file, then the rest of the pipeline at the model's size.
            from torchvision.transforms import v2

            crop = v2.RandomResizedCrop(self.size, scale=(augment.resized_crop, 1.0), antialias=True)
            rest = build_transform(replace(augment, resized_crop=0.0), self.size)
            transform, decode_size = (v2.Compose([crop, rest]) if rest is not None else crop), None
        self.dataset = _SeededFileDataset(split.paths, split.labels.tolist(), split.classes, channels, decode_size,
                                          transform)
        self._batches = _EpochBatches()
        self._loader: torch.utils.data.DataLoader | None = None
        # (x / 255 - mean) / std == x * scale + shift, exactly as TensorLoader and Preprocessing.normalize.
        self._scale = torch.tensor([1 / (255 * s) for s in self.std], device=self.device).view(1, -1, 1, 1)
        self._shift = torch.tensor([-m / s for m, s in zip(self.mean, self.std)], device=self.device).view(1, -1, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose order and augmentation the next iteration produces."""
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch, before dropping an incomplete last batch."""
        total = len(self.split)
        return total // self.world_size if self.drop_last else math.ceil(total / self.world_size)

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def epoch_batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        """This rank's batches of ``epoch`` as lists of (file index, augmentation seed).

        Same positions and permutation as ``TensorLoader``: every rank draws the epoch's
        permutation and takes every world_size-th position (padded by wrapping, or truncated
        with drop_last).
        """
        total = len(self.split)
        slots = (torch.arange(self.num_samples * self.world_size) % max(total, 1))[self.rank :: self.world_size]
        order = epoch_order(self.split.labels, self.shuffle, self.oversample, self.seed, epoch)
        # Indexed by position in the epoch, not by rank: a sample's augmentation is the same
        # whatever the world size.
        seeds = torch.randint(0, 2**62, (total,), generator=epoch_generator(self.seed, epoch, _SAMPLE_SEED_STREAM))
        keys = list(zip(order[slots].tolist(), seeds[slots].tolist()))
        return [keys[start : start + self.batch_size] for start in range(0, len(self) * self.batch_size, self.batch_size)]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        batches = self.epoch_batches(epoch)
        self._batches.batches = batches
        if self._loader is None or self.num_workers == 0:
            self._loader = torch.utils.data.DataLoader(
                self.dataset,
                batch_sampler=self._batches,
                num_workers=self.num_workers,
                collate_fn=self._collate,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.num_workers > 0,
                # Only seeds the workers' base seed; given, so the global RNG is not consumed.
                generator=epoch_generator(self.seed, epoch, _DATALOADER_STREAM),
            )
        loader = self._loader
        source = f"streaming loader, epoch {epoch}" + (f", rank {self.rank}/{self.world_size}" if self.world_size > 1 else "")
        allowed = max(1, math.floor(self.max_bad_fraction * self.num_samples)) if self.max_bad_fraction > 0 else 0
        bad: dict[int, None] = {}  # file indices skipped this epoch, an ordered set

        def count_bad(missing: list[int]) -> None:
            if missing:
                bad.update(dict.fromkeys(missing))
                if len(bad) > allowed:
                    _report_bad(self._named(bad), self.num_samples, self.max_bad_fraction, source)  # raises

        for position, (keys, batch) in enumerate(zip(batches, loader)):
            batch = None if batch is None else self._on_device(batch)
            returned = set() if batch is None else set(batch[2].tolist())
            count_bad([index for index, _ in keys if index not in returned and index not in bad])
            if batch is None:
                if not self.shuffle:
                    continue  # evaluation: see the module docstring
                batch = self._replacement(batches, position, bad, count_bad, source)
            images, labels, _ = batch
            yield self._normalize(images), labels.to(self.device, non_blocking=True)
        self.skipped = self._named(bad)
        _report_bad(self.skipped, self.num_samples, self.max_bad_fraction, source)

    def _replacement(self, batches: list[list[tuple[int, int]]], position: int, bad: dict[int, None], count_bad,
                     source: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch of readable files for training batch `position`, whose files were all unreadable.

        Decoded in this process from the keys of the following batches (then the earlier ones), each with its
        own augmentation seed: the same replacement whatever the number of workers.
        """
        wanted = len(batches[position])
        later = [key for batch in batches[position + 1:] + batches[:position] for key in batch]
        samples = []
        for key in later:
            if key[0] in bad:
                continue
            sample = self.dataset[key]
            batch = None if sample is None else self._on_device(self._collate([sample]))
            if batch is None:
                count_bad([key[0]])
                continue
            samples.append(batch)
            if len(samples) == wanted:
                break
        if not samples:
            raise DataError(f"{source}: every file of this process's shard is unreadable")
        return tuple(torch.cat(parts) for parts in zip(*samples))

    # Hooks of the GPU JPEG path (cnnkit.data.gpu_decode): how worker samples are batched, and how a batch
    # becomes (uint8 images on the device, labels, file indices), or None if none of it could be decoded.
    @staticmethod
    def _collate(samples):
        return collate_skip_bad(samples)

    def _on_device(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        images, labels, indices = batch
        return images.to(self.device, non_blocking=True), labels, indices  # uint8: 4x less to copy than float

    def _named(self, bad: dict[int, None]) -> list[tuple[Path, str]]:
        """(path, reason) of skipped files; the reason comes from decoding once more in this process."""
        for index in bad:
            if index not in self._reasons:
                try:
                    decode_image(self.split.paths[index], self.channels, self.size)
                    self._reasons[index] = "unreadable in a loader worker, readable on retry"
                except Exception as error:  # noqa: BLE001 - any failure makes the file unreadable
                    self._reasons[index] = _short_reason(error)
        return sorted((self.split.paths[index], self._reasons[index]) for index in bad)

    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        output = images.to(dtype=torch.float32, memory_format=memory_format)
        return output.mul_(self._scale).add_(self._shift)
