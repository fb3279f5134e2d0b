"""The multi-level head: features pooled from several depths, for feature extraction (cnnkit.models.multilevel)."""

import copy
import shutil
import threading

import pytest
import torch

import cnnkit
from cnnkit.config import TrainConfig
from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.transfer import head_features
from cnnkit.transfer import adapt_state_dict, backbone_blocks, classifier_module
from cnnkit.errors import ConfigError, ModelError
from cnnkit.export import export_run
from cnnkit.registry import create_model


def test_levels_are_the_last_resolutions_and_the_head_reads_them_all():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=5, in_chans=1, input_size=28, head_levels=2, head_grid=2)
    assert model.level_shapes == [(32, 14, 14), (64, 7, 7)]  # stages 2 and 3 of the CIFAR ResNet
    assert model.head.in_features == (32 + 64) * 2 * 2
    assert classifier_module(model) is model.head
    assert type(model.backbone.fc).__name__ == "Identity"  # the old head is gone, not computed twice
    images = torch.randn(3, 1, 28, 28)
    # The features are exactly the two stages' maps, average-pooled to 2x2 and concatenated.
    model.eval()
    with torch.no_grad():
        x = model.backbone.stages[0](model.backbone.stem(images))
        stage2 = model.backbone.stages[1](x)
        stage3 = model.backbone.stages[2](stage2)
        expected = torch.cat([torch.nn.functional.adaptive_avg_pool2d(m, 2).flatten(1) for m in (stage2, stage3)], 1)
        assert torch.allclose(model.forward_features(images), expected, atol=1e-6)
    assert model(images).shape == (3, 5)
    # Freezing and gradual unfreezing see the backbone's blocks, not one opaque wrapper.
    assert len(backbone_blocks(model)) == len(backbone_blocks(create_model("resnet20", num_classes=5)))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_large", "vgg11", "densenet121", "efficientnet_b0",
                                  "examples/my_net.yaml"])
def test_zoo_models_take_a_multilevel_head_at_small_inputs(name):
    model = create_model(name, num_classes=7, in_chans=1, input_size=28, head_levels=2)
    assert len(model.level_shapes) == 2
    assert model.level_shapes[0][1] > model.level_shapes[1][1]  # two different resolutions, coarser last
    output = model(torch.randn(2, 1, 28, 28))
    assert output.shape == (2, 7)
    output.sum().backward()
    assert model.head.weight.grad is not None


def test_bad_multilevel_settings_are_refused_clearly():
    with pytest.raises(ModelError, match="only 3 resolution levels"):
        create_model("resnet20", num_classes=5, in_chans=1, input_size=28, head_levels=4)
    with pytest.raises(ModelError, match="returns tokens"):
        create_model("vit_b_16", num_classes=5, in_chans=1, input_size=28, head_levels=2)
    with pytest.raises(ConfigError, match="head_levels"):
        TrainConfig(head_levels=-1)
    with pytest.raises(ConfigError, match="head_grid"):
        TrainConfig(head_grid=0)


def test_plain_weights_load_into_the_backbone_and_the_new_head_resets():
    plain = create_model("resnet20", num_classes=5, in_chans=1, input_size=28)
    model = create_model("resnet20", num_classes=5, in_chans=1, input_size=28, head_levels=3)
    report = adapt_state_dict(model, plain.state_dict(), "plain.safetensors")
    assert report.reset == ["head.weight", "head.bias"]
    assert report.unused == ["backbone.fc.bias", "backbone.fc.weight"]  # the old head's weights
    assert torch.equal(model.backbone.stem.conv.weight, plain.stem.conv.weight)


def test_feature_extraction_run_with_a_multilevel_head_saves_and_reloads(trained_run, image_folder, tmp_path):
    """Pretrained = the 4-class fixture run (fastnet); target = 2 of its classes, probe head over 2 levels."""
    data = tmp_path / "two"
    for split in ("train", "test"):
        for name in ("Bag", "Trouser"):
            shutil.copytree(image_folder / split / name, data / split / name)
    run = cnnkit.train({"data": str(data), "model": "fastnet", "epochs": 2, "batch_size": 32, "lr": 0.1,
                        "num_threads": 1, "pretrained": str(trained_run[0]), "finetune": "linear",
                        "head_init": "probe", "head_levels": 2, "head_grid": 2, "progress": False,
                        "report": False, "out": str(tmp_path / "runs"), "name": "multilevel"})
    source, _ = load_checkpoint(trained_run[0] / "best.safetensors")
    tuned, record = load_checkpoint(run.run_dir / "best.safetensors")
    assert record["architecture"]["args"]["head_levels"] == 2
    assert torch.equal(tuned["backbone.stem.0.weight"], source["stem.0.weight"])  # frozen, loaded
    assert run.best["val_accuracy"] >= 0.9
    classifier = cnnkit.load(run.run_dir)  # rebuilt from the record alone
    assert classifier.evaluate("test")["accuracy"] >= 0.9
    # What the probe fitted on is what the head sees: the multi-level features.
    features, _ = head_features(classifier.model, classifier.model.head, [(torch.zeros(2, 1, 28, 28), torch.zeros(2))])
    assert features.shape == (2, classifier.model.head.in_features)
    # Export traces through the hooks: the parity check inside export_run compares with PyTorch (batch 1 and 4).
    for export_format in ("onnx", "torchscript"):
        result = export_run(run.run_dir, export_format, out=tmp_path / "export" / f"model-{export_format}",
                            dynamic_batch=True)
        assert max(result.parity["max_abs_diff"].values()) <= 1e-4


def test_multilevel_model_deep_copies_and_runs_in_threads():
    """EMA deep-copies the model; a server runs one model in several threads at once."""
    torch.manual_seed(0)
    model = create_model("fastnet", num_classes=4, in_chans=1, input_size=28, head_levels=2).eval()
    clone = copy.deepcopy(model)
    images = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        expected = model(images)
        assert torch.equal(clone(images), expected)
        clone.head.bias.add_(1.0)  # the copy's hooks feed the copy's head, not the original's
        assert torch.allclose(clone(images), expected + 1.0, atol=1e-5)
        outputs = []
        threads = [threading.Thread(target=lambda index=index: outputs.append(model(images[index:index + 1])))
                   for index in range(3) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(outputs) == 12 and all(output.shape == (1, 4) for output in outputs)
    assert sorted(round(o.sum().item(), 4) for o in outputs) == sorted(
        round(expected[index].sum().item(), 4) for index in range(3) for _ in range(4))


def test_epochs_zero_is_a_probe_fitted_head_and_nothing_else(trained_run, image_folder, tmp_path):
    """Feature extraction whose head is trained by the probe alone: validated and saved as epoch 0."""
    data = tmp_path / "two"
    for split in ("train", "test"):
        for name in ("Bag", "Trouser"):
            shutil.copytree(image_folder / split / name, data / split / name)
    settings = {"data": str(data), "model": "fastnet", "num_threads": 1, "pretrained": str(trained_run[0]),
                "finetune": "linear", "head_init": "probe", "epochs": 0, "head_levels": 2, "progress": False,
                "report": False, "ema_decay": 0.99, "out": str(tmp_path / "runs")}
    run = cnnkit.train({**settings, "name": "probe-only"})
    source, _ = load_checkpoint(trained_run[0] / "best.safetensors")
    best, record = load_checkpoint(run.run_dir / "best.safetensors")
    assert run.best["epoch"] == 0 and run.best["val_accuracy"] >= 0.9
    assert record["metrics"]["epoch"] == 0
    assert torch.equal(best["backbone.stem.0.weight"], source["stem.0.weight"])
    # The saved head is the fitted probe (best is written from the EMA copy, which must follow it), not the
    # random head a new 2-class model starts with.
    assert cnnkit.load(run.run_dir).evaluate("test")["accuracy"] >= 0.9
    lines = (run.run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"epoch": 0' in lines[0]
    with pytest.raises(ConfigError, match="epochs=0 trains nothing"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="epochs=0 trains nothing"):
        TrainConfig(epochs=0, pretrained="x", finetune="full", head_init="probe")
