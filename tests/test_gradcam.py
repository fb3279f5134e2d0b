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


# Transformers: the default layer per family and the token-to-grid reshape, checked against the same map
# computed by hand from the layer's raw output with the family's layout written out explicitly.
# (model, input size, expected default layer, raw output -> (B, C, h, w) by hand)
TRANSFORMERS = [
    ("vit_small_patch16_224", 28, "blocks.11.norm1",  # timm ViT-S, 4x4 patches: 1 class token + 7x7 tokens
     lambda out: out[:, 1:].reshape(1, 7, 7, -1).permute(0, 3, 1, 2)),
    ("vit_b_16", 28, "encoder.layers.encoder_layer_11.ln_1",  # torchvision ViT-B/16 at 28 px: the same layout
     lambda out: out[:, 1:].reshape(1, 7, 7, -1).permute(0, 3, 1, 2)),
    ("swin_t", 28, "features.7", lambda out: out.permute(0, 3, 1, 2)),  # torchvision Swin: (B, H, W, C)
    ("coatnet_0_224", 28, "stages.3", lambda out: out),  # timm CoAtNet: (B, C, H, W) like a CNN
]


def _hand_gradcam(model, image, layer, to_grid, target):
    captured = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        scores = model(image)
    finally:
        handle.remove()
    (gradient,) = torch.autograd.grad(scores[0, target], captured[0])
    activations, gradient = to_grid(captured[0].detach()), to_grid(gradient)
    cam = (gradient.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1, keepdim=True).clamp_min(0)
    cam = nn.functional.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return (cam - cam.min()) / (cam.max() - cam.min())


@pytest.mark.parametrize("name, size, expected, to_grid", TRANSFORMERS, ids=[case[0] for case in TRANSFORMERS])
def test_transformer_default_layer_and_token_grid(name, size, expected, to_grid):
    from cnnkit.registry import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=3, in_chans=1, input_size=size).eval()
    for module in model.modules():  # torchvision's ViT starts with a zero head: no gradient at all
        if isinstance(module, nn.Linear) and not module.weight.any():
            nn.init.normal_(module.weight, std=0.05)
    image = torch.randn(1, 1, size, size)
    assert default_layer(model, image) == expected
    for target in range(3):  # some class has a non-zero map for these random weights
        heatmap, index, layer = gradcam(model, image, target_class=target)
        if heatmap.max() > 0:
            break
    assert layer == expected and index == target and heatmap.shape == (size, size)
    assert float(heatmap.max()) == pytest.approx(1.0) and float(heatmap.min()) >= 0.0
    expected_map = _hand_gradcam(model, image, layer, to_grid, target)
    torch.testing.assert_close(heatmap, expected_map, atol=1e-4, rtol=1e-4)
    plus, _, _ = gradcam(model, image, target_class=target, method="gradcam++")
    assert plus.shape == (size, size) and torch.isfinite(plus).all()


def test_tokens_without_class_token_and_non_square_grids():
    from cnnkit.inspect.gradcam import _to_grid

    grid = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)  # (B, C, h, w), h / w = 8 / 12
    tokens = grid.flatten(2).transpose(1, 2)  # (B, 24, C)
    assert torch.equal(_to_grid(tokens, "x", (8, 12)), grid)
    with_prefix = torch.cat([torch.zeros(2, 2, 3), tokens], dim=1)  # e.g. a class and a register token
    assert torch.equal(_to_grid(with_prefix, "x", (8, 12), prefix=2), grid)
    assert torch.equal(_to_grid(grid.permute(0, 2, 3, 1), "x", (8, 12), channels_last=True), grid)
    with pytest.raises(ModelError, match="do not make a grid"):
        _to_grid(tokens[:, :23], "x", (8, 12))


def test_layer_override_on_a_transformer():
    from cnnkit.registry import create_model

    torch.manual_seed(0)
    model = create_model("vit_small_patch16_224", num_classes=3, in_chans=1, input_size=28).eval()
    heatmap, _, layer = gradcam(model, torch.randn(1, 1, 28, 28), layer="blocks.5.norm1")
    assert layer == "blocks.5.norm1" and heatmap.shape == (28, 28)


def _smallest_of_each_family() -> list[str]:
    from cnnkit.inspect.summary import model_cost
    from cnnkit.registry import get_entry, list_models

    smallest: dict[str, tuple[int, str]] = {}
    for name in list_models(task="classify"):  # detectors and segmenters have their own outputs
        family = get_entry(name).family
        if family in ("custom", "nasnet"):  # custom: needs a spec; nasnet: minutes per image on 2 cores
            continue
        parameters, _ = model_cost(name, (1, 28, 28), macs=False)
        smallest[family] = min(smallest.get(family, (parameters, name)), (parameters, name))
    return [name for _, name in sorted(smallest.values())]


@pytest.mark.slow
def test_every_zoo_family_gets_a_spatial_map_from_its_default_layer():
    from cnnkit.registry import create_model

    for name in _smallest_of_each_family():
        torch.manual_seed(0)
        model = create_model(name, num_classes=3, in_chans=1, input_size=28).eval()
        for module in model.modules():  # zero-initialized heads (torchvision's ViT) give no gradient
            if isinstance(module, nn.Linear) and not module.weight.any():
                nn.init.normal_(module.weight, std=0.05)
        image = torch.randn(1, 1, 28, 28)
        maps = [gradcam(model, image, target_class=target)[0] for target in range(3)]
        assert all(heatmap.shape == (28, 28) and torch.isfinite(heatmap).all() for heatmap in maps), name
        # a map that varies over the image for some class: the layer is spatial and its grid is right
        assert max(float(heatmap.max() - heatmap.min()) for heatmap in maps) > 0.5, name
