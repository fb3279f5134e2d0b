"""Data contracts: IDX parsing, Fashion-MNIST location/download, splits, statistics, load_dataset.

Images, folders and CSV: test_data_images.py. The batch loader: test_data_loader.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import urllib.error
from pathlib import Path

import numpy
import pytest
import torch
from PIL import Image

import cnnkit.data.fashion_mnist as fashion_mnist
from cnnkit.data import (
    FASHION_MNIST_CLASSES,
    ArrayDataset,
    compute_mean_std,
    load_dataset,
    load_fashion_mnist,
    read_idx,
    train_val_split,
)
from cnnkit.errors import DataError, DatasetNotFoundError

torch.set_num_threads(1)

SYSTEM_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(
    not (SYSTEM_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(), reason="Fashion-MNIST not installed"
)


def idx_bytes(array: numpy.ndarray, type_code: int = 0x08) -> bytes:
    """An IDX file's bytes, written by hand from the format's definition."""
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_tiny_fashion_mnist(folder: Path, compress: bool) -> None:
    """Four tiny files with the official names: 6 train images (labels 0..5), 3 test (labels 7..9)."""
    folder.mkdir(parents=True, exist_ok=True)
    contents = {
        "train-images-idx3-ubyte": numpy.arange(6 * 28 * 28, dtype=numpy.uint8).reshape(6, 28, 28),
        "train-labels-idx1-ubyte": numpy.arange(6, dtype=numpy.uint8),
        "t10k-images-idx3-ubyte": numpy.full((3, 28, 28), 200, dtype=numpy.uint8),
        "t10k-labels-idx1-ubyte": numpy.array([7, 8, 9], dtype=numpy.uint8),
    }
    for name, array in contents.items():
        data = idx_bytes(array)
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


@pytest.fixture
def no_fashion_mnist(tmp_path, monkeypatch):
    """Hides every place Fashion-MNIST could be found, and makes downloading fail."""
    monkeypatch.delenv("CNNKIT_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "SYSTEM_DIR", tmp_path / "no-system-dir")
    monkeypatch.setattr(fashion_mnist, "cache_dir", lambda: tmp_path / "cache")

    def offline(url, timeout=None):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(fashion_mnist.urllib.request, "urlopen", offline)
    return tmp_path


# --- IDX ---------------------------------------------------------------------------------------


def test_read_idx_parses_hand_written_uint8_file(tmp_path):
    path = tmp_path / "tiny-idx3-ubyte"
    path.write_bytes(struct.pack(">BBBBIII", 0, 0, 0x08, 3, 2, 2, 3) + bytes(range(12)))
    array = read_idx(path)
    assert array.dtype == numpy.uint8 and array.shape == (2, 2, 3)
    numpy.testing.assert_array_equal(array, numpy.arange(12).reshape(2, 2, 3))
    array[0, 0, 0] = 1  # owned and writeable, safe for torch.from_numpy


def test_read_idx_converts_big_endian_int16_to_native(tmp_path):
    path = tmp_path / "values-idx1-short"
    path.write_bytes(struct.pack(">BBBBI", 0, 0, 0x0B, 1, 3) + struct.pack(">3h", -2, 300, 7))
    array = read_idx(path)
    assert array.dtype == numpy.dtype(numpy.int16) and array.dtype.isnative
    assert array.tolist() == [-2, 300, 7]


@pytest.mark.parametrize("compress, name", [(True, "data-no-gz-suffix"), (False, "raw-named.gz"), (True, "data.gz")])
def test_read_idx_detects_gzip_by_content_not_name(tmp_path, compress, name):
    expected = numpy.arange(20, dtype=numpy.uint8).reshape(4, 5)
    data = idx_bytes(expected)
    (tmp_path / name).write_bytes(gzip.compress(data) if compress else data)
    numpy.testing.assert_array_equal(read_idx(tmp_path / name), expected)


def test_read_idx_truncated_payload_names_the_file(tmp_path):
    path = tmp_path / "cut-idx3-ubyte"
    path.write_bytes(idx_bytes(numpy.zeros((2, 3, 3), dtype=numpy.uint8))[:-1])
    with pytest.raises(DataError, match="truncated") as error:
        read_idx(path)
    assert str(path) in str(error.value) and "needs 18 bytes" in str(error.value)


def test_read_idx_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "cut.gz"
    compressed = gzip.compress(idx_bytes(numpy.arange(4000, dtype=numpy.int32).astype(numpy.uint8)))
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataError, match="truncated") as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_rejects_bad_magic_and_type_code(tmp_path):
    (tmp_path / "png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "png")
    (tmp_path / "bad-type").write_bytes(struct.pack(">BBBBI", 0, 0, 0x07, 1, 1) + b"\x00")
    with pytest.raises(DataError, match="unknown IDX element type code 0x07"):
        read_idx(tmp_path / "bad-type")


@needs_fashion_mnist
def test_read_idx_real_fashion_mnist_files():
    train_images = read_idx(SYSTEM_FASHION_MNIST / "train-images-idx3-ubyte.gz")
    train_labels = read_idx(SYSTEM_FASHION_MNIST / "train-labels-idx1-ubyte.gz")
    test_images = read_idx(SYSTEM_FASHION_MNIST / "t10k-images-idx3-ubyte.gz")
    test_labels = read_idx(SYSTEM_FASHION_MNIST / "t10k-labels-idx1-ubyte.gz")
    assert train_images.shape == (60000, 28, 28) and train_images.dtype == numpy.uint8
    assert test_images.shape == (10000, 28, 28)
    assert train_labels[0] == 9 and test_labels[0] == 9  # both sets start with an ankle boot
    assert numpy.bincount(train_labels).tolist() == [6000] * 10
    assert numpy.bincount(test_labels).tolist() == [1000] * 10


# --- Fashion-MNIST ---------------------------------------------------------------------------


@needs_fashion_mnist
def test_load_fashion_mnist_from_system_folder():
    train, test = load_fashion_mnist(root=SYSTEM_FASHION_MNIST, download=False)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28)
    assert train.labels.dtype == torch.int64 and int(train.labels[0]) == 9
    assert train.classes[9] == "Ankle boot" and train.classes == FASHION_MNIST_CLASSES
    mean, std = compute_mean_std(train.images)
    assert mean[0] == pytest.approx(0.2860, abs=1e-4) and std[0] == pytest.approx(0.3530, abs=1e-4)


def test_fashion_mnist_classes_are_the_official_ten():
    assert FASHION_MNIST_CLASSES == [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]


def test_cnnkit_data_subfolder_with_uncompressed_files_is_found(no_fashion_mnist, monkeypatch):
    write_tiny_fashion_mnist(no_fashion_mnist / "data" / "fashion-mnist", compress=False)
    monkeypatch.setenv("CNNKIT_DATA", str(no_fashion_mnist / "data"))
    train, test = load_fashion_mnist()
    assert train.images.shape == (6, 1, 28, 28) and train.labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert int(train.images[0, 0, 0, 5]) == 5
    assert test.labels.tolist() == [7, 8, 9] and int(test.images.min()) == 200


def test_explicit_root_comes_before_cnnkit_data(no_fashion_mnist, monkeypatch):
    write_tiny_fashion_mnist(no_fashion_mnist / "env", compress=True)
    write_tiny_fashion_mnist(no_fashion_mnist / "root", compress=True)
    (no_fashion_mnist / "root" / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(numpy.array([1, 1, 1], dtype=numpy.uint8)))
    )
    monkeypatch.setenv("CNNKIT_DATA", str(no_fashion_mnist / "env"))
    _, test = load_fashion_mnist(root=no_fashion_mnist / "root")
    assert test.labels.tolist() == [1, 1, 1]


def test_missing_fashion_mnist_says_how_to_install(no_fashion_mnist):
    with pytest.raises(DatasetNotFoundError) as error:
        load_fashion_mnist(root=no_fashion_mnist / "given")
    message = str(error.value)
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert "CNNKIT_DATA" in message and "--data DIR" in message
    assert str(no_fashion_mnist / "given") in message and str(no_fashion_mnist / "no-system-dir") in message
    assert "network is unreachable" in message


def test_download_is_atomic_and_md5_checked(no_fashion_mnist, monkeypatch):
    source = no_fashion_mnist / "server"
    write_tiny_fashion_mnist(source, compress=True)
    md5s = {name: hashlib.md5((source / name).read_bytes()).hexdigest() for name in fashion_mnist.FASHION_MNIST_FILES}
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_FILES", md5s)
    requested = []

    def serve(url, timeout=None):
        requested.append(url)
        return io.BytesIO((source / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(fashion_mnist.urllib.request, "urlopen", serve)
    train, test = load_fashion_mnist()
    assert len(train) == 6 and len(test) == 3
    assert sorted(url.rsplit("/", 1)[1] for url in requested) == sorted(md5s)
    assert all(url.startswith(fashion_mnist.DOWNLOAD_URL) for url in requested)
    assert sorted(path.name for path in (no_fashion_mnist / "cache").iterdir()) == sorted(md5s)  # no temp files left

    # A corrupted download is rejected and leaves nothing behind.
    for path in (no_fashion_mnist / "cache").iterdir():
        path.unlink()
    monkeypatch.setattr(fashion_mnist.urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"garbage"))
    with pytest.raises(DatasetNotFoundError, match="md5"):
        load_fashion_mnist()
    assert list((no_fashion_mnist / "cache").iterdir()) == []


# --- ArrayDataset, splits, statistics -----------------------------------------------------------


def test_train_val_split_is_deterministic_disjoint_and_complete():
    train, val = train_val_split(1000, 0.1, seed=3)
    again_train, again_val = train_val_split(1000, 0.1, seed=3)
    assert torch.equal(train, again_train) and torch.equal(val, again_val)
    assert len(val) == 100 and len(train) == 900
    assert torch.equal(torch.sort(torch.cat([train, val])).values, torch.arange(1000))
    assert torch.equal(train, torch.sort(train).values) and torch.equal(val, torch.sort(val).values)
    _, other_val = train_val_split(1000, 0.1, seed=4)
    assert not torch.equal(val, other_val)
    train_all, empty = train_val_split(50, 0.0, seed=0)
    assert torch.equal(train_all, torch.arange(50)) and empty.numel() == 0


def test_stratified_split_keeps_class_proportions():
    labels = torch.tensor([0] * 90 + [1] * 10)
    train, val = train_val_split(100, 0.2, seed=0, labels=labels)
    assert torch.bincount(labels[val]).tolist() == [18, 2]
    assert len(set(train.tolist()) | set(val.tolist())) == 100
    with pytest.raises(DataError, match=r"val_fraction must be in \[0, 1\)"):
        train_val_split(10, 1.0, seed=0)


def test_compute_mean_std_matches_direct_computation_in_chunks():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 5, 7), dtype=torch.uint8, generator=generator)
    mean, std = compute_mean_std(images, chunk_size=3)
    scaled = images.double() / 255
    assert mean == pytest.approx(scaled.mean(dim=(0, 2, 3)).tolist(), abs=1e-12)
    assert std == pytest.approx(scaled.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-12)
    constant_mean, constant_std = compute_mean_std(torch.full((4, 1, 2, 2), 51, dtype=torch.uint8))
    assert constant_mean == pytest.approx([0.2]) and constant_std == [0.0]


def test_array_dataset_subset_and_validation():
    dataset = ArrayDataset(torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1), torch.tensor([3, 2, 1, 0]), ["a", "b", "c", "d"])
    part = dataset.subset(torch.tensor([1, 3]))
    assert part.images.flatten().tolist() == [1, 3] and part.labels.tolist() == [2, 0] and part.classes == dataset.classes
    with pytest.raises(DataError, match="uint8"):
        ArrayDataset(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64), ["a"])


# --- load_dataset ------------------------------------------------------------------------------


def test_load_dataset_fashion_mnist_aliases_and_conversion(no_fashion_mnist, monkeypatch):
    write_tiny_fashion_mnist(no_fashion_mnist / "data", compress=True)
    monkeypatch.setenv("CNNKIT_DATA", str(no_fashion_mnist / "data"))
    for name in ("fashion-mnist", "fashion_mnist", "FMNIST"):
        splits = load_dataset(name)
        assert splits.name == "fashion-mnist" and splits.classes == FASHION_MNIST_CLASSES
        assert splits.train.images.shape == (6, 1, 28, 28) and splits.test is not None and len(splits.test) == 3
    converted = load_dataset("fmnist", channels=3, size=(14, 14))
    assert converted.train.images.shape == (6, 3, 14, 14)
    assert converted.test.images.shape == (3, 3, 14, 14) and int(converted.test.images.min()) == 200


def test_load_dataset_folder_with_idx_files(no_fashion_mnist):
    write_tiny_fashion_mnist(no_fashion_mnist / "mine", compress=False)
    splits = load_dataset(str(no_fashion_mnist / "mine"))
    assert splits.train.labels.tolist() == [0, 1, 2, 3, 4, 5] and splits.test.labels.tolist() == [7, 8, 9]


def _write_class_tree(root: Path, layout: dict[str, list[int]]) -> None:
    for class_name, values in layout.items():
        (root / class_name).mkdir(parents=True)
        for index, value in enumerate(values):
            Image.new("L", (4, 3), value).save(root / class_name / f"{index}.png")


def test_load_dataset_train_test_folders_share_classes(tmp_path):
    _write_class_tree(tmp_path / "train", {"cat": [10, 20], "dog": [30], "owl": [40]})
    _write_class_tree(tmp_path / "test", {"owl": [50]})
    splits = load_dataset(tmp_path)
    assert splits.classes == ["cat", "dog", "owl"] and splits.name == tmp_path.name
    assert splits.train.labels.tolist() == [0, 0, 1, 2]
    assert splits.test.labels.tolist() == [2] and splits.test.classes == ["cat", "dog", "owl"]
    assert splits.train.images.shape == (4, 1, 3, 4) and int(splits.test.images[0, 0, 0, 0]) == 50


def test_load_dataset_class_tree_and_csv_are_train_only(tmp_path):
    _write_class_tree(tmp_path / "tree", {"a": [1], "b": [2]})
    splits = load_dataset(tmp_path / "tree")
    assert splits.test is None and splits.classes == ["a", "b"]
    (tmp_path / "list.csv").write_text("path,label\ntree/a/0.png,x\ntree/b/0.png,y\n")
    csv_splits = load_dataset(str(tmp_path / "list.csv"))
    assert csv_splits.test is None and csv_splits.classes == ["x", "y"] and csv_splits.name == "list"


def test_load_dataset_rejects_unknown_specs(tmp_path):
    with pytest.raises(DataError, match="Accepted dataset specs") as error:
        load_dataset("imagenet-21k")
    assert "fashion-mnist" in str(error.value) and ".csv" in str(error.value)
    with pytest.raises(DatasetNotFoundError, match="no such file or folder"):
        load_dataset(str(tmp_path / "missing" / "dir"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not a .csv file"):
        load_dataset(tmp_path / "notes.txt")
