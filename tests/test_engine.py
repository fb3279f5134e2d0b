"""Config parsing, schedules, checkpoints: the engine's contracts without training."""

import json
import math

import pytest
import torch
import torch.nn as nn

from cnnkit.config import TrainConfig, make_config, parse_key_values
from cnnkit.engine import checkpoint as ckpt
from cnnkit.engine.optim import lr_factor_function, make_optimizer, parameter_groups, peak_lr
from cnnkit.errors import CheckpointError, ConfigError


def test_overrides_are_typed_and_checked(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lr: 0.05\nepochs: 3\nmodel: simple_cnn\n")
    config = make_config(recipe, parse_key_values(["epochs=7", "label_smoothing=0", "grad_clip_norm=null"]))
    assert (config.lr, config.epochs, config.model, config.label_smoothing) == (0.05, 7, "simple_cnn", 0.0)
    assert isinstance(config.label_smoothing, float)
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        make_config(None, {"epoch": 3})
    with pytest.raises(ConfigError, match="epochs='three' should be a whole number"):
        make_config(None, parse_key_values(["epochs=three"]))
    with pytest.raises(ConfigError, match="optimizer='adam' is not one of sgd, adamw"):
        make_config(None, {"optimizer": "adam"})
    with pytest.raises(ConfigError, match="key=value"):
        parse_key_values(["lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="bad.yaml must hold a mapping"):
        make_config(bad)


def test_no_weight_decay_on_norms_and_biases():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = parameter_groups(model, 5e-4)
    assert [p.ndim for p in decay["params"]] == [4, 2]
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0
    optimizer = make_optimizer(model, TrainConfig(optimizer="sgd"))
    assert optimizer.defaults["nesterov"] is True and optimizer.defaults["lr"] == pytest.approx(0.2)


def test_default_lr_follows_the_linear_scaling_rule():
    assert peak_lr(TrainConfig(batch_size=64)) == pytest.approx(0.05)
    assert peak_lr(TrainConfig(batch_size=64, accumulate_steps=8)) == pytest.approx(0.4)
    assert peak_lr(TrainConfig(optimizer="adamw", batch_size=512)) == pytest.approx(4e-3)
    assert peak_lr(TrainConfig(batch_size=64, lr=0.3)) == 0.3
    with pytest.raises(ConfigError, match="lr=-1.0 must be greater than 0"):
        TrainConfig(lr=-1.0)


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine", "cosine_restarts", "onecycle"])
def test_schedules_start_peak_and_end_where_expected(schedule):
    config = TrainConfig(schedule=schedule, epochs=10, step_epochs=4, step_gamma=0.1, restart_epochs=5,
                         warmup_epochs=1 if schedule == "cosine" else 0)
    factor = lr_factor_function(config, steps_per_epoch=100)
    values = [factor(step) for step in range(1000)]
    assert max(values) == pytest.approx(1.0, abs=1e-2)
    if schedule == "constant":
        assert set(values) == {1.0}
    if schedule == "step":
        assert values[399] == 1.0 and values[400] == pytest.approx(0.1) and values[800] == pytest.approx(0.01)
    if schedule == "cosine":
        assert values[0] == pytest.approx(0.01)  # warm-up starts low
        assert values[550] == pytest.approx(0.5, abs=0.01) and values[-1] < 1e-3
    if schedule == "cosine_restarts":
        assert values[499] < 0.01 and values[500] == 1.0  # restart after 5 epochs
    if schedule == "onecycle":
        assert values[0] == pytest.approx(1 / 25) and values[250] == pytest.approx(1.0) and values[-1] < 0.01


def test_checkpoint_roundtrip_is_atomic_and_never_pickles(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    path = tmp_path / "best.safetensors"
    ckpt.save_checkpoint(path, model.state_dict(), {"classes": ["a", "b"], "architecture": {"name": "x"}})
    tensors, record = ckpt.load_checkpoint(path)
    assert record["classes"] == ["a", "b"] and record["format_version"] == ckpt.FORMAT_VERSION
    assert torch.equal(tensors["0.weight"], model[0].weight.detach())
    assert json.loads((tmp_path / "best.json").read_text())["architecture"] == {"name": "x"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors"]  # no temp files left
    assert not path.read_bytes().startswith(b"\x80")  # not a pickle


def test_corrupt_or_missing_checkpoint_gives_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "none.safetensors")
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00garbage")
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        ckpt.load_checkpoint(path)


def test_optimizer_state_roundtrip():
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    tensors, saved = ckpt.optimizer_to_tensors(optimizer)
    tensors, saved = {k: v.clone() for k, v in tensors.items()}, json.loads(json.dumps(saved))
    restored = torch.optim.AdamW(model.parameters(), lr=0.1)
    ckpt.optimizer_from_tensors(restored, tensors, saved)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(restored.state[model.weight][key], optimizer.state[model.weight][key])
    assert math.isclose(restored.param_groups[0]["lr"], 0.1)
