"""Pretraining data: images with or without labels, read into memory; the two-view loader; the kNN loader.

- `fashion-mnist`, a class-folder tree (or train/ and test/ trees), a CSV: the labels are never trained on;
  they feed the kNN monitor (validation: `val_fraction` of the training images, stratified and seeded) and
  `cnnkit evaluate` (kNN and linear probe on the test split).
- A folder whose images lie directly in it (any subfolders below are read too): unlabeled. Nothing to
  monitor but the loss; every image trains.

Views come from the batched in-memory augmentation (cnnkit.data.augment): every augmentation draws its
parameters for the epoch once per view, from its own seeded stream, so the two views of an image differ and
a resumed run repeats them. The batched ops may reorder a batch (grouping equal parameters); each view is
put back in the batch's order, so row i of both views is image i.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnkit.config import AugmentConfig
from cnnkit.data import ArrayDataset, TensorLoader, compute_mean_std, load_dataset
from cnnkit.data.images import is_image_file
from cnnkit.data.loader import epoch_generator
from cnnkit.data.preprocess import Preprocessing
from cnnkit.data.splits import train_val_split
from cnnkit.errors import DataError
from cnnkit.metrics.knn import BANK, QUERY

VIEW_STREAM = 41  # epoch_generator stream of the views' augmentation parameters (view v: 41 + v)
BLUR_PROBABILITY = 0.5  # SimCLR's (view 1: 1.0, view 2: 0.1 in BYOL; one value here)
BLUR_SIGMA = (0.1, 2.0)  # SimCLR's range; the 3x3 kernel is ~10% of a 28 px side, as SimCLR's 23 px of 224


@dataclass
class PretrainData:
    """Images to pretrain on; labelled splits when the data has labels.

    Attributes:
        train: The images pretraining sees (labels kept only for the kNN bank).
        val: Labelled validation images (the kNN monitor's queries), or None.
        test: Labelled test images (`cnnkit evaluate`), or None.
        classes: Class names; [] for unlabeled data.
    """

    train: ArrayDataset
    val: ArrayDataset | None
    test: ArrayDataset | None
    classes: list[str]
    preprocessing: Preprocessing

    @property
    def labelled(self) -> bool:
        return bool(self.classes)


def _loose_images(root: Path) -> list[Path] | None:
    """The image files of an unlabeled folder (images directly in `root`), sorted; None for class folders."""
    if not root.is_dir() or not any(is_image_file(path) for path in root.iterdir() if path.is_file()):
        return None
    return sorted(path for path in root.rglob("*") if path.is_file() and is_image_file(path)
                  and not any(part.startswith(".") for part in path.relative_to(root).parts))


def read_pretrain_data(config, preprocessing: Preprocessing | None = None) -> PretrainData:
    """Read the data named by config.data (see the module docstring) and split off labelled validation images."""
    from cnnkit.data.folder import DEFAULT_MEMORY_BUDGET, _load_files

    size = (config.image_size, config.image_size) if config.image_size else None
    channels = config.channels
    if preprocessing is not None:
        channels, size = preprocessing.channels, tuple(preprocessing.image_size)
    root = Path(str(config.data)).expanduser()
    loose = _loose_images(root)
    if loose is not None:
        train = _load_files(loose, [0] * len(loose), ["unlabeled"], channels, size, config.max_bad_fraction, None,
                            DEFAULT_MEMORY_BUDGET, f"image folder {root}")
        val = test = None
        classes: list[str] = []
    else:
        splits = load_dataset(config.data, channels=channels, size=size, max_bad_fraction=config.max_bad_fraction)
        train, test, classes = splits.train, splits.test, list(splits.classes)
        val = None
        if config.val_fraction > 0:
            train_index, val_index = train_val_split(len(train), config.val_fraction, config.seed, train.labels)
            train, val = train.subset(train_index), train.subset(val_index)
    if len(train) < 2:
        raise DataError(f"{config.data}: {len(train)} image(s) to pretrain on; self-supervised learning needs many "
                        "(thousands): add images")
    if preprocessing is None:
        mean, std = compute_mean_std(train.images)
        preprocessing = Preprocessing(train.channels, train.image_size, tuple(mean), tuple(std))
    return PretrainData(train, val, test, classes, preprocessing)


def view_augmentation(config, method: str, channels: int) -> AugmentConfig:
    """The augmentation of each view: SimCLR's recipe (views=simclr) or the config's own settings."""
    if config.views == "config":
        return config.augment_config()
    if method in ("mae", "beit"):  # MAE: random resized crop (0.2-1 at 224 px; milder at 28 px) and flip only
        return AugmentConfig(hflip=config.hflip, resized_crop=0.35)
    colour = dict(saturation=0.4, hue=0.1) if channels == 3 else {}
    return AugmentConfig(hflip=config.hflip, resized_crop=0.2, brightness=0.4, contrast=0.4, **colour)


class RandomBlur:
    """Gaussian blur (3x3, sigma drawn from BLUR_SIGMA) of each image with probability p: one grouped
    convolution per batch (a batched op like cnnkit.data.augment's; the images keep their order)."""

    def __init__(self, probability: float = BLUR_PROBABILITY, sigma: tuple[float, float] = BLUR_SIGMA):
        self.probability, self.sigma = probability, sigma

    def sample(self, num_samples: int, generator: torch.Generator) -> torch.Tensor:
        chosen = (torch.rand(num_samples, generator=generator) < self.probability).float()
        sigma = torch.empty(num_samples).uniform_(*self.sigma, generator=generator)
        return torch.stack([chosen, sigma], dim=1)  # (N, 2)

    def apply(self, images: torch.Tensor, labels: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, channels, height, width = images.shape
        params = params.to(images.device)
        offsets = torch.tensor([-1.0, 0.0, 1.0], device=images.device)
        kernel = torch.exp(-offsets.square() / (2 * params[:, 1:2].square()))  # (B, 3)
        kernel = kernel / kernel.sum(dim=1, keepdim=True)
        identity = torch.tensor([0.0, 1.0, 0.0], device=images.device).expand(batch, 3)
        kernel = torch.where(params[:, :1] > 0, kernel, identity).repeat_interleave(channels, dim=0)  # (B*C, 3)
        x = F.pad(images.float().reshape(1, batch * channels, height, width), (1, 1, 1, 1), mode="replicate")
        x = F.conv2d(x, kernel.view(-1, 1, 3, 1), groups=batch * channels)  # vertical pass
        x = F.conv2d(x, kernel.view(-1, 1, 1, 3), groups=batch * channels)  # horizontal pass
        return x.view(batch, channels, height, width).round_().clamp_(0, 255).to(torch.uint8), labels


class ViewLoader(TensorLoader):
    """Training batches of `num_views` augmented views of the same images: (views (num_views x B, C, H, W) with
    view v in rows v*B ... (v+1)*B - 1, labels (B,)). Labels are never trained on."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, num_views: int, blur: bool = False, **options):
        super().__init__(images, labels, **options)
        self.num_views = num_views
        if blur:
            self.augmentations = [*self.augmentations, RandomBlur()]

    def _view_params(self, epoch: int, slots: torch.Tensor) -> list[list[torch.Tensor]]:
        total = self.images.shape[0]
        return [[augmentation.sample(total, epoch_generator(self.seed, epoch, VIEW_STREAM + view, index))[slots]
                 for index, augmentation in enumerate(self.augmentations)] for view in range(self.num_views)]

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        slots = self._epoch_slots()
        positions = self.epoch_order(epoch)[slots]
        params = self._view_params(epoch, slots)
        device_positions = positions.to(self.device)
        for batch_index in range(len(self)):
            start = batch_index * self.batch_size
            stop = min(start + self.batch_size, positions.shape[0])
            indices = device_positions[start:stop]
            originals = self.images.index_select(0, indices)  # (B, C, H, W) uint8
            views = []
            for view_params in params:
                images, rows = originals, torch.arange(len(indices), device=self.device)
                for augmentation, values in zip(self.augmentations, view_params):
                    images, rows = augmentation.apply(images, rows, values[start:stop])
                views.append(images[rows.argsort()])  # back to the batch's order: row i is image i
            yield self._normalize(torch.cat(views)), self.labels.index_select(0, indices)


class KNNLoader:
    """The kNN monitor's evaluation batches: the bank (labelled training images), then the queries, unaugmented;
    targets (B, 2): (label, BANK or QUERY)."""

    def __init__(self, bank: ArrayDataset, queries: ArrayDataset | None, preprocessing: Preprocessing, config,
                 device: torch.device):
        self.parts = [(make_eval_loader(bank, preprocessing, config, device), BANK)]
        if queries is not None:
            self.parts.append((make_eval_loader(queries, preprocessing, config, device), QUERY))

    def __len__(self) -> int:
        return sum(len(loader) for loader, _ in self.parts)

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):
        for loader, role in self.parts:
            for images, labels in loader:
                yield images, torch.stack([labels, torch.full_like(labels, role)], dim=1)


def make_eval_loader(dataset: ArrayDataset, preprocessing: Preprocessing, config, device: torch.device) -> TensorLoader:
    """Every image once, in order, unaugmented."""
    return TensorLoader(dataset.images, dataset.labels, batch_size=max(config.batch_size, 512),
                        mean=list(preprocessing.mean), std=list(preprocessing.std), shuffle=False, augment=None,
                        drop_last=False, seed=config.seed, channels_last=config.channels_last, device=device)


def make_view_loader(dataset: ArrayDataset, preprocessing: Preprocessing, config, device: torch.device,
                     method: str, dist_info=None) -> ViewLoader:
    """The training loader: two views per image for simclr/moco, one for mae/beit. Under torchrun each process
    takes its share of every epoch (the same permutation on every rank), batch_size / world images per step.
    The kNN monitor's loader is not sharded: every process computes the same accuracy."""
    rank, world = (dist_info.rank, dist_info.world_size) if dist_info is not None else (0, 1)
    contrastive = method in ("simclr", "moco")
    augment = view_augmentation(config, method, preprocessing.channels)
    return ViewLoader(dataset.images, dataset.labels, num_views=2 if contrastive else 1,
                      blur=contrastive and config.views == "simclr", batch_size=config.batch_size // world,
                      mean=list(preprocessing.mean), std=list(preprocessing.std), shuffle=True, augment=augment,
                      drop_last=True, seed=config.seed, channels_last=config.channels_last, device=device,
                      rank=rank, world_size=world)
