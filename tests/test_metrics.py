"""Classification metrics against values worked out by hand, and `cnnkit evaluate`'s table and JSON file.

The hand computation (3 classes, 10 samples) is written out in the comments so a reader can check it
with pencil and paper; no scikit-learn needed.
"""

from __future__ import annotations

import json

import pytest
import torch

from cnnkit.metrics.classification import ClassificationMeter, per_class_table
from conftest import CLASSES, TEST_IMAGES, run_cli

# targets:     0 0 0 0 1 1 1 2 2 2
# predictions: 0 0 1 2 1 1 0 2 2 1
TARGETS = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
PREDICTIONS = [0, 0, 1, 2, 1, 1, 0, 2, 2, 1]
# confusion (rows true, columns predicted):
#   [2 1 1]
#   [1 2 0]
#   [0 1 2]
CONFUSION = [[2, 1, 1], [1, 2, 0], [0, 1, 2]]
# recall    = diag / row sums    = 2/4, 2/3, 2/3
# precision = diag / column sums = 2/3, 2/4, 2/3
# f1        = 2pr / (p + r)      = 4/7, 4/7, 2/3
RECALL = [2 / 4, 2 / 3, 2 / 3]
PRECISION = [2 / 3, 2 / 4, 2 / 3]
F1 = [4 / 7, 4 / 7, 2 / 3]


def _one_hot_logits(predictions: list[int], num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(predictions), num_classes).float()


def test_meter_matches_hand_computed_metrics():
    meter = ClassificationMeter(["a", "b", "c"])
    # two batches, as an evaluation loop would feed them; summed losses 1.5 + 2.5 over 10 samples
    meter.update(_one_hot_logits(PREDICTIONS[:6], 3), torch.tensor(TARGETS[:6]), 1.5)
    meter.update(_one_hot_logits(PREDICTIONS[6:], 3), torch.tensor(TARGETS[6:]), torch.tensor(2.5))
    result = meter.compute(per_class=True)
    assert result["confusion_matrix"] == CONFUSION
    assert result["count"] == 10
    assert result["accuracy"] == pytest.approx(6 / 10)
    assert result["loss"] == pytest.approx(0.4)
    assert result["balanced_accuracy"] == pytest.approx((2 / 4 + 2 / 3 + 2 / 3) / 3)  # = 11/18
    assert result["macro_f1"] == pytest.approx(sum(F1) / 3)
    for index, name in enumerate("abc"):
        values = result["per_class"][name]
        assert values["precision"] == pytest.approx(PRECISION[index])
        assert values["recall"] == pytest.approx(RECALL[index])
        assert values["f1"] == pytest.approx(F1[index])
        assert values["support"] == [4, 3, 3][index]


def test_absent_and_never_predicted_classes():
    # class 2 never occurs and is never predicted; class 1 occurs but is never predicted
    meter = ClassificationMeter(["a", "b", "c"])
    meter.update(_one_hot_logits([0, 0, 0, 0], 3), torch.tensor([0, 0, 1, 1]))
    result = meter.compute(per_class=True)
    assert result["accuracy"] == pytest.approx(0.5)
    # recall a = 1, recall b = 0; c has no support and is left out of the mean (as scikit-learn does)
    assert result["balanced_accuracy"] == pytest.approx(0.5)
    assert result["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert result["per_class"]["a"]["precision"] == pytest.approx(0.5)
    assert result["per_class"]["a"]["f1"] == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert result["per_class"]["c"]["support"] == 0


def test_per_class_table_is_aligned():
    meter = ClassificationMeter(["a", "long name", "c"])
    meter.update(_one_hot_logits(PREDICTIONS, 3), torch.tensor(TARGETS))
    header, *rows = per_class_table(meter.compute(per_class=True)).splitlines()
    assert header.split() == ["class", "precision", "recall", "f1", "support"]
    assert [row[:9].strip() for row in rows] == ["a", "long name", "c"]
    assert rows[0].split()[1:] == ["0.6667", "0.5000", "0.5714", "4"]
    assert all(row.index("0.") == header.index("precision") for row in rows)  # columns line up


def test_cli_evaluate_writes_the_json_file(trained_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run[0], run_dir)  # the fixture run is shared and read-only
    result = run_cli("evaluate", run_dir)
    assert result.returncode == 0, result.stderr
    path = run_dir / "evaluation-test.json"
    assert f"per-class metrics and confusion matrix: {path}" in result.stderr
    saved = json.loads(path.read_text())
    assert saved["count"] == TEST_IMAGES and list(saved["per_class"]) == sorted(CLASSES)
    assert sum(map(sum, saved["confusion_matrix"])) == TEST_IMAGES
    assert f"test accuracy {saved['accuracy']:.4f}" in result.stdout
    # the printed table carries the same numbers as the file
    for name, values in saved["per_class"].items():
        assert f"{values['precision']:.4f}     {values['recall']:.4f}  {values['f1']:.4f}  {values['support']}" \
            in result.stdout, name
