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


def test_diagnostic_metrics_and_calibration(tmp_path):
    from cnnkit.metrics.diagnostic import auroc, calibration, diagnostic_metrics, plot_reliability

    probabilities = numpy.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.55, 0.45]])
    labels = numpy.array([0, 1, 1, 1, 0])
    result = diagnostic_metrics(probabilities, labels, ["normal", "pneumonia"])
    pneumonia = result["per_class"]["pneumonia"]
    assert pneumonia["sensitivity"] == pytest.approx(2 / 3) and pneumonia["specificity"] == 1.0
    # scores of positives 0.4, 0.7, 0.8 vs negatives 0.1, 0.45: 5 of 6 pairs ordered right
    assert pneumonia["auroc"] == pytest.approx(5 / 6) and pneumonia["support"] == 3
    assert auroc([0.5, 0.5], [True, False]) == 0.5 and auroc([1, 2], [True, True]) is None
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = numpy.random.default_rng(0)
    scores, truth = rng.random(200).round(1), rng.random(200) > 0.6  # many ties
    assert auroc(scores, truth) == pytest.approx(sklearn_metrics.roc_auc_score(truth, scores))
    calibrated = calibration(probabilities, labels, bins=5)
    # confidences 0.9, 0.6, 0.7, 0.8, 0.55 (correct: T, F, T, T, T): bins [0.4,0.6) {0.55}, [0.6,0.8) {0.6, 0.7},
    # [0.8,1] {0.8, 0.9}; ECE = (1 |1 - .55| + 2 |.5 - .65| + 2 |1 - .85|) / 5
    assert calibrated["ece"] == pytest.approx((0.45 + 2 * 0.15 + 2 * 0.15) / 5)
    assert [row["count"] for row in calibrated["bins"]] == [0, 0, 1, 2, 2]
    assert plot_reliability(calibrated, tmp_path / "reliability.png").stat().st_size > 1000
