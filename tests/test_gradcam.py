"""Grad-CAM / Grad-CAM++ on hand-made models with known evidence, and `cnnkit explain` end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from cnnkit.errors import ConfigError, ModelError
from cnnkit.inspect.gradcam import default_layer, gradcam, resolve_class
from conftest import run_cli

SIZE = 16


class Mask(nn.Module):
    def __init__(self):
        super().__init__()
        mask = torch.zeros(1, 1, SIZE, SIZE)
        mask[..., : SIZE // 2] = 1
        self.register_buffer("mask", mask)

    def forward(self, x):
        return x * self.mask


class LeftHalf(nn.Module):
    """conv -> relu -> mask -> average over the left half only -> linear: only the left half drives the class.

    With `mask_input` the mask is applied to the image instead, before the conv.
    """

    def __init__(self, mask_input: bool = False):
        super().__init__()
        self.mask_input = mask_input
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), Mask())
        with torch.no_grad():
            self.features[0].weight.fill_(0.1)
            self.features[0].bias.zero_()
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]]))
            self.head.bias.zero_()

    def forward(self, x):
        if self.mask_input:
            x = self.features[2](x)
        return self.head(self.features(x).sum(dim=(2, 3)) / (SIZE * SIZE // 2))


class BrightSquare(nn.Module):
    """Two conv layers (the second spatial) with hand-set weights that respond to a bright patch."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1)
        self.conv2 = nn.Conv2d(2, 2, 3, padding=1)
        self.head = nn.Linear(2, 3)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2):
                conv.weight.fill_(1.0 / 9)
                conv.weight[1].mul_(-1)
                conv.bias.zero_()
            self.head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]))
            self.head.bias.zero_()

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.amax(dim=(2, 3)) + x.mean(dim=(2, 3)))


def _image_with_square() -> torch.Tensor:
    image = torch.zeros(1, 1, SIZE, SIZE)
    image[..., 3:7, 9:13] = 1.0
    return image


def test_heatmap_shape_range_and_not_constant():
    model = BrightSquare()
    heatmap, index, layer = gradcam(model, _image_with_square())
    assert heatmap.shape == (SIZE, SIZE)
    assert float(heatmap.min()) >= 0.0 and float(heatmap.max()) <= 1.0
    assert float(heatmap.max() - heatmap.min()) > 0.5
    assert layer == "conv2" and index == 0
    # the peak lies on the bright square
    row, column = divmod(int(heatmap.argmax()), SIZE)
    assert 2 <= row <= 7 and 8 <= column <= 13


def test_default_layer_skips_conv_without_spatial_output():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, SIZE), nn.Flatten(), nn.Linear(2, 2))
    assert default_layer(model, torch.zeros(1, 1, SIZE, SIZE)) == "0"


def test_left_half_model_puts_mass_on_the_left():
    torch.manual_seed(0)
    image = torch.rand(1, 1, SIZE, SIZE)
    cases = [(LeftHalf(mask_input=True), None, "features.0"),   # default layer: the conv
             (LeftHalf(), "features.2", "features.2")]          # pooling mask: target the masked maps
    for model, layer, expected in cases:
        for method in ("gradcam", "gradcam++"):
            heatmap, index, name = gradcam(model, image, target_class=0, layer=layer, method=method)
            assert name == expected and index == 0
            left, right = heatmap[:, : SIZE // 2].sum(), heatmap[:, SIZE // 2:].sum()
            assert left > 3 * right, (expected, method, float(left), float(right))


def test_gradcam_plus_plus_differs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
    image = torch.randn(1, 1, SIZE, SIZE)
    plain, index, _ = gradcam(model, image, method="gradcam")
    plus, index_plus, _ = gradcam(model, image, method="gradcam++")
    assert index == index_plus
    assert plus.shape == plain.shape and 0 <= float(plus.min()) and float(plus.max()) <= 1
    assert not torch.allclose(plain, plus, atol=1e-3)
    assert model.training  # the mode is restored


def test_token_output_is_reshaped_to_a_grid():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv2d(1, 8, 4, stride=4)  # 16x16 -> 4x4 = 16 tokens
            self.block = nn.Linear(8, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            tokens = self.embed(x).flatten(2).transpose(1, 2)  # (B, 16, 8)
            tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # class token: (B, 17, 8)
            return self.head(torch.relu(self.block(tokens)).mean(dim=1))

    torch.manual_seed(0)
    heatmap, _, layer = gradcam(Tokens(), torch.randn(1, 1, SIZE, SIZE), layer="block")
    assert layer == "block" and heatmap.shape == (SIZE, SIZE)


def test_unknown_layer_and_class_list_the_options():
    with pytest.raises(ModelError, match="conv1, conv2"):
        gradcam(BrightSquare(), _image_with_square(), layer="nope")
    with pytest.raises(ConfigError, match="Bag, Shoe"):
        resolve_class("Hat", ["Bag", "Shoe"])
    with pytest.raises(ConfigError, match="out of range"):
        resolve_class("5", ["Bag", "Shoe"])
    assert resolve_class("Shoe", ["Bag", "Shoe"]) == 1 and resolve_class("0", ["Bag", "Shoe"]) == 0
    with pytest.raises(ConfigError, match="method"):
        gradcam(BrightSquare(), _image_with_square(), method="cam")


def test_cli_explain_writes_png(trained_run, image_folder, tmp_path):
    run_dir, _ = trained_run
    image = image_folder / "test" / "Sneaker" / "000.png"
    result = run_cli("explain", run_dir, image, "--method", "gradcam++", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "explain-000-gradcam++.png"
    assert path.is_file() and path.stat().st_size > 0
    assert result.stdout.strip() == str(path)
    result = run_cli("explain", run_dir, image, "--class", "Hat", "--out", tmp_path)
    assert result.returncode == 2 and "Sneaker" in result.stderr
