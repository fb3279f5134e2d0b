"""Contracts of the streaming data path: listing files, preprocessing from a sample, StreamingLoader."""

from __future__ import annotations

from pathlib import Path

import numpy
import pytest
import torch
from PIL import Image

import cnnkit.data.statistics as statistics
from cnnkit.data import (
    AugmentConfig,
    FileSplit,
    SkippedImagesWarning,
    StreamingLoader,
    TensorLoader,
    compute_mean_std,
    decode_image,
    estimate_mean_std,
    infer_size_and_channels,
    load_image_folder,
    scan_dataset,
)
from cnnkit.errors import ConfigError, DataError, DatasetNotFoundError

torch.set_num_threads(1)

CLASSES = ["ant", "bee", "cat"]
SIZE = (36, 36)
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


def write_image(path: Path, rng: numpy.random.Generator, size=SIZE, gray: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size if gray else (*size, 3)
    Image.fromarray(rng.integers(0, 256, shape, dtype=numpy.uint8)).save(path)


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    """train/: 3 classes x 20 noise PNGs (every 5th grayscale) + one corrupt file; test/: bee and cat only."""
    root = tmp_path_factory.mktemp("streaming") / "photos"
    rng = numpy.random.default_rng(0)
    for name in CLASSES:
        for number in range(20):
            write_image(root / "train" / name / f"{number:02d}.png", rng, gray=number % 5 == 0)
    (root / "train" / "bee" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    for name in ("bee", "cat"):
        for number in range(3):
            write_image(root / "test" / name / f"{number}.png", rng)
    return root


@pytest.fixture(scope="module")
def clean_train(dataset_root) -> tuple[FileSplit, torch.Tensor]:
    """The training split without its corrupt file, and its images decoded in one (60, 3, 36, 36) stack."""
    train = scan_dataset(dataset_root).train
    split = train.subset([index for index, path in enumerate(train.paths) if path.name != "broken.png"])
    return split, torch.stack([decode_image(path, 3, SIZE) for path in split.paths])


def loader_arguments(**overrides) -> dict:
    arguments = dict(batch_size=8, mean=MEAN, std=STD, shuffle=True, augment=None, drop_last=False, seed=3)
    arguments.update(overrides)
    return arguments


def streaming_loader(split: FileSplit, num_workers: int = 0, **overrides) -> StreamingLoader:
    return StreamingLoader(split, 3, SIZE, num_workers=num_workers, **loader_arguments(**overrides))


def identify(images: torch.Tensor, stack: torch.Tensor) -> list[int]:
    """Indices into ``stack`` of each normalized image of ``images`` (exact match of the values)."""
    labels = torch.zeros(len(stack), dtype=torch.int64)
    expected = TensorLoader(stack, labels, **loader_arguments(shuffle=False))._normalize(stack)
    index_of = {row.numpy().tobytes(): index for index, row in enumerate(expected)}
    return [index_of[row.contiguous().numpy().tobytes()] for row in images]


def test_scan_dataset_lists_train_and_test_with_shared_classes(dataset_root):
    splits = scan_dataset(dataset_root)
    assert splits.name == "photos" and splits.classes == CLASSES
    assert len(splits.train) == 61 and splits.train.labels.dtype == torch.int64
    assert [CLASSES[label] for label in splits.train.labels.tolist()] == [path.parent.name for path in splits.train.paths]
    # test/ lacks "ant": its labels index the training classes, not its own folder list.
    assert splits.test.classes == CLASSES and splits.test.labels.tolist() == [1, 1, 1, 2, 2, 2]
    subset = splits.train.subset(torch.tensor([0, 60]))
    assert subset.paths == [splits.train.paths[0], splits.train.paths[60]] and subset.labels.tolist() == [0, 2]


def test_scan_dataset_class_tree_and_csv_are_train_only(dataset_root, tmp_path):
    tree = scan_dataset(dataset_root / "test")
    assert tree.test is None and tree.classes == ["bee", "cat"] and len(tree.train) == 6
    csv_path = tmp_path / "index.csv"
    csv_path.write_text(f"path,label\n{dataset_root / 'test/bee/0.png'},b\n{dataset_root / 'test/cat/1.png'},a\n")
    from_csv = scan_dataset(csv_path)
    assert from_csv.name == "index" and from_csv.test is None and from_csv.classes == ["a", "b"]
    assert from_csv.train.labels.tolist() == [1, 0] and from_csv.train.paths[0].name == "0.png"


def test_scan_dataset_rejects_what_it_cannot_stream(tmp_path):
    rng = numpy.random.default_rng(1)
    write_image(tmp_path / "d" / "train" / "a" / "0.png", rng)
    write_image(tmp_path / "d" / "test" / "zebra" / "0.png", rng)
    with pytest.raises(DataError, match="lacks: zebra"):
        scan_dataset(tmp_path / "d")
    with pytest.raises(DataError, match="in memory only"):
        scan_dataset("fashion-mnist")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not a .csv"):
        scan_dataset(tmp_path / "notes.txt")
    with pytest.raises(DatasetNotFoundError):
        scan_dataset(tmp_path / "missing" / "folder")


def test_infer_size_and_channels_decides_like_load_image_folder(dataset_root, tmp_path):
    assert infer_size_and_channels(scan_dataset(dataset_root).train) == (3, SIZE)
    rng = numpy.random.default_rng(2)
    sizes = [(20, 30), (24, 30), (22, 28), (21, 31)]
    for number, size in enumerate(sizes):
        write_image(tmp_path / "gray" / "a" / f"{number}.png", rng, size=size, gray=True)
    # An RGB file whose pixels are gray: judged by its pixels, as load_image_folder does.
    pixels = rng.integers(0, 256, (20, 30), dtype=numpy.uint8)
    Image.fromarray(numpy.stack([pixels] * 3, axis=-1)).save(tmp_path / "gray" / "a" / "rgb.png")
    split = scan_dataset(tmp_path / "gray").train
    in_memory = load_image_folder(tmp_path / "gray")
    assert infer_size_and_channels(split) == (in_memory.channels, in_memory.image_size) == (1, (21, 30))
    assert infer_size_and_channels(split, channels=3) == (3, (21, 30))
    assert infer_size_and_channels(split, sample=2, seed=0, size=(8, 8))[1] == (8, 8)


def test_unaugmented_epoch_is_bit_identical_to_tensor_loader(clean_train):
    split, stack = clean_train
    for arguments in (dict(shuffle=True, drop_last=True), dict(shuffle=False, drop_last=False, channels_last=True)):
        streamed = streaming_loader(split, **arguments)
        in_memory = TensorLoader(stack, split.labels, **loader_arguments(**arguments))
        assert len(streamed) == len(in_memory) and streamed.num_samples == in_memory.num_samples
        batches = list(streamed)
        assert len(batches) == len(in_memory)
        for (images, labels), (expected_images, expected_labels) in zip(batches, in_memory):
            assert images.dtype == torch.float32 and labels.dtype == torch.int64
            assert images.shape == (len(labels), 3, *SIZE)
            assert images.is_contiguous(memory_format=torch.channels_last) == arguments.get("channels_last", False)
            assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    # Every sample exactly once, in file order, without shuffle.
    order = identify(torch.cat([images for images, _ in streaming_loader(split, shuffle=False)]), stack)
    assert order == list(range(60))


def test_order_depends_only_on_seed_and_epoch(clean_train):
    split, stack = clean_train
    loader = streaming_loader(split)
    epoch_0 = identify(torch.cat([images for images, _ in loader]), stack)
    epoch_1 = identify(torch.cat([images for images, _ in loader]), stack)  # no set_epoch: moves on
    resumed = streaming_loader(split)
    resumed.set_epoch(1)
    assert identify(torch.cat([images for images, _ in resumed]), stack) == epoch_1
    assert sorted(epoch_0) == sorted(epoch_1) == list(range(60)) and epoch_0 != epoch_1
    other_seed = streaming_loader(split, seed=4)
    assert identify(torch.cat([images for images, _ in other_seed]), stack) != epoch_0


def test_two_ranks_take_disjoint_shards_that_cover_the_epoch(clean_train):
    split, stack = clean_train
    shards = []
    for rank in range(2):
        loader = streaming_loader(split, rank=rank, world_size=2)
        assert loader.num_samples == 30 and len(loader) == 4
        shards.append(identify(torch.cat([images for images, _ in loader]), stack))
    assert len(shards[0]) == len(shards[1]) == 30
    assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == list(range(60))
    # Interleaving the shards gives the single-process order (same permutation on every rank).
    single = identify(torch.cat([images for images, _ in streaming_loader(split)]), stack)
    assert [index for pair in zip(*shards) for index in pair] == single
    for count, drop_last in ((59, False), (59, True)):
        subset = split.subset(range(count))
        for rank in range(2):
            arguments = loader_arguments(drop_last=drop_last, rank=rank, world_size=2)
            streamed = StreamingLoader(subset, 3, SIZE, **arguments)
            in_memory = TensorLoader(stack[:count], subset.labels, **arguments)
            assert (streamed.num_samples, len(streamed)) == (in_memory.num_samples, len(in_memory))


def test_augmentation_is_flip_and_shift_seeded_per_sample_not_per_worker(clean_train):
    split, stack = clean_train
    augment = AugmentConfig(hflip=True, translate=2, translate_padding="zeros")
    arguments = dict(shuffle=False, augment=augment, batch_size=60)
    torch.manual_seed(0)
    images, _ = next(iter(streaming_loader(split, **arguments)))
    after_loading = torch.rand(4)
    torch.manual_seed(0)
    # The global RNG of the main process is not consumed (the Trainer seeds dropout from it).
    assert torch.equal(after_loading, torch.rand(4))
    expected = TensorLoader(stack, split.labels, **loader_arguments(shuffle=False))
    padded = torch.nn.functional.pad(stack, (2, 2, 2, 2))
    flips, shifts = 0, 0
    for index in range(60):
        candidates = {
            (flip, dy, dx): expected._normalize(padded[index : index + 1, :, dy : dy + 36, dx : dx + 36].flip(-1) if flip
                                                else padded[index : index + 1, :, dy : dy + 36, dx : dx + 36])[0]
            for flip in (False, True) for dy in range(5) for dx in range(5)
        }
        matches = [key for key, value in candidates.items() if torch.equal(value, images[index])]
        assert matches, f"sample {index} is no flip/shift of its image"
        flips += matches[0][0]
        shifts += matches[0][1:] != (2, 2)
    assert 10 < flips < 50 and shifts > 30
    # Two workers, another batch size, a later run started at this epoch: the same augmentation.
    again = torch.cat([x for x, _ in streaming_loader(split, num_workers=2, shuffle=False, augment=augment, batch_size=16)])
    assert torch.equal(again, images)


def test_corrupt_file_is_skipped_and_named_at_the_end_of_the_epoch(dataset_root):
    train = scan_dataset(dataset_root).train
    loader = streaming_loader(train, num_workers=2)
    with pytest.warns(SkippedImagesWarning, match=r"skipped 1 unreadable image of 61: .*broken\.png") as record:
        batches = list(loader)
    assert sum(len(labels) for _, labels in batches) == 60 and len(batches) == len(loader) == 8
    assert [path.name for path, _ in loader.skipped] == ["broken.png"]
    assert record[0].message.skipped == loader.skipped


def test_too_many_unreadable_files_abort(tmp_path):
    rng = numpy.random.default_rng(3)
    for number in range(4):
        write_image(tmp_path / "d" / "a" / f"{number}.png", rng)
    for number in range(2):
        (tmp_path / "d" / "a" / f"bad{number}.png").write_bytes(b"garbage")
    loader = streaming_loader(scan_dataset(tmp_path / "d").train, shuffle=False, batch_size=2, mean=[0.5] * 3)
    with pytest.raises(DataError, match=r"2 unreadable images of 6, more than the 1 allowed.*bad0\.png.*bad1\.png"):
        list(loader)


def test_estimate_mean_std_matches_the_exact_statistics(dataset_root, clean_train, monkeypatch):
    _, stack = clean_train
    exact_mean, exact_std = compute_mean_std(stack)
    train = scan_dataset(dataset_root).train  # with the corrupt file, which is skipped
    mean, std = estimate_mean_std(train, 3, SIZE)
    assert mean == pytest.approx(exact_mean, abs=1e-12) and std == pytest.approx(exact_std, abs=1e-12)
    monkeypatch.setattr(statistics, "_CHUNK", 7)  # several chunks, combined
    mean, std = estimate_mean_std(train, 3, SIZE, num_workers=1)
    assert mean == pytest.approx(exact_mean, abs=1e-12) and std == pytest.approx(exact_std, abs=1e-12)
    mean, std = estimate_mean_std(train, 3, SIZE, max_images=20, seed=1)
    assert mean == pytest.approx(exact_mean, abs=0.01) and std == pytest.approx(exact_std, abs=0.01)
    assert mean != pytest.approx(exact_mean, abs=1e-9)  # a sample, not everything


def test_streaming_loader_validates_its_arguments(clean_train):
    split, _ = clean_train
    with pytest.raises(ConfigError, match="one value per channel"):
        streaming_loader(split, mean=[0.5])
    with pytest.raises(ConfigError, match="reflect padding needs images larger"):
        StreamingLoader(split, 3, (2, 2), **loader_arguments(augment=AugmentConfig(translate=2)))
    with pytest.raises(ConfigError, match="rank must be"):
        streaming_loader(split, rank=2, world_size=2)


def test_grayscale_streaming_decodes_like_decode_image(clean_train):
    split, _ = clean_train
    loader = StreamingLoader(split, 1, (8, 8), **loader_arguments(mean=[0.5], std=[0.5], shuffle=False, batch_size=64))
    (images, labels), = list(loader)
    assert images.shape == (60, 1, 8, 8) and labels.tolist() == split.labels.tolist()
    decoded = torch.stack([decode_image(path, 1, (8, 8)) for path in split.paths])
    assert torch.equal(images, decoded.float() * (1 / 127.5) - 1.0)
