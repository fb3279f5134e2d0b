"""MedMNIST .npz reader (issue 22) on synthetic files of the published layout: splits, checksum, errors."""

from __future__ import annotations

import numpy
import pytest
import torch

from cnnkit.data.medical.medmnist import PUBLISHED, file_md5, read_medmnist, write_image_folder
from cnnkit.errors import DataError


def _npz(path, colour: bool, multilabel: bool = False, counts=(12, 4, 6)):
    rng = numpy.random.default_rng(0)
    arrays = {}
    for split, count in zip(("train", "val", "test"), counts):
        shape = (count, 28, 28, 3) if colour else (count, 28, 28)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=numpy.uint8)
        arrays[f"{split}_labels"] = (rng.integers(0, 2, (count, 5)) if multilabel
                                     else (numpy.arange(count) % 3).reshape(count, 1)).astype(numpy.uint8)
    numpy.savez(path, **arrays)
    return arrays


def test_reads_splits_and_checks_the_checksum(tmp_path):
    path = tmp_path / "pathmnist.npz"
    arrays = _npz(path, colour=True)
    with pytest.raises(DataError, match=r"pathmnist\.npz has MD5 [0-9a-f]{32}, not the expected "
                                        + PUBLISHED["pathmnist"][0]):
        read_medmnist(path)  # our synthetic file is not the published one
    data = read_medmnist(path, md5=file_md5(path))
    assert data.images["train"].shape == (12, 3, 28, 28) and data.images["test"].dtype == torch.uint8
    assert torch.equal(data.images["val"][1], torch.from_numpy(arrays["val_images"][1]).permute(2, 0, 1))
    assert data.labels["train"].tolist() == [0, 1, 2] * 4 and data.num_classes == 3 and not data.multilabel
    folder = write_image_folder(data, tmp_path / "folder", ["a", "b", "c"])
    assert len(list((folder / "train" / "b").glob("*.png"))) == 4 and (folder / "test" / "c").is_dir()


def test_grey_multilabel_and_errors(tmp_path):
    path = tmp_path / "chestmnist.npz"
    _npz(path, colour=False, multilabel=True)
    data = read_medmnist(path, check=False)
    assert data.images["train"].shape == (12, 1, 28, 28) and data.multilabel and data.labels["val"].shape == (4, 5)
    with pytest.raises(DataError, match="multi-label"):
        write_image_folder(data, tmp_path / "x")
    with pytest.raises(DataError, match="never downloads"):
        read_medmnist(tmp_path / "dermamnist.npz")
    unknown = tmp_path / "mystery_64.npz"
    _npz(unknown, colour=False)
    with pytest.raises(DataError, match="no published checksum"):
        read_medmnist(unknown)
    broken = tmp_path / "broken.npz"
    numpy.savez(broken, train_images=numpy.zeros((2, 28, 28), numpy.uint8))
    with pytest.raises(DataError, match="no train_labels array"):
        read_medmnist(broken, check=False)
