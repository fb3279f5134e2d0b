"""The data pipeline's single statistics, split, decoder and sharded loader give each caller exactly
what the code they replaced gave (issue 18: the measured figures and resumed runs depend on it).

The `_old_*` functions are frozen copies of the replaced code (commit 1a1d57b), kept here as oracles;
equality is bit-for-bit (torch.equal / ==), never approximate.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from cnnkit.data import compute_mean_std, estimate_mean_std, train_val_split
from cnnkit.data import statistics
from cnnkit.data.images import decode_image, decode_image_float
from cnnkit.data.loader import epoch_generator
from cnnkit.data.segmentation import SegmentationFiles, SegmentationLoader, mean_std, read_image
from cnnkit.data.sharded_loader import ShardedLoader
from cnnkit.data.streaming import FileSplit
from cnnkit.tasks.detection.data import image_statistics, read_detection_data
from cnnkit.tasks.segmentation.data import prepare_data


# ------------------------------------------------------------------------------------------ old code (oracles)
def _old_compute_mean_std(images, chunk_size=4096):
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk_size):
        chunk = images[start : start + chunk_size].to(torch.float64)
        total += chunk.sum(dim=(0, 2, 3))
        total_squares += chunk.square().sum(dim=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    variance = (total_squares / count - mean.square()).clamp_min(0.0)
    return (mean / 255.0).tolist(), (variance.sqrt() / 255.0).tolist()


def _old_estimate_mean_std(split, channels, size, max_images, seed, chunk):
    total = len(split)
    if total <= max_images:
        indices = list(range(total))
    else:
        indices = sorted(torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:max_images].tolist())
    paths = [split.paths[index] for index in indices]
    count, first, second = 0, torch.zeros(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(paths), chunk):
        images = [decode_image(path, channels, size) for path in paths[start : start + chunk]]
        mean, std = (torch.tensor(values, dtype=torch.float64) for values in _old_compute_mean_std(torch.stack(images)))
        count += len(images)
        first += len(images) * mean
        second += len(images) * (std.square() + mean.square())
    mean = first / count
    return mean.tolist(), (second / count - mean.square()).clamp_min(0.0).sqrt().tolist()


def _old_segmentation_mean_std(files, channels, max_images=256, seed=0):
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(files), generator=generator)[:max_images].tolist()
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for index in chosen:
        image = read_image(files.pairs[index][0], channels).double()
        total += image.sum(dim=(1, 2))
        squares += image.square().sum(dim=(1, 2))
        count += image[0].numel()
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt().clamp_min(1e-3)
    return mean.tolist(), std.tolist()


def _old_image_statistics(annotations, count=256):
    step = max(1, len(annotations.images) // count)
    total, squares, pixels = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0
    for image in annotations.images[::step][:count]:
        values = decode_image(image.file, channels=3).double().div_(255).flatten(1)
        total += values.sum(dim=1)
        squares += (values ** 2).sum(dim=1)
        pixels += values.shape[1]
    mean = total / pixels
    std = (squares / pixels - mean ** 2).clamp(min=1e-8).sqrt()
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def _old_detection_split(count, fraction, seed):
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    held = max(1, round(fraction * count))
    return sorted(order[held:]), order[:held]


def _old_segmentation_split(count, fraction, seed):
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    held = max(1, round(count * fraction))
    return sorted(order[held:]), sorted(order[:held])


class _OldSegmentationLoader:
    def __init__(self, dataset, batch_size, train, seed=0, num_workers=0, rank=0, world_size=1, collate_fn=None):
        self.dataset, self.batch_size, self.train, self.seed = dataset, batch_size, train, seed
        self.num_workers, self.rank, self.world_size, self.collate_fn = num_workers, rank, world_size, collate_fn
        self.epoch = 0

    def _indices(self, epoch):
        count = len(self.dataset)
        if not self.train:
            return list(range(self.rank, count, self.world_size))
        order = torch.randperm(count, generator=epoch_generator(self.seed, epoch)).tolist()
        return order[self.rank::self.world_size]

    def __len__(self):
        count = len(self._indices(0))
        return count // self.batch_size if self.train else -(-count // self.batch_size)

    def __iter__(self):
        indices = self._indices(self.epoch)
        if self.train:
            indices = indices[:len(self) * self.batch_size]
        yield from DataLoader(Subset(self.dataset, indices), batch_size=self.batch_size, shuffle=False,
                              num_workers=self.num_workers, collate_fn=self.collate_fn,
                              generator=epoch_generator(self.seed, self.epoch, 1))


# ------------------------------------------------------------------------------------------------ fixtures
def _write_images(folder: Path, count: int, seed: int = 0, size=(9, 13)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = numpy.random.default_rng(seed)
    paths = []
    for index in range(count):
        path = folder / f"{index:03d}.png"
        height, width = (size[0] + index % 3, size[1] + index % 2)  # sizes differ
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=numpy.uint8)).save(path)
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------------------ statistics
def test_compute_mean_std_is_the_old_arithmetic():
    images = torch.randint(0, 256, (37, 3, 11, 7), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    for chunk_size in (4096, 5):
        assert compute_mean_std(images, chunk_size) == _old_compute_mean_std(images, chunk_size)
    constant = torch.full((4, 1, 3, 3), 77, dtype=torch.uint8)
    assert compute_mean_std(constant) == _old_compute_mean_std(constant)
    assert compute_mean_std(constant)[1] == [0.0]


def test_estimate_mean_std_is_the_old_sample_and_arithmetic(tmp_path, monkeypatch):
    paths = _write_images(tmp_path / "files", 23)
    split = FileSplit(paths, [0] * len(paths), ["a"])
    monkeypatch.setattr(statistics, "_CHUNK", 4)  # several chunks to combine
    for max_images in (10, 2000):  # a seeded sample, and every file
        for channels in (1, 3):
            expected = _old_estimate_mean_std(split, channels, (8, 8), max_images, seed=3, chunk=4)
            assert estimate_mean_std(split, channels, (8, 8), max_images=max_images, seed=3) == expected


def test_segmentation_mean_std_is_the_old_sample_and_arithmetic(tmp_path):
    paths = _write_images(tmp_path / "images", 9)
    sixteen = tmp_path / "images" / "deep.png"  # 16-bit: min-max scaled, not cut to 8 bits
    Image.fromarray(numpy.arange(12 * 10, dtype=numpy.uint16).reshape(12, 10) * 300).save(sixteen)
    files = SegmentationFiles([(path, path) for path in [*paths, sixteen]], ["background", "x"], "scenes")
    for max_images, seed in ((256, 0), (4, 7)):
        for channels in (1, 3):
            assert mean_std(files, channels, max_images, seed) == _old_segmentation_mean_std(files, channels,
                                                                                             max_images, seed)


def test_detection_image_statistics_are_the_old_spread_and_rounding(tmp_path):
    paths = _write_images(tmp_path / "images", 11)
    annotations = SimpleNamespace(images=[SimpleNamespace(file=path) for path in paths])
    for count in (256, 4, 3):
        assert image_statistics(annotations, count) == _old_image_statistics(annotations, count)


def test_statistics_by_hand():
    image = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])  # (1, 2, 2): mean 0.5, std 0.5
    assert statistics.images_mean_std([image, image], 1) == ([0.5], [0.5])
    assert statistics.images_mean_std([torch.zeros(1, 2, 2)], 1, std_floor=1e-3) == ([0.0], [1e-3])
    assert statistics.spread_indices(10, 4) == [0, 2, 4, 6]
    assert statistics.spread_indices(3, 256) == [0, 1, 2]
    assert statistics.sample_indices(5, 10, 0) == [0, 1, 2, 3, 4]
    drawn = statistics.sample_indices(5, 10, 0, sort=False)
    assert sorted(drawn) == [0, 1, 2, 3, 4] and drawn != [0, 1, 2, 3, 4]


# ------------------------------------------------------------------------------------------------ decoder
def test_float_decoder_is_uint8_over_255_and_sixteen_bit_min_max(tmp_path):
    path = _write_images(tmp_path, 1)[0]
    assert torch.equal(decode_image_float(path, 3), decode_image(path, 3).float().div_(255))
    assert read_image is decode_image_float
    sixteen = tmp_path / "deep.png"
    values = numpy.array([[1000, 3000], [5000, 9000]], dtype=numpy.uint16)
    Image.fromarray(values).save(sixteen)
    expected = torch.tensor([[0.0, 0.25], [0.5, 1.0]]).expand(3, -1, -1)
    assert torch.equal(decode_image_float(sixteen, 3), expected)


# ------------------------------------------------------------------------------------------------ split
@pytest.mark.parametrize("count,fraction,seed", [(10, 0.2, 0), (101, 0.1, 3), (7, 0.01, 5), (1000, 0.15, 42)])
def test_split_gives_each_caller_its_old_indices_and_order(count, fraction, seed):
    train, val = train_val_split(count, fraction, seed, min_val=1, val_order="drawn")
    assert (train.tolist(), val.tolist()) == _old_detection_split(count, fraction, seed)
    train, val = train_val_split(count, fraction, seed, min_val=1)
    assert (train.tolist(), val.tolist()) == _old_segmentation_split(count, fraction, seed)
    # Classification (no minimum, sorted): the permutation's first round(f * n), both parts sorted.
    permutation = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    held = round(fraction * count)
    train, val = train_val_split(count, fraction, seed)
    assert val.tolist() == sorted(permutation[:held].tolist())
    assert train.tolist() == sorted(permutation[held:].tolist())


def test_stratified_split_is_unchanged():
    labels = torch.tensor([0] * 6 + [1] * 4 + [2] * 10)
    generator = torch.Generator().manual_seed(9)
    expected = []
    for label in (0, 1, 2):
        members = torch.nonzero(labels == label).flatten()
        order = torch.randperm(members.numel(), generator=generator)
        expected += members[order[:round(0.3 * members.numel())]].tolist()
    train, val = train_val_split(20, 0.3, 9, labels=labels)
    assert val.tolist() == sorted(expected)
    assert sorted(train.tolist() + val.tolist()) == list(range(20))


def test_segmentation_prepare_data_splits_as_before(tmp_path):
    (tmp_path / "classes.txt").write_text("thing\n")
    folder = tmp_path / "train"
    _write_images(folder / "images", 12, size=(8, 8))
    (folder / "masks").mkdir()
    for path in (folder / "images").iterdir():
        Image.fromarray(numpy.zeros((8, 8), numpy.uint8), mode="L").save(folder / "masks" / path.name)
    config = SimpleNamespace(data=tmp_path, val_fraction=0.25, seed=4, ignore_index=255, channels=3, image_size=8)
    data = prepare_data(config, check=False)
    names = sorted((folder / "images").iterdir())
    train, val = _old_segmentation_split(12, 0.25, 4)
    assert [pair[0] for pair in data.train.pairs] == [names[i] for i in train]
    assert [pair[0] for pair in data.val.pairs] == [names[i] for i in val]
    expected = _old_segmentation_mean_std(SegmentationFiles([(names[i], names[i]) for i in train], [], ""), 3, seed=4)
    assert (list(data.preprocessing.mean), list(data.preprocessing.std)) == expected


def test_detection_read_data_splits_as_before(tmp_path):
    root = tmp_path / "yolo"
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labels").mkdir()
    for index in range(10):
        Image.new("RGB", (20, 20)).save(root / f"train/images/{index:02d}.png")
        (root / f"train/labels/{index:02d}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "classes.txt").write_text("a\n")
    config = SimpleNamespace(data=root, val_fraction=0.3, seed=2)
    data = read_detection_data(config, verbose=False, splits=("train", "val"))
    train, val = _old_detection_split(10, 0.3, 2)
    assert [Path(image.file).stem for image in data.val.images] == [f"{i:02d}" for i in val]
    assert [Path(image.file).stem for image in data.train.images] == [f"{i:02d}" for i in train]


# ------------------------------------------------------------------------------------------------ loader
class _Items(Dataset):
    """Item i is (i, a draw of the global RNG): shows order and the transforms' random stream."""

    def __init__(self, count: int):
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        return torch.tensor(index), torch.rand(1)


def _batches(loader, epoch):
    loader.set_epoch(epoch) if hasattr(loader, "set_epoch") else setattr(loader, "epoch", epoch)
    torch.manual_seed(123)
    return [(indices.tolist(), draws) for indices, draws in loader]


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("batch_size", [1, 4, 7])
def test_one_process_yields_exactly_the_old_batches(train, batch_size):
    dataset = _Items(103)
    new, old = ShardedLoader(dataset, batch_size, train, seed=5), _OldSegmentationLoader(dataset, batch_size, train, 5)
    assert len(new) == len(old)
    for epoch in (0, 3):
        got, expected = _batches(new, epoch), _batches(old, epoch)
        assert [indices for indices, _ in got] == [indices for indices, _ in expected]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(got, expected))
    assert SegmentationLoader is ShardedLoader


@pytest.mark.parametrize("batch_size", [1, 4])
def test_every_rank_gets_the_same_number_of_training_batches(batch_size):
    dataset = _Items(1001)
    loaders = [ShardedLoader(dataset, batch_size, True, seed=1, rank=rank, world_size=2) for rank in (0, 1)]
    assert len(loaders[0]) == len(loaders[1]) == 501 // batch_size
    seen = []
    for loader in loaders:
        batches = [indices.tolist() for indices, _ in loader]
        assert len(batches) == len(loader)
        seen += [index for batch in batches for index in batch]
    if batch_size == 1:  # 1001 padded to 1002: every item once, the permutation's first one twice
        assert sorted(set(seen)) == list(range(1001)) and len(seen) == 1002
    # Old sharding for this case: 501 vs 500 batches, which deadlocks DDP's gradient all-reduce.
    old = [_OldSegmentationLoader(dataset, 1, True, 1, rank=rank, world_size=2) for rank in (0, 1)]
    assert (len(old[0]), len(old[1])) == (501, 500)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_evaluation_shards_count_every_item_once(batch_size):
    dataset = _Items(1001)
    loaders = [ShardedLoader(dataset, batch_size, False, rank=rank, world_size=2) for rank in (0, 1)]
    seen = [index for loader in loaders for indices, _ in loader for index in indices.tolist()]
    assert sorted(seen) == list(range(1001))  # no padding, so no duplicate in the metrics
    lengths = [len(loader) for loader in loaders]
    assert lengths == ([501, 500] if batch_size == 1 else [126, 125])  # documented: may differ by one
    assert [sum(1 for _ in loader) for loader in loaders] == lengths


def test_tiny_training_set_pads_cyclically_and_checks_batches():
    loaders = [ShardedLoader(_Items(2), 1, True, rank=rank, world_size=3) for rank in range(3)]
    assert [len(loader) for loader in loaders] == [1, 1, 1]
    from cnnkit.errors import ConfigError

    with pytest.raises(ConfigError, match="no full batch"):
        ShardedLoader(_Items(3), 4, True)


# ------------------------------------------------------------------------------------------------ transforms
def test_every_v2_pipeline_comes_from_data_transforms():
    from cnnkit.data import segmentation, streaming, transforms
    from cnnkit.data.augment import AugmentConfig
    from cnnkit.data.detection.transforms import detection_transforms

    assert streaming.build_transform is transforms.image_transform
    assert segmentation.segmentation_transform is transforms.mask_transform
    built = detection_transforms("strong", size=(32, 32))
    steps = [type(step).__name__ for step in built.transforms]
    assert steps == ["RandomHorizontalFlip", "RandomApply", "RandomAffine", "ColorJitter", "ClampBoundingBoxes",
                     "SanitizeBoundingBoxes"]
    # 0 means off for each colour factor, in every recipe (v2 draws nothing for an off factor).
    jitter = transforms.image_transform(AugmentConfig(brightness=0.2), (8, 8)).transforms[0]
    assert (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue) == ((0.8, 1.2), None, None, None)
