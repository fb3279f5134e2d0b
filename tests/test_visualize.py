"""Filter and feature-map pictures (cnnkit.inspect.visualize) and `cnnkit inspect`."""

from __future__ import annotations

from pathlib import Path

import numpy
import pytest
import torch
from PIL import Image

import cnnkit
from cnnkit.cli import main
from cnnkit.errors import ModelError
from cnnkit.inspect.visualize import conv_layers, feature_maps, plot_feature_maps, plot_filters
from cnnkit.registry import create_model


def _fastnet(in_chans: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("fastnet", in_chans=in_chans, num_classes=2).eval()


def _png(path: Path) -> Image.Image:
    assert path.is_file() and path.stat().st_size > 0
    image = Image.open(path)
    image.load()
    return image


def _colourfulness(image: Image.Image) -> float:
    """Mean spread between the R, G and B values of a pixel: 0 for a gray picture."""
    pixels = numpy.asarray(image.convert("RGB"), dtype=numpy.float32)
    return float((pixels.max(axis=2) - pixels.min(axis=2)).mean())


def test_conv_layers_lists_fastnet_convs_in_order():
    names = [name for name, _ in conv_layers(_fastnet(1))]
    assert names == ["stem.0", "stages.0.conv1", "stages.0.conv2", "stages.1.conv1", "stages.1.conv2",
                     "stages.2.conv1", "stages.2.conv2"]


def test_plot_filters_rgb_kernels_in_colour_and_gray_kernels_gray(tmp_path):
    rgb = _png(plot_filters(_fastnet(3), path=tmp_path / "rgb.png"))
    gray = _png(plot_filters(_fastnet(1), path=tmp_path / "gray.png"))
    assert rgb.size[0] > 100 and rgb.size[1] > 100
    assert _colourfulness(rgb) > 1.0  # random RGB kernels give coloured tiles
    assert _colourfulness(gray) < 0.5  # gray tiles, black title text on white


def test_plot_filters_named_layer_with_many_input_channels(tmp_path):
    model = _fastnet(1)
    path = plot_filters(model, "stages.1.conv1", tmp_path / "deep.png", reduce="first")
    assert _png(path).size[0] > 100
    with pytest.raises(ModelError, match="reduce"):
        plot_filters(model, "stages.1.conv1", tmp_path / "bad.png", reduce="max")


def test_filter_tiles_are_the_kernels_scaled_per_kernel(tmp_path, monkeypatch):
    """The tiles drawn are the weights, each kernel scaled to [0, 1] by its own min and max."""
    import cnnkit.inspect.visualize as visualize

    model = _fastnet(1)
    with torch.no_grad():
        model.stem[0].weight.copy_(torch.arange(24 * 9, dtype=torch.float32).view(24, 1, 3, 3))
    drawn = {}
    monkeypatch.setattr(visualize, "_save_grid", lambda tiles, title, path, cmap: drawn.update(
        tiles=tiles, title=title, cmap=cmap) or path)
    plot_filters(model, path=tmp_path / "x.png")
    expected = torch.linspace(0, 1, 9).view(3, 3)
    assert drawn["tiles"].shape == (24, 3, 3)
    torch.testing.assert_close(drawn["tiles"][5], expected)
    assert drawn["cmap"] == "gray"
    assert "layer stem.0, weight (24, 1, 3, 3)" in drawn["title"]


def test_feature_maps_match_a_manual_forward():
    model = _fastnet(1)
    inputs = torch.randn(1, 1, 28, 28)
    maps = feature_maps(model, inputs, ["stem.0", "stages.0.conv1", "stages.2.conv2"])
    with torch.no_grad():
        stem = model.stem[0](inputs)[0]
        stage0 = model.stages[0].conv1(model.stem(inputs))[0]
        last = model.stages[2].conv2(
            model.stages[2].act(model.stages[2].bn1(model.stages[2].pool(model.stages[2].conv1(
                model.stages[1](model.stages[0](model.stem(inputs))))))))[0]
    assert list(maps) == ["stem.0", "stages.0.conv1", "stages.2.conv2"]
    assert maps["stem.0"].shape == (24, 28, 28)
    assert maps["stages.0.conv1"].shape == (32, 28, 28)
    assert maps["stages.2.conv2"].shape == (128, 4, 4)
    torch.testing.assert_close(maps["stem.0"], stem)
    torch.testing.assert_close(maps["stages.0.conv1"], stage0)
    torch.testing.assert_close(maps["stages.2.conv2"], last)


def test_feature_maps_default_layers_and_hooks_removed(tmp_path):
    model = _fastnet(3)
    model.train()
    maps = feature_maps(model, torch.randn(1, 3, 28, 28))
    assert list(maps) == ["stem.0", "stages.1.conv1", "stages.2.conv2"]
    assert model.training  # mode restored
    assert all(not module._forward_hooks for _, module in conv_layers(model))
    paths = plot_feature_maps(maps, tmp_path / "features")
    assert [path.name for path in paths] == ["features-stem.0.png", "features-stages.1.conv1.png",
                                             "features-stages.2.conv2.png"]
    for path in paths:
        assert _png(path).size[0] > 100


def test_unknown_layer_lists_the_conv_layers(tmp_path):
    model = _fastnet(1)
    with pytest.raises(ModelError, match=r"'conv9'.*stem\.0, stages\.0\.conv1.*stages\.2\.conv2"):
        plot_filters(model, "conv9", tmp_path / "x.png")
    with pytest.raises(ModelError, match=r"'head'.*stem\.0"):
        feature_maps(model, torch.randn(1, 1, 28, 28), ["head"])


def test_feature_maps_wants_one_image():
    with pytest.raises(ModelError, match=r"\(1, C, H, W\)"):
        feature_maps(_fastnet(1), torch.randn(2, 1, 28, 28))


@pytest.fixture(scope="module")
def tiny_rgb_run(tmp_path_factory) -> tuple[Path, Path]:
    """(run directory, one of its images): fastnet trained 1 epoch on 2 classes x 20 RGB 28x28 PNGs."""
    root = tmp_path_factory.mktemp("tiny_rgb")
    generator = numpy.random.default_rng(0)
    for label, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        folder = root / "data" / "train" / label
        folder.mkdir(parents=True)
        for index in range(20):
            noise = generator.integers(-30, 30, size=(28, 28, 3))
            pixels = numpy.clip(numpy.array(colour) + noise, 0, 255).astype(numpy.uint8)
            Image.fromarray(pixels, mode="RGB").save(folder / f"{index:02d}.png")
    run = cnnkit.train({"data": str(root / "data"), "model": "fastnet", "epochs": 1, "batch_size": 8,
                        "num_threads": 1, "progress": False, "out": str(root / "runs"), "name": "run"})
    return run.run_dir, root / "data" / "train" / "red" / "00.png"


def test_cli_inspect_filters(tiny_rgb_run, tmp_path, capsys):
    run_dir, _ = tiny_rgb_run
    assert main(["inspect", "filters", str(run_dir), "--out", str(tmp_path)]) == 0
    path = tmp_path / "filters-stem.0.png"
    assert capsys.readouterr().out.strip() == str(path)
    assert _colourfulness(_png(path)) > 1.0  # the run is RGB: kernels in colour


def test_cli_inspect_filters_default_out_and_layer(tiny_rgb_run, tmp_path, capsys):
    import shutil

    run_dir = Path(shutil.copytree(tiny_rgb_run[0], tmp_path / "run"))
    assert main(["inspect", "filters", str(run_dir), "--layer", "stages.0.conv2"]) == 0
    path = run_dir / "inspect" / "filters-stages.0.conv2.png"
    assert capsys.readouterr().out.strip() == str(path)
    _png(path)


def test_cli_inspect_features_one_png_per_layer(tiny_rgb_run, tmp_path, capsys):
    run_dir, image = tiny_rgb_run
    assert main(["inspect", "features", str(run_dir), str(image), "--layers", "stem.0", "stages.1.conv2",
                 "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    expected = [tmp_path / "features-00-stem.0.png", tmp_path / "features-00-stages.1.conv2.png"]
    assert printed == [str(path) for path in expected]
    assert sorted(tmp_path.glob("*.png")) == sorted(expected)
    for path in expected:
        _png(path)


def test_cli_inspect_unknown_layer_is_one_line_exit_2(tiny_rgb_run, tmp_path, capsys):
    run_dir, image = tiny_rgb_run
    assert main(["inspect", "filters", str(run_dir), "--layer", "nope", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "'nope'" in error and "stem.0" in error
    assert main(["inspect", "features", str(run_dir), str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_cli_inspect_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "cnnkit inspect filters RUN_DIR" in out and "cnnkit inspect features RUN_DIR shoe.png" in out
