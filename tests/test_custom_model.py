"""Custom networks from YAML specs (cnnkit.models.custom): building, shapes, parameter counts, the error
messages a user sees for specs that do not fit, and a trained run that survives deleting its YAML file."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy
import pytest
import torch
import torch.nn as nn
import yaml
from PIL import Image

import cnnkit
from cnnkit.errors import ModelError
from cnnkit.models.custom import DEFAULT_SPEC, CustomCNN, ModelSpecError, Residual, custom_cnn, load_spec
from cnnkit.registry import create_model, get_entry

torch.set_num_threads(1)  # the test machines have 2 shared cores

REPO = Path(__file__).resolve().parents[1]
MY_NET = REPO / "examples" / "my_net.yaml"
RESIDUAL_NET = REPO / "examples" / "residual_net.yaml"


def _build(layers: list, **kwargs) -> CustomCNN:
    return custom_cnn(spec={"layers": layers}, **kwargs)


def _error(layers: list, **kwargs) -> str:
    with pytest.raises(ModelSpecError) as caught:
        _build(layers, **kwargs)
    return str(caught.value)


def _count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


# --- building ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("in_chans, size", [(1, 28), (3, 32)])
def test_example_builds_and_gives_class_scores(in_chans: int, size: int) -> None:
    model = create_model(str(MY_NET), num_classes=10, in_chans=in_chans, input_size=size)
    logits = model(torch.randn(2, in_chans, size, size))
    assert logits.shape == (2, 10)
    nn.functional.cross_entropy(logits, torch.tensor([0, 9])).backward()
    assert model.layers[0].weight.grad.abs().sum() > 0


def test_example_file_is_the_default_spec() -> None:
    # `custom_cnn` without a spec (registry tests, `cnnkit models`) builds examples/my_net.yaml.
    assert load_spec(MY_NET) == DEFAULT_SPEC
    assert get_entry("custom_cnn").family == "custom"


def test_create_model_takes_a_relative_yaml_path(monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    model = create_model("examples/my_net.yaml", num_classes=4)
    assert isinstance(model, CustomCNN) and model(torch.randn(1, 1, 28, 28)).shape == (1, 4)
    assert get_entry("examples/my_net.yaml").name == "custom_cnn"


def test_inferred_shapes_match_the_forward_pass() -> None:
    model = create_model(str(RESIDUAL_NET), in_chans=3, input_size=32).eval()
    inferred = dict(model.layer_shapes)
    x = torch.randn(1, 3, 32, 32)
    for name, module in model.layers.named_children():
        x = module(x)
        label = next(label for label in inferred if label.startswith(f"layer {name} ("))
        assert tuple(x.shape[1:]) == inferred[label], label
    assert inferred["layer 6 (residual)"] == (32, 16, 16)
    assert inferred["layer 6 (residual) > 1 (conv)"] == (32, 16, 16)


def test_parameter_count_equals_hand_computation() -> None:
    model = _build([
        {"conv": {"filters": 4, "kernel": 3}},  # 3*4*9 = 108, no bias: a batchnorm follows
        "batchnorm",  # 2*4 = 8
        "relu",
        {"residual": [{"conv": {"filters": 8, "stride": 2}}]},  # 4*8*9 + 8 = 296; projection 4*8 + BN 2*8 = 48
        "globalmaxpool",
        {"linear": {"units": 5}},  # 8*5 + 5 = 45
        "tanh",  # then the appended head: 5*3 + 3 = 18
    ], num_classes=3, in_chans=3, input_size=8)
    assert _count(model) == 108 + 8 + 296 + 48 + 45 + 18
    residual = model.layers[3]
    assert isinstance(residual, Residual) and residual.shortcut.conv.stride == (2, 2)
    assert isinstance(model.head, nn.Linear) and model.get_classifier() is model.head
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 3)


def test_layer_forms_aliases_and_choices() -> None:
    model = _build([
        {"conv": {"filters": 6, "kernel": 5, "padding": "valid", "bias": True}},  # 12 -> 8
        {"relu": {}}, {"BatchNorm": None}, "batchnorm", {"leaky_relu": {"slope": 0.2}},
        {"avgpool": {"kernel": 2}},  # 8 -> 4
        {"conv": {"filters": 6, "groups": 3, "dilation": 2, "padding": 2}},  # dilated 3x3 spans 5: stays 4
        "silu", "gelu", "sigmoid", "flatten", {"dropout": {"rate": 0.1}},
        {"linear": {"units": "num_classes", "bias": False}},
    ], num_classes=4, input_size=12)
    conv1, conv2 = (module for module in model.modules() if isinstance(module, nn.Conv2d))
    assert conv1.bias is not None and conv2.bias is not None and conv2.groups == 3
    assert isinstance(model.layers[2], nn.BatchNorm2d) and model.layers[4].negative_slope == 0.2
    assert isinstance(model.layers[7], nn.SiLU) and isinstance(model.head, nn.Identity)
    assert model.fixed_size and model.layer_shapes[-1] == ("layer 13 (linear)", (4,))
    assert model(torch.randn(2, 1, 12, 12)).shape == (2, 4)
    with pytest.raises(ModelError, match=r"built for 12x12 images, got 16x16"):
        model(torch.randn(1, 1, 16, 16))


def test_batchnorm_on_flat_features_and_drop_rate_override() -> None:
    model = _build(["globalavgpool", "batchnorm", {"dropout": {"rate": 0.1}},
                    {"residual": [{"linear": {"units": 1}}, "relu"]}], drop_rate=0.4, input_size=5)
    assert isinstance(model.layers[1], nn.BatchNorm1d) and model.layers[2].p == 0.4
    assert not model.fixed_size and model(torch.randn(2, 1, 9, 7)).shape == (2, 10)
    assert "has no dropout layer" in _error(["globalavgpool"], drop_rate=0.2)


# --- errors: they name the layer, the field and the shapes -------------------------------------------

def test_pool_larger_than_its_input() -> None:
    message = _error([{"conv": {"filters": 64}}, {"maxpool": {"kernel": 2}}, {"maxpool": {"kernel": 4}}],
                     input_size=4)
    assert message == ("layer 3 (maxpool): kernel 4 is larger than the 2x2 input (shape (64, 2, 2)); "
                       "use a smaller kernel or fewer poolings")


def test_conv_kernel_larger_than_its_input() -> None:
    message = _error([{"conv": {"filters": 8, "kernel": 7, "padding": "valid"}}], input_size=5, in_chans=3)
    assert message.startswith("layer 1 (conv): kernel 7 is larger than the 5x5 input (shape (3, 5, 5))")
    assert "padding: same" in message


def test_unknown_field_suggests_the_right_one() -> None:
    message = _error(["relu", "relu", "relu", "relu", {"conv": {"filter": 32}}])
    assert message.startswith("layer 5 (conv): unknown field 'filter' (did you mean 'filters'?)")
    assert "conv takes filters, kernel, stride, padding, dilation, groups, bias" in message


def test_unknown_layer_lists_the_known_ones() -> None:
    message = _error(["relu", "convv"])
    assert message.startswith("layer 2: unknown layer 'convv' (did you mean 'conv'?) (known: conv, maxpool,")
    assert "residual" in message


def test_linear_after_a_feature_map_says_to_flatten() -> None:
    layers = [{"conv": {"filters": 32}}, {"maxpool": {"kernel": 2}}, {"conv": {"filters": 64}},
              {"maxpool": {"kernel": 2}}, "relu", {"linear": {"units": 10}}]
    assert _error(layers) == ("layer 6 (linear): expects a flat input but gets (64, 7, 7); "
                              "add a flatten or globalavgpool layer before it")


def test_bad_values_name_the_field_and_value() -> None:
    assert _error([{"conv": {"filters": -3}}]) == "layer 1 (conv): filters must be a positive integer, got -3"
    assert _error(["relu", {"dropout": {"rate": 1.5}}]) == "layer 2 (dropout): rate must be a number in [0, 1), got 1.5"
    assert "padding must be 'same', 'valid' or a non-negative integer, got 'full'" in _error(
        [{"conv": {"filters": 8, "padding": "full"}}])
    assert "layer 1 (conv): padding 'same' needs an odd kernel, got kernel 4" in _error(
        [{"conv": {"filters": 8, "kernel": 4}}])
    assert "layer 1 (conv): missing field 'filters'" in _error(["conv"])
    assert "stride must be a positive integer, got True" in _error([{"maxpool": {"stride": True}}])
    message = _error([{"conv": {"filters": 8, "groups": 3}}], in_chans=4)
    assert "groups 3 must divide the 4 input channels (4)" in message and "(4, 28, 28)" in message


def test_conv_after_flatten() -> None:
    assert _error(["flatten", {"conv": {"filters": 8}}], input_size=4) == (
        "layer 2 (conv): expects a feature map (C, H, W) but gets the flat (16,); conv layers go before "
        "flatten, global pooling and linear layers")


def test_layer_syntax_mistakes() -> None:
    # `- conv:` with its fields not indented under it gives one mapping with several keys.
    assert "indent them under its name" in _error([{"conv": None, "filters": 32}])
    assert "the fields of dropout are a mapping, `- dropout: {rate: ...}`; got 0.3" in _error([{"dropout": 0.3}])
    assert "layers must be a non-empty list" in _error([])
    with pytest.raises(ModelSpecError, match="unknown top-level key 'layer' \\(did you mean 'layers'\\?\\)"):
        custom_cnn(spec={"layer": ["relu"]})


def test_residual_that_changes_the_size_without_projection() -> None:
    message = _error(["relu", {"residual": {"projection": "none", "layers": [{"conv": {"filters": 8, "stride": 2}}]}}])
    assert message.startswith("layer 2 (residual): the body turns (1, 28, 28) into (8, 14, 14), and projection "
                              "is none")


def test_residual_size_no_projection_can_match() -> None:
    message = _error([{"residual": [{"conv": {"filters": 1, "padding": "valid"}}]}])
    assert "(1, 28, 28) into (1, 26, 26): no strided 1x1 projection maps 28x28 to 26x26" in message


def test_nested_layers_are_named_by_their_path() -> None:
    message = _error(["relu", {"residual": ["relu", {"conv": {"filters": 0}}]}])
    assert message == "layer 2 (residual) > 2 (conv): filters must be a positive integer, got 0"
    message = _error([{"residual": [{"residual": [{"maxpool": {"kernel": 40}}]}]}])
    assert message.startswith("layer 1 (residual) > 1 (residual) > 1 (maxpool): kernel 40 is larger than the "
                              "28x28 input (shape (1, 28, 28))")


def test_the_end_of_the_network() -> None:
    assert _error([{"conv": {"filters": 8}}]) == (
        "after layer 1 (conv): the network ends with a (8, 28, 28) feature map, but the classifier appended "
        "after the last layer needs a flat input; end with a globalavgpool or flatten layer")
    message = _error(["globalavgpool", {"linear": {"units": 128}}], num_classes=10)
    assert message.startswith("layer 2 (linear): the last layer gives the class scores, so units must be "
                              "num_classes (10 here), got 128")


# --- files: errors name the file and the line ------------------------------------------------------

def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("layers:\n  - conv: {filters: 32\n  - relu\n")
    with pytest.raises(ModelSpecError) as caught:
        create_model(str(path))
    assert str(caught.value).startswith(f"{path}, line 4, column 1: not valid YAML: expected ',' or '}}'")
    assert "starts on line 2" in str(caught.value)


def test_spec_errors_in_a_file_name_its_line(tmp_path: Path) -> None:
    path = tmp_path / "net.yml"
    path.write_text("# a net\nlayers:\n  - conv: {filters: 8}\n  - residual:\n      - relu\n"
                    "      - maxpool:\n          kernel: 3\n          strid: 2\n")
    with pytest.raises(ModelSpecError) as caught:
        get_entry(str(path))  # what `cnnkit train` checks before loading any data
    assert str(caught.value).startswith(f"{path}, line 8: layer 2 (residual) > 2 (maxpool): unknown field 'strid' "
                                        "(did you mean 'stride'?)")
    path.write_text("layers:\n  - conv: {filters: 8}\n  - maxpool: {kernel: 2}\n  - linear: {units: 10}\n")
    with pytest.raises(ModelSpecError, match=re.escape(f"{path}, line 4: layer 3 (linear): expects a flat input "
                                                       "but gets (8, 14, 14)")):
        create_model(str(path))
    with pytest.raises(ModelError, match="network spec .*missing.yaml does not exist"):
        create_model(str(tmp_path / "missing.yaml"))


# --- end to end: train from a YAML file, then use the run without it ---------------------------------

def _tiny_image_folder(root: Path) -> Path:
    """Two easy classes of 28x28 grayscale PNGs: horizontal and vertical stripes, with noise."""
    generator = numpy.random.default_rng(0)
    stripes = (numpy.arange(28) // 3 % 2 * 200).astype(numpy.int64)
    patterns = {"horizontal": numpy.repeat(stripes[:, None], 28, axis=1),
                "vertical": numpy.repeat(stripes[None, :], 28, axis=0)}
    for name, pattern in patterns.items():
        folder = root / name
        folder.mkdir(parents=True)
        for index in range(30):
            shift = int(generator.integers(0, 6))
            image = numpy.roll(pattern, shift, axis=0 if name == "horizontal" else 1)
            image = numpy.clip(image + generator.integers(0, 40, size=(28, 28)), 0, 255).astype(numpy.uint8)
            Image.fromarray(image, mode="L").save(folder / f"{index:02d}.png")
    return root


def test_train_from_yaml_then_predict_without_the_file(tmp_path: Path) -> None:
    data = _tiny_image_folder(tmp_path / "stripes")
    spec_file = tmp_path / "small_net.yaml"
    spec = {"layers": [{"conv": {"filters": 8}}, "batchnorm", "relu", {"maxpool": {"kernel": 2}},
                       {"residual": [{"conv": {"filters": 8}}, "batchnorm", "relu"]}, "globalavgpool"]}
    spec_file.write_text(yaml.safe_dump(spec))
    run = cnnkit.train({"model": str(spec_file), "data": str(data), "epochs": 1, "num_threads": 1,
                        "batch_size": 16, "progress": False, "out": str(tmp_path / "runs"), "name": "run"})
    record = yaml.safe_load((run.run_dir / "best.json").read_text())  # JSON is YAML
    assert record["architecture"]["name"] == "custom_cnn"
    assert record["architecture"]["args"]["spec"] == spec
    assert record["architecture"]["args"]["in_chans"] == 1

    spec_file.unlink()
    moved = shutil.move(str(data), str(tmp_path / "elsewhere"))
    classifier = cnnkit.load(run.run_dir, device="cpu")
    image = next(Path(moved, "vertical").glob("*.png"))
    top = classifier.predict([image], top_k=2)[0]
    assert sorted(name for name, _ in top) == ["horizontal", "vertical"]
    assert sum(probability for _, probability in top) == pytest.approx(1.0, abs=1e-4)


def test_train_reports_spec_errors_with_file_and_line(tmp_path: Path) -> None:
    data = _tiny_image_folder(tmp_path / "stripes")
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text("layers:\n  - conv: {filters: 8}\n  - linear: {units: num_classes}\n")
    with pytest.raises(ModelSpecError, match=re.escape(f"{spec_file}, line 3: layer 2 (linear): expects a flat "
                                                       "input but gets (8, 28, 28)")):
        cnnkit.train({"model": str(spec_file), "data": str(data), "epochs": 1, "num_threads": 1,
                      "progress": False, "out": str(tmp_path / "runs"), "name": "run"})
    assert not (tmp_path / "runs").exists()


def test_resume_does_not_need_the_yaml_file_and_runs_go_under_out(tmp_path, monkeypatch):
    """The spec travels in the checkpoint: deleting or editing the YAML does not affect a resumed run."""
    import shutil

    import cnnkit

    data = tmp_path / "data"
    for name, value in (("dark", 40), ("light", 200)):
        (data / name).mkdir(parents=True)
        for index in range(20):
            image = numpy.full((28, 28), value, dtype=numpy.uint8)
            image[index % 28, :] = 255 - value
            Image.fromarray(image).save(data / name / f"{index}.png")
    spec = tmp_path / "specs" / "tiny.yaml"
    spec.parent.mkdir()
    spec.write_text("layers:\n  - conv: {filters: 4}\n  - relu\n  - globalavgpool\n")
    settings = {"data": str(data), "model": str(spec), "batch_size": 8, "num_threads": 1, "progress": False,
                "out": str(tmp_path / "runs")}
    run = cnnkit.train(settings, epochs=1)
    assert run.run_dir.parent == tmp_path / "runs" and run.run_dir.name.startswith("tiny-")
    shutil.rmtree(spec.parent)
    resumed = cnnkit.train(resume=run.run_dir, epochs=2)
    assert resumed.run_dir == run.run_dir
    assert len((run.run_dir / "metrics.jsonl").read_text().splitlines()) == 2
