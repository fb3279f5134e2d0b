"""The shipped recipes stay loadable: every YAML in recipes/ parses into a config whose model builds."""

from pathlib import Path

import pytest
import torch

from cnnkit.config import make_config
from cnnkit.registry import create_model

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").rglob("*.yaml"))


def test_recipes_exist():
    assert {path.stem for path in RECIPES} >= {"fast", "quality"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.stem)
def test_recipe_parses_and_its_model_runs(path):
    config = make_config(path, {})
    header = [line for line in path.read_text().splitlines() if line.startswith("# target:")]
    assert header, f"{path} lacks its '# target: accuracy A, seconds S' line"
    assert "Measured (" in path.read_text(), f"{path} should record its measured result"
    model = create_model(config.model, num_classes=10, in_chans=1)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
