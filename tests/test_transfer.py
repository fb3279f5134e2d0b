"""Transfer learning: pretrained weights fitted to a model, frozen/released layers, backbone LR."""

import shutil

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

import cnnkit
from cnnkit.config import TrainConfig
from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.engine.optim import make_optimizer
from cnnkit.data.preprocess import Preprocessing
from cnnkit.transfer import (DEFAULT_PROBE_L2, TransferSchedule, adapt_state_dict, backbone_blocks,
                             classifier_module, fit_linear_probe, head_features, head_parameter_names,
                             load_pretrained_state, pretrained_preprocessing)
from cnnkit.errors import CheckpointError, ConfigError, ModelError
from cnnkit.registry import create_model


def test_rgb_kernels_are_summed_for_grayscale_and_the_head_is_reset():
    torch.manual_seed(0)
    rgb = create_model("fastnet", num_classes=1000, in_chans=3)
    gray = create_model("fastnet", num_classes=10, in_chans=1)
    report = adapt_state_dict(gray, rgb.state_dict(), "rgb.safetensors")
    assert report.channel_adapted == ["stem.0.weight"]
    assert report.reset == ["head.weight", "head.bias"]
    assert torch.equal(gray.stages[0].conv1.weight, rgb.stages[0].conv1.weight)
    # A gray image replicated to RGB gives the same stem response as the 1-channel image.
    image = torch.rand(2, 1, 28, 28)
    assert torch.allclose(gray.stem[0](image), rgb.stem[0](image.expand(-1, 3, -1, -1)), atol=1e-5)


def test_gray_kernels_are_spread_for_an_rgb_classifier():
    torch.manual_seed(0)
    gray = create_model("fastnet", num_classes=10, in_chans=1)
    rgb = create_model("fastnet", num_classes=10, in_chans=3)
    report = adapt_state_dict(rgb, gray.state_dict(), "gray.safetensors")
    assert report.channel_adapted == ["stem.0.weight"] and not report.reset
    image = torch.rand(2, 3, 28, 28)  # an RGB image responds as its channel mean did in the gray network
    assert torch.allclose(rgb.stem[0](image), gray.stem[0](image.mean(1, keepdim=True)), atol=1e-5)


def test_wrapped_names_are_matched_and_foreign_weights_refused():
    model = create_model("fastnet", num_classes=10)
    wrapped = {f"module.{name}": tensor for name, tensor in model.state_dict().items()}
    report = adapt_state_dict(create_model("fastnet", num_classes=10), wrapped, "ddp.pth")
    assert not report.reset and len(report.loaded) == len(model.state_dict())
    with pytest.raises(CheckpointError, match="none of the pretrained weights"):
        adapt_state_dict(model, create_model("lenet5").state_dict(), "lenet.pth")


def test_weight_files_load_without_unpickling_code(tmp_path):
    model = create_model("fastnet")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "plain.pth")
    state, classes = load_pretrained_state(str(tmp_path / "plain.pth"), "fastnet")
    assert classes is None and torch.equal(state["head.weight"], model.head.weight)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    assert set(load_pretrained_state(str(tmp_path / "w.safetensors"), "fastnet")[0]) == set(model.state_dict())
    torch.save(model, tmp_path / "pickled_module.pth")  # a whole pickled module: refused, never unpickled
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_pretrained_state(str(tmp_path / "pickled_module.pth"), "fastnet")
    with pytest.raises(CheckpointError, match="not a file, run directory or known weight name"):
        load_pretrained_state("no-such-thing", "fastnet")
    with pytest.raises(CheckpointError, match="own model and has no ImageNet weights"):
        load_pretrained_state("imagenet", "fastnet")


def test_offline_download_gives_a_clear_error():
    with pytest.raises(CheckpointError, match="Downloads need a network"):
        load_pretrained_state("ResNet18_Weights.IMAGENET1K_V1", "resnet18")


def test_feature_extraction_and_gradual_unfreezing_schedules():
    model = create_model("fastnet", num_classes=5)
    assert classifier_module(model) is model.head
    blocks = backbone_blocks(model)
    assert [block[0] for block in blocks] == [model.stem, *model.stages]
    linear = TransferSchedule(model, "linear")
    model.train()
    linear.on_epoch_start(None, 0)
    assert [p.requires_grad for p in model.head.parameters()] == [True, True]
    assert not any(p.requires_grad for p in model.stem.parameters()) and not model.stem.training
    gradual = TransferSchedule(model, "gradual", unfreeze_every=2)
    trainable = []
    for epoch in range(10):
        model.train()
        gradual.on_epoch_start(None, epoch)
        trainable.append([any(p.requires_grad for p in block[0].parameters()) for block in blocks])
    assert trainable[0] == trainable[1] == [False, False, False, False]  # head only
    assert trainable[2] == [False, False, False, True]  # the top block first
    assert trainable[8] == [True, True, True, True]


def test_backbone_learning_rate_is_a_fraction_of_the_head_s():
    model = create_model("fastnet", num_classes=5)
    config = TrainConfig(pretrained="x.safetensors", backbone_lr_ratio=0.1, lr=0.2)
    optimizer = make_optimizer(model, config, head_parameter_names(model))  # as the task's setup passes them
    head = {id(p) for p in model.head.parameters()}
    for group in optimizer.param_groups:
        is_head = all(id(p) in head for p in group["params"])
        assert group["lr"] == pytest.approx(0.2 if is_head else 0.02)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


@pytest.mark.parametrize("head_init", ["random", "probe"])
def test_linear_probe_from_a_run_directory_keeps_the_backbone(trained_run, image_folder, tmp_path, capsys, head_init):
    """Pretrain = the 4-class fixture run; target = 2 of its classes (new class list: the head resets)."""
    data = tmp_path / "two"
    for split in ("train", "test"):
        for name in ("Bag", "Trouser"):
            shutil.copytree(image_folder / split / name, data / split / name)
    run = cnnkit.train({"data": str(data), "model": "fastnet", "epochs": 3, "batch_size": 32, "lr": 0.1,
                        "num_threads": 1, "pretrained": str(trained_run[0]), "finetune": "linear", "progress": False, "head_init": head_init,
                        "out": str(tmp_path / "runs"), "name": "probe"})
    source, _ = load_checkpoint(trained_run[0] / "best.safetensors")
    tuned, record = load_checkpoint(run.run_dir / "best.safetensors")
    assert record["config"]["pretrained"] == str(trained_run[0])
    assert torch.equal(tuned["stem.0.weight"], source["stem.0.weight"])  # frozen
    assert torch.equal(tuned["stem.1.running_mean"], source["stem.1.running_mean"])  # BN kept in eval mode
    assert tuned["head.weight"].shape == (2, source["head.weight"].shape[1])
    assert run.best["val_accuracy"] >= 0.9
    assert ("linear probe: L-BFGS logistic regression" in capsys.readouterr().out) == (head_init == "probe")
    # The pretrained network's own normalisation, not the two-class data's statistics.
    assert record["preprocessing"]["mean"] == load_checkpoint(trained_run[0] / "best.safetensors")[1][
        "preprocessing"]["mean"]


def _blobs(count: int, seed: int, shift: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Three Gaussian classes in 6-d, on very different feature scales (as raw frozen features are)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 3
    features = torch.randn(count, 6, generator=generator)
    features[:, :3] += shift * nn.functional.one_hot(labels, 3)
    return features * torch.tensor([100.0, 0.01, 1.0, 5.0, 1.0, 1.0]) + 7.0, labels


def test_linear_probe_is_the_regularised_logistic_regression_on_raw_features():
    train, val = _blobs(120, seed=0), _blobs(60, seed=1)
    fit = fit_linear_probe(train, val, num_classes=3)
    assert fit.weight.shape == (3, 6) and fit.bias.shape == (3,)
    # The standardisation is folded into the weights: they apply to the raw (badly scaled) features.
    assert ((val[0] @ fit.weight.T + fit.bias).argmax(1) == val[1]).float().mean() >= 0.95
    assert fit.val_accuracy >= 0.95 and fit.train_accuracy >= 0.95
    # Picked on validation: the best accuracy, ties broken by the lowest validation loss.
    best = max(fit.candidates, key=lambda c: (c[1], -c[2]))
    assert fit.l2 == best[0] and len(fit.candidates) == 5
    # Stationary point of mean CE + l2/2 |W|^2 on the standardised features: the gradient vanishes.
    mean, std = train[0].double().mean(0), train[0].double().std(0, correction=0)
    weight = (fit.weight.double() * std).requires_grad_()
    bias = (fit.bias.double() + fit.weight.double() @ mean).requires_grad_()
    loss = nn.functional.cross_entropy(((train[0].double() - mean) / std) @ weight.T + bias, train[1])
    (loss + 0.5 * fit.l2 * weight.square().sum()).backward()
    assert weight.grad.abs().max() < 1e-4 and bias.grad.abs().max() < 1e-4
    assert fit_linear_probe(train, None, num_classes=3).l2 == DEFAULT_PROBE_L2  # no val split: the default


def test_head_features_are_what_the_head_sees():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4)
    images, labels = torch.randn(10, 1, 28, 28), torch.arange(10) % 4
    model.train()
    features, seen_labels = head_features(model, model.fc, [(images[:6], labels[:6]), (images[6:], labels[6:])])
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        expected = model.pool(model.stages(model.stem(images)))  # (B, 64): eval mode, pooled last stage
    assert torch.allclose(features, expected, atol=1e-5) and torch.equal(seen_labels, labels)
    with pytest.raises(ModelError, match="nn.Linear head with a bias"):
        head_features(model, nn.Linear(64, 3, bias=False), [(images, labels)])


def test_probe_head_init_fits_the_head_before_the_first_epoch():
    torch.manual_seed(0)
    model = create_model("fastnet", num_classes=2)
    images = torch.randn(32, 1, 28, 28)
    images[16:] += 1.0  # class 1 is brighter: the frozen features separate it
    labels = (torch.arange(32) >= 16).long()
    loaders = ([(images[::2], labels[::2])], [(images[1::2], labels[1::2])])
    schedule = TransferSchedule(model, "linear", head_init="probe", probe_loaders=loaders)
    assert "linear probe first" in schedule.describe()
    schedule.on_epoch_start(None, 0)
    assert torch.equal(model.head.weight, schedule.probe.weight) and schedule.probe.val_accuracy == 1.0
    assert not any(p.requires_grad for p in model.stem.parameters())
    fitted = model.head.weight.clone()
    schedule.on_epoch_start(None, 1)  # fitted once only (a resumed run keeps its trained head)
    assert torch.equal(model.head.weight, fitted)
    with pytest.raises(ModelError, match="probe_loaders"):
        TransferSchedule(model, "full", head_init="probe")
    with pytest.raises(ModelError, match="head_init='lbfgs'"):
        TransferSchedule(model, "full", head_init="lbfgs")
    with pytest.raises(ConfigError, match="head_init"):
        TrainConfig(head_init="zeros")


def test_pretrained_runs_lend_their_normalisation(trained_run, tmp_path):
    target = Preprocessing(1, (28, 28), (0.2,), (0.3,))
    source = load_checkpoint(trained_run[0] / "best.safetensors")[1]["preprocessing"]
    adopted = pretrained_preprocessing(str(trained_run[0]), target)
    assert adopted.mean == tuple(source["mean"]) != target.mean and adopted.std == tuple(source["std"])
    assert adopted.image_size == target.image_size
    rgb = Preprocessing(3, (28, 28), (0.2,) * 3, (0.3,) * 3)
    assert pretrained_preprocessing(str(trained_run[0]), rgb) == rgb  # another channel count: kept
    assert pretrained_preprocessing(str(tmp_path / "weights.safetensors"), target) == target  # plain file: kept


def test_freeze_bn_keeps_pretrained_statistics_while_layers_train():
    model = create_model("fastnet", num_classes=2)
    schedule = TransferSchedule(model, "full", freeze_bn=True)
    assert "BatchNorm statistics kept as pretrained" in schedule.describe()
    model.train()
    schedule.on_epoch_start(None, 0)
    before = model.stem[1].running_mean.clone()
    model(torch.randn(8, 1, 28, 28) * 3 + 2)
    assert torch.equal(model.stem[1].running_mean, before)  # eval-mode BatchNorm: statistics unchanged
    assert all(p.requires_grad for p in model.parameters())  # ... while every layer still trains
    plain = TransferSchedule(model, "full")
    model.train()
    plain.on_epoch_start(None, 0)
    model(torch.randn(8, 1, 28, 28) * 3 + 2)
    assert not torch.equal(model.stem[1].running_mean, before)


def test_fit_input_channels_sums_rgb_and_spreads_gray():
    from cnnkit.transfer.pretrained import fit_input_channels

    rgb = torch.randn(8, 3, 3, 3)
    assert torch.allclose(fit_input_channels(rgb, torch.Size([8, 1, 3, 3])), rgb.sum(1, keepdim=True))
    gray = torch.randn(8, 1, 3, 3)
    spread = fit_input_channels(gray, torch.Size([8, 3, 3, 3]))
    image = torch.randn(1, 1, 5, 5)
    # an RGB image responds as its channel mean did in the gray network
    rgb_image = torch.cat([image, image * 0.5, image * 1.5], dim=1)
    gray_response = nn.functional.conv2d(rgb_image.mean(1, keepdim=True), gray)
    assert torch.allclose(nn.functional.conv2d(rgb_image, spread), gray_response, atol=1e-5)
    assert fit_input_channels(gray, torch.Size([4, 3, 3, 3])) is gray  # other shapes stay as they are


@pytest.mark.parametrize("name", ["unet_resnet18", "deeplabv3_resnet18", "maskrcnn_resnet18_fpn"])
def test_a_gray_classifier_starts_the_backbone_of_colour_segmenters(name, tmp_path):
    """Issue 25 §3: a Fashion-MNIST resnet18 run (gray, 64 px: the ImageNet stem) starts every segmenter's encoder."""
    from cnnkit.transfer import load_matching

    torch.manual_seed(0)
    classifier = create_model("resnet18", num_classes=10, in_chans=1, input_size=64)
    path = tmp_path / "classifier.safetensors"
    save_file({key: value.contiguous() for key, value in classifier.state_dict().items()}, str(path))
    model = create_model(name, num_classes=11, in_chans=3, input_size=128)
    message = load_matching(model, str(path), {"name": name, "args": {}})
    own = model.state_dict()
    backbone = [key for key in classifier.state_dict() if not key.startswith("fc.")]
    loaded = int(message.split("loaded ")[1].split(" ")[0])
    assert loaded == len(backbone), message  # every tensor of the trunk, none of the head
    layer = next(key for key in own if key.endswith("layer3.1.conv2.weight"))
    assert torch.equal(own[layer], classifier.state_dict()["layer3.1.conv2.weight"])
    stem = next(key for key in own if key.endswith(("conv1.weight", "stem.0.weight")) and own[key].shape[1] == 3)
    assert torch.allclose(own[stem], classifier.conv1.weight.detach().expand(-1, 3, -1, -1) / 3)
