"""`cnnkit lr-find`: the LR sweep, smoothing, suggestions, restored weights, the plot and the command."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from cnnkit.cli import main
from cnnkit.data import TensorLoader
from cnnkit.api import lr_find
from cnnkit.engine.lr_finder import default_beta, exponential_lrs, range_test, smooth, smooth_zero_phase, suggest
from cnnkit.errors import ConfigError
from cnnkit.tasks import ClassificationTask
from conftest import FAST_SETTINGS


def test_exponential_lrs_and_bad_ranges():
    lrs = exponential_lrs(1e-6, 1.0, 7)
    assert lrs[0] == pytest.approx(1e-6) and lrs[-1] == pytest.approx(1.0)
    assert [b / a for a, b in zip(lrs, lrs[1:])] == pytest.approx([10.0] * 6)  # one decade per step
    with pytest.raises(ConfigError, match="0 < start"):
        exponential_lrs(1.0, 1e-3, 10)
    with pytest.raises(ConfigError, match="--steps must be 2 or more"):
        exponential_lrs(1e-6, 1.0, 1)


def test_smoothing_is_bias_corrected():
    assert smooth([2.0] * 5) == pytest.approx([2.0] * 5)  # a plain EMA would start near 0
    assert smooth([1.0, 3.0], beta=0.5) == pytest.approx([1.0, (0.25 * 1 + 0.5 * 3) / 0.75])
    assert smooth([1.0, 3.0], beta=0.0) == [1.0, 3.0]


def test_zero_phase_smoothing_does_not_lag():
    step = [0.0] * 20 + [1.0] * 20
    one_way, both_ways = smooth(step, 0.8), smooth_zero_phase(step, 0.8)
    assert one_way[20] < 0.25  # the one-way average is still near the old value after the step
    assert both_ways[19] + both_ways[20] == pytest.approx(1.0, abs=0.01)  # centred on the step: no lag
    assert default_beta(100) == pytest.approx(0.8) and default_beta(10) == 0.0 and default_beta(10_000) == 0.98


def test_suggestions_on_a_known_curve():
    lrs = exponential_lrs(1e-5, 10.0, 61)  # 10 points per decade
    logs = [math.log10(lr) for lr in lrs]
    # Flat at 2, a tanh-shaped fall centred on lr 1e-2 (steepest there), minimum at 1e-1, then a rise.
    curve = [2.0 - math.tanh(2 * (x + 2)) + (3 * (x + 1) ** 2 if x > -1 else 0.0) for x in logs]
    suggested, steepest, minimum = suggest(lrs, curve)
    assert minimum == pytest.approx(0.1, rel=0.3)
    assert suggested == pytest.approx(minimum / 10)
    assert steepest == pytest.approx(1e-2, rel=0.3)
    assert suggest(lrs[:3], curve[:3]) == (None, None, None)


def _tiny_task_and_loader():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=generator)
    labels = (images.float().mean(dim=(1, 2, 3)) > 127.5).long()  # learnable: bright vs dark
    loader = TensorLoader(images, labels, batch_size=16, mean=[0.5], std=[0.25], shuffle=True, augment=None,
                          drop_last=True, seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    return ClassificationTask(model, ["dark", "bright"]), loader


def test_range_test_records_stops_on_divergence_and_restores_the_weights():
    task, loader = _tiny_task_and_loader()
    before = {name: tensor.clone() for name, tensor in task.model.state_dict().items()}  # BN statistics too
    optimizer = torch.optim.SGD(task.model.parameters(), lr=0.1, momentum=0.9)
    lrs = exponential_lrs(1e-4, 1e4, 60)  # far past any sane LR: must diverge
    result = range_test(task, loader, optimizer, lrs, torch.device("cpu"), beta=0.9)
    assert result.stopped_early and len(result.lrs) < len(lrs) and result.lrs == lrs[: len(result.lrs)]
    assert len(result.losses) == len(result.smoothed) == len(result.lrs)
    assert all(math.isfinite(value) for value in result.losses + result.smoothed)  # a NaN step is left out
    assert 1e-4 <= result.suggested_lr < result.min_loss_lr  # a tenth of the minimum's LR
    for name, tensor in task.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert "suggested lr=" in result.summary()


def test_lr_find_and_the_command(image_folder, tmp_path, capsys):
    settings = dict(item.split("=") for item in FAST_SETTINGS)  # one thread, batch 64, val_fraction 0.2
    result = lr_find(data=str(image_folder), start_lr=1e-4, end_lr=10.0, num_steps=12, progress=False,
                     num_threads=1, batch_size=32, val_fraction=0.2)
    assert len(result.lrs) >= 5 and result.suggested_lr is not None
    code = main(["lr-find", "--data", str(image_folder), "--steps", "8", "--start-lr", "1e-3", "--end-lr", "1",
                 "--out", str(tmp_path / "lr.png"), *(f"{key}={value}" for key, value in settings.items())])
    output = capsys.readouterr().out
    assert code == 0 and "suggested lr=" in output and "plot:" in output
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "lr.json").read_text())
    assert len(saved["lrs"]) == len(saved["losses"]) and saved["lrs"][0] == pytest.approx(1e-3)
    assert main(["lr-find", "--data", str(image_folder), "--steps", "1"]) == 2
    assert "--steps must be 2 or more" in capsys.readouterr().err
