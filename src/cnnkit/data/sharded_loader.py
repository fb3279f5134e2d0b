"""The loader of file datasets decoded per item (segmentation, detection, instance segmentation).

Hand-written around torch's DataLoader rather than with ``DistributedSampler`` because the order must be
``epoch_generator(seed, epoch)``'s permutation (the one ``TensorLoader`` and ``StreamingLoader`` use): an
epoch is the same batches whether the run started at epoch 0 or resumed at it, and the measured figures
were trained on exactly these batches.

Sharding under DDP (rank r of W):

- Training: every rank draws the same permutation of the N items, pads it to ceil(N / W) * W by repeating
  its start (as ``TensorLoader`` and ``DistributedSampler`` do), and takes positions r, r + W, ...; then
  full batches only. Every rank therefore has the same ``len()`` and yields that many batches: a rank with
  one batch fewer would leave the others waiting in the gradient all-reduce forever. With W = 1 nothing is
  padded and the batches are exactly those of the loader this replaces (``SegmentationLoader``).
- Evaluation: rank r takes items r, r + W, ... in order, unpadded, so every item counts exactly once in the
  metrics. Ranks may then differ by one batch (1001 items on 2 ranks at batch 1: 501 and 500); that is
  safe because the evaluation loop (``engine/evaluate.py``) runs the unwrapped model and communicates only
  once, after its last batch, to sum the meters (tests/test_gpu_path.py runs it with gloo ranks of unequal
  batch counts, one of them with none).

On a CUDA machine batches come in pinned memory (the tasks' ``non_blocking`` copies then overlap with
compute).

Randomness: with ``num_workers=0`` the transforms draw from the main process's generator, seeded by
(seed, epoch) (the draws the measured figures were trained with). With workers, the workers stay up for the
whole run (``persistent_workers``: no start-up of N processes, each importing torch, every epoch, which a
GPU waits for) and every item carries its own seed drawn from (seed, epoch): the global generator is
reseeded for that item, as ``StreamingLoader`` does, so a run repeats exactly whatever the number of
workers, and a persistent worker needs no per-epoch reset.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from cnnkit.data.loader import epoch_generator
from cnnkit.errors import ConfigError

__all__ = ["ShardedLoader"]

# Random streams of one epoch: loader.py's stream 0 is the permutation; the DataLoader's worker seeds;
# the per-item seeds (with workers).
_DATALOADER_STREAM = 1
_ITEM_SEED_STREAM = 2


class _SeededItems(Dataset):
    """``dataset`` keyed by (index, item seed): the item's transforms draw from its own seed."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        index, item_seed = key
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(item_seed)
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)


class _CurrentBatches:
    """The persistent DataLoader's batch sampler: the batches of keys of the epoch being iterated."""

    def __init__(self):
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ShardedLoader:
    """Batches of a map-style dataset through torch's DataLoader, with ``set_epoch`` and ``len``.

    Training: shuffled with a generator seeded by (seed, epoch), full batches, each process an equal
    shard (see the module docstring). Evaluation: every sample once, in order; process r of W takes
    samples r, r+W, ... Workers' transforms draw from seeds derived from (seed, epoch), so a run repeats
    exactly.

    Args:
        dataset: A map-style dataset (e.g. SegmentationDataset, DetectionDataset).
        batch_size: Samples per batch (per process).
        train: Shuffle, pad the shards to equal length and drop the last partial batch.
        seed: The run's seed.
        num_workers: DataLoader worker processes; 0 decodes in the main process.
        rank, world_size: This process's place under torchrun.
        collate_fn: How samples become a batch (default: torch's, which stacks tensors).
        pin_memory: Collate into pinned memory; None: when CUDA is available.
        weights: Training only: draw each epoch's items with replacement with these probabilities (one value
            >= 0 per item, e.g. segmentation.class_balanced_weights) instead of a permutation; same length,
            same (seed, epoch) generator, so every rank draws the same order.

    Raises:
        ConfigError: For batch_size < 1, a rank outside 0..world_size-1, or a training set that gives
            no full batch per process.
    """

    def __init__(self, dataset: Dataset, batch_size: int, train: bool, seed: int = 0, num_workers: int = 0,
                 rank: int = 0, world_size: int = 1, collate_fn=None, pin_memory: bool | None = None,
                 weights: torch.Tensor | None = None):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in 0..world_size-1, got rank={rank}, world_size={world_size}")
        self.dataset, self.batch_size, self.train, self.seed = dataset, batch_size, train, seed
        self.num_workers, self.rank, self.world_size, self.collate_fn = num_workers, rank, world_size, collate_fn
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        if weights is not None and (len(weights) != len(dataset) or not bool((weights >= 0).all())
                                    or float(weights.sum()) <= 0):
            raise ConfigError(f"sampling weights need one value >= 0 per item ({len(dataset)}) and a positive sum")
        self.weights = None if weights is None else weights.double()
        self.epoch = 0
        self._batches, self._persistent = _CurrentBatches(), None  # with workers: one DataLoader for the run
        if train and self.num_samples < batch_size:
            raise ConfigError(f"{len(dataset)} training images give no full batch of {batch_size} per process; "
                              "lower batch_size")

    def set_epoch(self, epoch: int) -> None:
        """Selects the epoch whose order (and workers' seeds) the next iteration uses."""
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Items this process gets per epoch, before dropping a partial batch (training: padded)."""
        count = len(self.dataset)
        if self.train:
            return -(-count // self.world_size)
        return len(range(self.rank, count, self.world_size))

    def shard_indices(self, epoch: int) -> list[int]:
        """This process's dataset indices of ``epoch``, in order (see the module docstring)."""
        count = len(self.dataset)
        if not self.train:
            return list(range(self.rank, count, self.world_size))
        generator = epoch_generator(self.seed, epoch)
        if self.weights is None:
            order = torch.randperm(count, generator=generator).tolist()
        else:  # weighted draws with replacement (class-balanced sampling), as many as there are items
            order = torch.multinomial(self.weights, count, replacement=True, generator=generator).tolist()
        padded = self.num_samples * self.world_size
        if padded > count:  # repeat the start of the permutation (cyclically, for tiny datasets)
            order += [order[position % count] for position in range(padded - count)]
        return order[self.rank::self.world_size]

    def __len__(self) -> int:
        """Batches per epoch for this process."""
        count = self.num_samples
        return count // self.batch_size if self.train else -(-count // self.batch_size)

    def __iter__(self) -> Iterator:
        indices = self.shard_indices(self.epoch)
        if self.train:
            indices = indices[:len(self) * self.batch_size]
        if self.num_workers > 0:
            yield from self._iterate_persistent(indices)
            return
        loader = DataLoader(Subset(self.dataset, indices), batch_size=self.batch_size, shuffle=False,
                            num_workers=self.num_workers, collate_fn=self.collate_fn,
                            generator=epoch_generator(self.seed, self.epoch, _DATALOADER_STREAM),
                            persistent_workers=False, pin_memory=self.pin_memory)
        yield from loader

    def _iterate_persistent(self, indices: list[int]) -> Iterator:
        """This epoch's batches from the run's one DataLoader, whose workers stay up between epochs."""
        seeds = torch.randint(0, 2**62, (len(self.dataset),),
                              generator=epoch_generator(self.seed, self.epoch, _ITEM_SEED_STREAM)).tolist()
        keys = [(index, seeds[index]) for index in indices]
        self._batches.batches = [keys[start:start + self.batch_size] for start in range(0, len(keys), self.batch_size)]
        if self._persistent is None:
            self._persistent = DataLoader(_SeededItems(self.dataset), batch_sampler=self._batches,
                                          num_workers=self.num_workers, collate_fn=self.collate_fn,
                                          persistent_workers=True, pin_memory=self.pin_memory,
                                          generator=epoch_generator(self.seed, 0, _DATALOADER_STREAM))
        yield from self._persistent
