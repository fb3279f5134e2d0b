"""Gradient checkpointing, stochastic depth and gradient clipping by value."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.errors import ConfigError, ModelError
from cnnkit.layers.checkpointing import enable_grad_checkpointing
from cnnkit.registry import create_model


def gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name, shape", [("resnet20", (4, 3, 16, 16)), ("fastnet", (4, 1, 28, 28)),
                                         ("wrn16_4", (2, 1, 16, 16))])
def test_checkpointed_model_has_the_same_gradients_and_parameter_names(name: str, shape) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, in_chans=shape[1], input_size=shape[2])
    checkpointed = copy.deepcopy(model)
    assert enable_grad_checkpointing(checkpointed) > 0
    images, labels = torch.randn(*shape), torch.randint(0, 5, (shape[0],))
    expected, actual = gradients(model, images, labels), gradients(checkpointed, images, labels)
    assert expected.keys() == actual.keys()
    assert list(model.state_dict()) == list(checkpointed.state_dict())
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-4, atol=1e-5)


def test_checkpointing_uses_timm_models_own_switch() -> None:
    model = create_model("vit_small_patch16_224", num_classes=3, in_chans=1, input_size=32)
    assert enable_grad_checkpointing(model) == -1 and model.grad_checkpointing


def test_checkpointing_a_model_without_a_trunk_says_so() -> None:
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

    with pytest.raises(ConfigError, match="grad_checkpointing"):
        enable_grad_checkpointing(Flat())


def test_drop_path_rate_reaches_models_that_have_it_and_is_refused_by_others(image_folder, tmp_path) -> None:
    import cnnkit

    run = cnnkit.train(data=str(image_folder / "train"), model="resnet20", drop_path_rate=0.2, epochs=1,
                       batch_size=64, grad_checkpointing=True, out=str(tmp_path), progress=False, num_threads=1)
    record = cnnkit.load(run.run_dir).record
    assert record["architecture"]["args"]["drop_path_rate"] == 0.2
    with pytest.raises(ModelError, match="drop_path_rate"):
        cnnkit.train(data=str(image_folder / "train"), model="fastnet", drop_path_rate=0.1, epochs=1,
                     out=str(tmp_path), progress=False)


def test_grad_clip_value_bounds_every_gradient_element() -> None:
    from cnnkit.config import TrainConfig

    with pytest.raises(ConfigError, match="grad_clip_value"):
        TrainConfig(grad_clip_value=-1.0)
    layer = nn.Linear(4, 2)
    (layer(torch.full((3, 4), 100.0)).sum() * 100).backward()
    nn.utils.clip_grad_value_(layer.parameters(), 0.5)
    assert all(p.grad.abs().max() <= 0.5 for p in layer.parameters())
