"""`cnnkit data check`: planted exact and near duplicates are found across splits, distinct images are not;
training warns when validation overlaps training."""

from __future__ import annotations

import gzip
import json
import struct

import numpy
import pytest
import torch
from PIL import Image

from cnnkit.data import ArrayDataset
from cnnkit.data.check import check_dataset, format_report, near_duplicate_pairs, plot_pairs, validation_overlap_warning
from cnnkit.errors import ConfigError
from conftest import run_cli

SIDE = 16


def _distinct_images(count: int, seed: int) -> numpy.ndarray:
    """Smooth random images (4x4 noise upsampled): pairwise correlations far below 0.99."""
    generator = numpy.random.default_rng(seed)
    small = torch.from_numpy(generator.uniform(0, 255, (count, 1, 4, 4)).astype(numpy.float32))
    large = torch.nn.functional.interpolate(small, size=(SIDE, SIDE), mode="bicubic", align_corners=False)
    return large.clamp(0, 255).round().to(torch.uint8)[:, 0].numpy()  # (count, SIDE, SIDE)


def _near_copy(image: numpy.ndarray, seed: int) -> numpy.ndarray:
    """Lower contrast, brighter, a little noise: the same picture, other pixels."""
    noise = numpy.random.default_rng(seed).normal(0, 2, image.shape)
    return numpy.clip(image * 0.7 + 40 + noise, 0, 255).round().astype(numpy.uint8)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """train/{a,b}/ and test/{a,b}/ PNGs: 30 distinct training and 10 distinct test images, plus planted copies."""
    root = tmp_path_factory.mktemp("planted")
    images = _distinct_images(40, seed=0)
    for index in range(30):
        folder = root / "train" / "ab"[index % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index]).save(folder / f"{index:03d}.png")
    for index in range(30, 40):
        folder = root / "test" / "ab"[index % 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[index]).save(folder / f"{index:03d}.png")
    # Exact: a training image in the test split, once as PNG and once as BMP under the other label.
    Image.fromarray(images[0]).save(root / "test" / "a" / "exact_copy.png")
    Image.fromarray(images[0]).save(root / "test" / "b" / "exact_copy_other_label.bmp")
    # Near: training image 3 re-exposed, and resized to 2x.
    Image.fromarray(_near_copy(images[3], seed=1)).save(root / "test" / "b" / "near_copy.png")
    Image.fromarray(images[3]).resize((2 * SIDE, 2 * SIDE), Image.BILINEAR).save(root / "test" / "b" / "resized.png")
    return root


def test_planted_duplicates_are_found_and_distinct_images_are_not(planted):
    report = check_dataset(str(planted), threshold=0.99, size=SIDE, val_fraction=0.0, progress=False)
    assert report["splits"] == {"train": 30, "val": 0, "test": 14}
    exact = report["exact"]
    assert exact["groups"] == 1 and exact["images"] == 3
    assert exact["pairs"] == {"train-test": 2, "test-test": 1}
    assert exact["test_images_in_train_or_val"] == 2
    assert sorted(name.split("/")[-1] for name in exact["examples"][0]) == [
        "000.png (train)", "exact_copy.png (test)", "exact_copy_other_label.bmp (test)"]
    near = report["near"]
    found = {frozenset(name.split("/")[-1].split(" ")[0] for name in (e["first"], e["second"])) for e in near["examples"]}
    # Image 3 with each of its two copies, and the copies with each other; exact copies are not listed again.
    assert found == {frozenset({"003.png", "near_copy.png"}), frozenset({"003.png", "resized.png"}),
                     frozenset({"near_copy.png", "resized.png"})}
    assert near["pairs"] == {"train-test": 2, "test-test": 1} and near["test_images_in_train_or_val"] == 2
    assert all(example["similarity"] >= 0.99 for example in near["examples"])
    text = format_report(report)
    assert "LEAKAGE" in text and "2 test images have one in train or val" in text


def test_validation_split_is_the_one_training_uses(planted):
    # A 50% val split puts some of the 30 training images in val; the exact pair then may become train-val.
    from cnnkit.data import scan_dataset, train_val_split

    report = check_dataset(str(planted), size=SIDE, val_fraction=0.5, seed=0, near=False, progress=False)
    _, val_indices = train_val_split(30, 0.5, 0, labels=scan_dataset(planted).train.labels)  # as prepare_data
    assert report["splits"] == {"train": 30 - len(val_indices), "val": len(val_indices), "test": 14}
    assert "near" not in report
    assert sum(report["exact"]["pairs"].values()) == 3


def test_near_duplicate_pairs_against_brute_force():
    generator = torch.Generator().manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(300, 20, generator=generator), dim=1)
    vectors[150] = torch.nn.functional.normalize(vectors[7] + 0.02 * torch.randn(20, generator=generator), dim=0)
    threshold = 0.6  # low enough for a few chance pairs in 20 dimensions
    first, second, similarity = near_duplicate_pairs(vectors, threshold, chunk_rows=64)  # several chunks
    exact = vectors @ vectors.T
    expected = {(i, j) for i, j in torch.nonzero(torch.triu(exact, diagonal=1) >= threshold).tolist()}
    assert set(zip(first.tolist(), second.tolist())) == expected and (7, 150) in expected
    assert similarity.tolist() == pytest.approx([float(exact[i, j]) for i, j in zip(first.tolist(), second.tolist())])


def _write_idx(path, array: numpy.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(numpy.uint8).tobytes()))


def test_idx_dataset_in_memory_and_the_cli(tmp_path):
    images = _distinct_images(50, seed=2)
    train, test = images[:40].copy(), images[40:].copy()
    test[0] = train[5]  # exact leak
    test[1] = _near_copy(train[9], seed=3)  # near leak
    folder = tmp_path / "idx"
    folder.mkdir()
    for prefix, split in (("train", train), ("t10k", test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", split)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", numpy.arange(len(split)) % 10)
    result = run_cli("data", "check", folder, "--val-fraction", "0", "--out", tmp_path / "check.json",
                     "--plot", tmp_path / "pairs.png")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "check.json").read_text())
    assert report["exact"]["examples"] == [["train#5 (train)", "test#0 (test)"]]
    assert [(e["first"], e["second"]) for e in report["near"]["examples"]] == [("train#9 (train)", "test#1 (test)")]
    assert "16x16 grayscale thumbnails" in report["near"]["definition"]
    assert (tmp_path / "pairs.png").read_bytes()[:4] == b"\x89PNG"
    assert "LEAKAGE" in result.stdout
    with pytest.raises(ConfigError, match=r"threshold 1.5 must be in \(0, 1\]"):
        check_dataset(str(folder), threshold=1.5, progress=False)


def test_plot_with_no_duplicates(tmp_path):
    folder = tmp_path / "clean"
    for index, image in enumerate(_distinct_images(12, seed=4)):
        (folder / "ab"[index % 2]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / "ab"[index % 2] / f"{index}.png")
    report = check_dataset(str(folder), size=SIDE, progress=False)
    assert report["exact"]["groups"] == 0 and report["near"]["total_pairs"] == 0
    assert plot_pairs(report, tmp_path / "none.png").is_file()


def test_overlap_warning_function():
    images = torch.from_numpy(_distinct_images(10, seed=5))[:, None]  # (10, 1, 16, 16)
    train = ArrayDataset(images[:8], torch.zeros(8, dtype=torch.int64), ["x"])
    assert validation_overlap_warning(train, ArrayDataset(images[8:], torch.zeros(2, dtype=torch.int64), ["x"])) is None
    leaking = ArrayDataset(images[[1, 8, 2]], torch.zeros(3, dtype=torch.int64), ["x"])
    warning = validation_overlap_warning(train, leaking)
    assert warning.startswith("warning: 2 of 3 validation images are exact copies of training images")
    assert "\n" not in warning and "cnnkit data check" in warning


def test_training_warns_when_validation_overlaps_training(tmp_path, capsys):
    from cnnkit.tasks.classification import setup as setup_classification
    from cnnkit.config import TrainConfig
    from cnnkit.engine.distributed import DistInfo

    images = _distinct_images(20, seed=6)
    for name, copies in (("clean", 1), ("leaky", 6)):
        for index, image in enumerate(images):
            for copy in range(copies if index == 0 else 1):  # image 0 six times: some land in val, some in train
                (tmp_path / name / "ab"[index % 2]).mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(tmp_path / name / "ab"[index % 2] / f"{index}_{copy}.png")
        config = TrainConfig(data=str(tmp_path / name), val_fraction=0.5, batch_size=4, progress=False)
        setup_classification(config, torch.device("cpu"), DistInfo(), None)
        warnings = [line for line in capsys.readouterr().err.splitlines() if "validation images are exact copies" in line]
        assert len(warnings) == (1 if name == "leaky" else 0), warnings
