"""Identity data for embeddings: one folder per identity (the CASIA-WebFace / VGGFace2 layout) or a CSV
(path,label), read into memory like classification's small-image data.

Open set, as face recognition is measured: validation and test identities are never trained on.
- `DIR/train/<identity>/...` and `DIR/test/<identity>/...`: the test identities are DIR/test's (they must
  differ from train's); otherwise (one folder of identities, or a CSV) there is no test split.
- Validation: `val_fraction` of the training *identities* (seeded, at least 2), all their images.
- `fashion-mnist`: a small second check: classes 0-6 of the training images are the training identities,
  classes 7-9 of the test images the test identities.

Training batches: shuffled (margin losses), or P identities x K images (triplet and contrastive losses:
`PKLoader`, K = images_per_identity, P = batch_size / K), so every anchor has a positive and negatives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cnnkit.data import ArrayDataset, TensorLoader, compute_mean_std, load_dataset
from cnnkit.data.loader import epoch_generator
from cnnkit.data.preprocess import Preprocessing
from cnnkit.engine.distributed import DistInfo
from cnnkit.errors import DataError

FASHION_MNIST_TRAIN_IDENTITIES = 7  # classes 0-6 train, 7-9 test (held-out classes)


@dataclass
class IdentityData:
    """Train / val / test images with identity labels; each split's labels index its own `*_identities`."""

    train: ArrayDataset
    val: ArrayDataset | None
    test: ArrayDataset | None
    train_identities: list[str]
    preprocessing: Preprocessing


def _keep(dataset: ArrayDataset, identities: list[int]) -> ArrayDataset:
    """The images of `identities`, relabelled 0..len(identities)-1 in that order."""
    mapping = torch.full((len(dataset.classes),), -1, dtype=torch.int64)
    mapping[torch.tensor(identities, dtype=torch.int64)] = torch.arange(len(identities))
    keep = (mapping[dataset.labels] >= 0).nonzero().flatten()
    return ArrayDataset(dataset.images[keep], mapping[dataset.labels[keep]], [dataset.classes[i] for i in identities])


def read_identities(config, preprocessing: Preprocessing | None = None) -> IdentityData:
    """Read the identity folders (see the module docstring) and split off validation identities."""
    size = (config.image_size, config.image_size) if config.image_size else None
    channels = config.channels
    if preprocessing is not None:
        channels, size = preprocessing.channels, tuple(preprocessing.image_size)
    root = Path(config.data).expanduser()
    test = None
    if str(config.data).lower() in ("fashion-mnist", "fashion_mnist", "fmnist"):
        splits = load_dataset(config.data, channels=channels, size=size)
        cut = FASHION_MNIST_TRAIN_IDENTITIES
        train = _keep(splits.train, list(range(cut)))
        test = _keep(splits.test, list(range(cut, len(splits.classes))))
    elif (root / "train").is_dir() and (root / "test").is_dir():
        train = load_dataset(root / "train", channels=channels, size=size).train
        test = load_dataset(root / "test", channels=train.channels, size=train.image_size).train
        shared = sorted(set(train.classes) & set(test.classes))
        if shared:
            raise DataError(f"{root}: identities {', '.join(shared[:5])} are in both train/ and test/; test identities "
                            "must never be trained on (open-set evaluation): move them to one side")
    else:
        train = load_dataset(config.data, channels=channels, size=size).train
    identities = len(train.classes)
    held_out = max(2, round(identities * config.val_fraction)) if config.val_fraction > 0 else 0
    if identities - held_out < 2:
        raise DataError(f"{config.data}: {identities} identities leave too few to train on after holding out {held_out} "
                        "for validation; add identities or lower val_fraction")
    order = torch.randperm(identities, generator=torch.Generator().manual_seed(config.seed)).tolist()
    val = _keep(train, sorted(order[:held_out])) if held_out else None
    train = _keep(train, sorted(order[held_out:]))
    if preprocessing is None:
        mean, std = compute_mean_std(train.images)
        preprocessing = Preprocessing(train.channels, train.image_size, tuple(mean), tuple(std))
    return IdentityData(train, val, test, list(train.classes), preprocessing)


class PKLoader(TensorLoader):
    """A TensorLoader whose training batches hold P identities x K images each (batch_size = P x K).

    Each batch draws P different identities and K images of each, without replacement within the identity
    where it has K images (with replacement where it has fewer), from a generator seeded by (seed, epoch):
    a resumed run repeats the epoch exactly. The epoch has as many batches as the plain loader would.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, images_per_identity: int, **options):
        super().__init__(images, labels, **options)
        self.images_per_identity = images_per_identity
        self.identities_per_batch = self.batch_size // images_per_identity
        labels = labels.cpu()
        self.members = [torch.nonzero(labels == identity).flatten() for identity in range(int(labels.max()) + 1)]
        self.members = [members for members in self.members if len(members)]
        if self.identities_per_batch < 2 or len(self.members) < self.identities_per_batch:
            raise DataError(f"P x K batches need at least 2 identities per batch and as many identities in the data: "
                            f"batch_size {self.batch_size} / images_per_identity {images_per_identity} = "
                            f"{self.identities_per_batch} identities per batch, {len(self.members)} identities")

    def epoch_order(self, epoch: int) -> torch.Tensor:
        generator = epoch_generator(self.seed, epoch, 7)
        total, k = self.images.shape[0], self.images_per_identity
        batches = max(1, total // self.batch_size)
        order = []
        for _ in range(batches):
            chosen = torch.randperm(len(self.members), generator=generator)[:self.identities_per_batch]
            for identity in chosen.tolist():
                members = self.members[identity]
                if len(members) >= k:
                    picks = members[torch.randperm(len(members), generator=generator)[:k]]
                else:
                    picks = members[torch.randint(len(members), (k,), generator=generator)]
                order.append(picks)
        order = torch.cat(order)
        if len(order) < total:  # past the full batches (dropped in training): any images
            order = torch.cat([order, torch.randint(total, (total - len(order),), generator=generator)])
        return order

    def _epoch_slots(self) -> torch.Tensor:
        """Under DDP each rank takes whole P x K batches (global batch i x world_size + rank), not every
        world_size-th image, which would split each identity's K images over the ranks."""
        blocks = torch.arange(len(self)) * self.world_size + self.rank  # this rank's batches in the epoch order
        return (blocks[:, None] * self.batch_size + torch.arange(self.batch_size)).flatten()


def make_loader(dataset: ArrayDataset, preprocessing: Preprocessing, config, device: torch.device, train: bool,
                pk: bool = False, dist_info: DistInfo = DistInfo()) -> TensorLoader:
    """Training: shuffled (or P x K with `pk`), augmented, full batches; under DDP each rank its share of every
    epoch, batch_size / world_size images per rank (the global batch stays batch_size). Evaluation: every image
    once, in order, on every rank (verification scores every pair: each rank computes the same metrics)."""
    world = dist_info.world_size if train else 1
    options = dict(batch_size=max(1, config.batch_size // world) if train else max(config.batch_size, 512),
                   mean=list(preprocessing.mean), std=list(preprocessing.std), shuffle=train,
                   augment=config.augment_config() if train else None, drop_last=train, seed=config.seed,
                   channels_last=config.channels_last, device=device,
                   rank=dist_info.rank if train else 0, world_size=world)
    if train and pk:
        return PKLoader(dataset.images, dataset.labels, config.images_per_identity, **options)
    return TensorLoader(dataset.images, dataset.labels, **options)
