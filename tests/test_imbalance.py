"""Class imbalance: class weights and focal loss against hand computation, the oversampler, training with each."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from cnnkit.config import TrainConfig
from cnnkit.data import TensorLoader
from cnnkit.data.loader import epoch_order
from cnnkit.data.streaming import FileSplit, StreamingLoader
from cnnkit.errors import ConfigError
from cnnkit.losses.classification import class_weights, classification_loss

# ---------------------------------------------------------------------------- class weights


def test_inverse_weights_by_hand():
    labels = torch.tensor([0, 1, 1, 1])  # counts (1, 3): 1/n = (1, 1/3), mean 2/3 -> (1.5, 0.5)
    assert class_weights(labels, 2, "inverse").tolist() == pytest.approx([1.5, 0.5])
    assert class_weights(labels, 2, "none") is None


def test_effective_number_weights_by_hand():
    labels = torch.tensor([0, 1, 1, 1])
    # beta 0.5: E(1) = (1 - 0.5) / 0.5 = 1, E(3) = (1 - 0.125) / 0.5 = 1.75; 1/E = (1, 0.5714), mean 0.7857
    assert class_weights(labels, 2, "effective", beta=0.5).tolist() == pytest.approx([1 / 0.7857143, 0.5714286 / 0.7857143])
    assert class_weights(labels, 2, "effective", beta=0.0).tolist() == pytest.approx([1.0, 1.0])  # beta 0: equal
    # beta -> 1 tends to inverse frequency
    assert class_weights(labels, 2, "effective", beta=0.999999).tolist() == pytest.approx([1.5, 0.5], abs=1e-4)


def test_a_class_without_training_images_gets_weight_zero():
    weights = class_weights(torch.tensor([0, 0, 2]), 3, "inverse")  # class 1 absent
    assert weights.tolist() == pytest.approx([2 / 3, 0.0, 4 / 3])  # (1/2, 1) over its mean 3/4


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="class_weights='balanced' is not one of none, inverse, effective"):
        TrainConfig(class_weights="balanced")
    with pytest.raises(ConfigError, match="sampler="):
        TrainConfig(sampler="weighted")
    with pytest.raises(ConfigError, match="class_weights_beta=1.0 must be in"):
        TrainConfig(class_weights_beta=1.0)
    with pytest.raises(ConfigError, match="focal_gamma=-1.0 must be >= 0"):
        TrainConfig(loss="focal", focal_gamma=-1.0)


# ---------------------------------------------------------------------------- the loss


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=generator) * 2
    targets = torch.tensor([0, 1, 2, 3, 3, 1])
    return logits, targets


def test_cross_entropy_equals_pytorch_with_weights_and_smoothing(batch):
    logits, targets = batch
    weight = torch.tensor([0.5, 2.0, 1.0, 0.5])
    for smoothing in (0.0, 0.1):
        expected = F.cross_entropy(logits, targets, weight=weight, label_smoothing=smoothing)
        assert classification_loss(logits, targets, weight, smoothing, gamma=0.0) == pytest.approx(float(expected), rel=1e-6)
    assert classification_loss(logits, targets) == pytest.approx(float(F.cross_entropy(logits, targets)), rel=1e-6)


def test_focal_loss_by_hand(batch):
    logits, targets = batch
    probabilities = logits.softmax(dim=1)
    p_true = probabilities[torch.arange(6), targets]
    expected = (-(1 - p_true) ** 2 * p_true.log()).mean()  # Lin et al.: -(1 - p_t)^gamma log p_t
    assert classification_loss(logits, targets, gamma=2.0) == pytest.approx(float(expected), rel=1e-5)
    # Class weights act as alpha: weighted mean over the batch, as F.cross_entropy's weight.
    weight = torch.tensor([0.5, 2.0, 1.0, 0.5])
    weighted = (weight[targets] * -(1 - p_true) ** 2 * p_true.log()).sum() / weight[targets].sum()
    assert classification_loss(logits, targets, weight, gamma=2.0) == pytest.approx(float(weighted), rel=1e-5)
    # Focusing only lowers the loss, most for the easy images.
    assert classification_loss(logits, targets, gamma=2.0) < classification_loss(logits, targets)


def test_probability_targets_match_index_targets_and_pytorch(batch):
    logits, targets = batch
    one_hot = F.one_hot(targets, 4).float()
    weight = torch.tensor([0.5, 2.0, 1.0, 0.5])
    for gamma in (0.0, 2.0):
        for smoothing in (0.0, 0.1):
            assert classification_loss(logits, one_hot, weight, smoothing, gamma) == pytest.approx(
                float(classification_loss(logits, targets, weight, smoothing, gamma)), rel=1e-6)
    soft = torch.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    expected = F.cross_entropy(logits, soft, label_smoothing=0.1)  # PyTorch's soft-target cross-entropy
    assert classification_loss(logits, soft, label_smoothing=0.1) == pytest.approx(float(expected), rel=1e-6)


def test_focal_loss_with_mixed_targets_by_hand():
    # One image, MixUp of class 0 (0.7) and class 1 (0.3), gamma 2, no smoothing: each class term focused.
    logits = torch.tensor([[1.0, 0.0, -1.0]])
    targets = torch.tensor([[0.7, 0.3, 0.0]])
    p = logits.softmax(dim=1)[0]
    expected = -(0.7 * (1 - p[0]) ** 2 * p[0].log() + 0.3 * (1 - p[1]) ** 2 * p[1].log())
    assert classification_loss(logits, targets, gamma=2.0) == pytest.approx(float(expected), rel=1e-6)
    # Weighted: divided by the target's weight w . y, so a pure class-0 image keeps its plain loss.
    weight = torch.tensor([2.0, 1.0, 1.0])
    weighted = -(0.7 * 2 * (1 - p[0]) ** 2 * p[0].log() + 0.3 * (1 - p[1]) ** 2 * p[1].log()) / (0.7 * 2 + 0.3)
    assert classification_loss(logits, targets, weight, gamma=2.0) == pytest.approx(float(weighted), rel=1e-6)
    with pytest.raises(ConfigError, match="probability targets must have the logits' shape"):
        classification_loss(logits, torch.zeros(1, 4))


def test_focal_gradient_is_finite_for_confident_predictions():
    logits = torch.tensor([[60.0, -60.0], [-60.0, 60.0]], requires_grad=True)
    for gamma in (0.5, 2.0):
        loss = classification_loss(logits, torch.tensor([0, 1]), gamma=gamma)
        (gradient,) = torch.autograd.grad(loss, logits)
        assert math.isfinite(float(loss.detach())) and torch.isfinite(gradient).all()


# ---------------------------------------------------------------------------- the oversampler


def test_oversampling_balances_classes_and_is_deterministic():
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    order = epoch_order(labels, shuffle=True, oversample=True, seed=3, epoch=0)
    assert order.shape == (1000,)  # the epoch keeps its length
    counts = torch.bincount(labels[order], minlength=3)
    assert ((counts - 1000 / 3).abs() < 70).all(), counts  # ~333 each (binomial sd ~15); plain: 900/90/10
    assert torch.equal(order, epoch_order(labels, True, True, seed=3, epoch=0))
    assert not torch.equal(order, epoch_order(labels, True, True, seed=3, epoch=1))
    assert not torch.equal(order, epoch_order(labels, True, True, seed=4, epoch=0))
    assert len(set(order[labels[order] == 2].tolist())) <= 10  # the rare class repeats its ten images
    plain = epoch_order(labels, shuffle=True, oversample=False, seed=3, epoch=0)
    assert torch.equal(plain.sort().values, torch.arange(1000))  # shuffle: a permutation
    assert torch.equal(epoch_order(labels, False, True, seed=3, epoch=0), torch.arange(1000))  # evaluation order


def test_tensor_and_streaming_loaders_oversample_the_same_way(tmp_path):
    labels = torch.tensor([0] * 45 + [1] * 5)
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 1, 4, 4).contiguous()
    options = dict(batch_size=10, mean=[0.5], std=[0.5], shuffle=True, augment=None, drop_last=True, seed=0,
                   oversample=True)
    loader = TensorLoader(images, labels, **options)
    loader.set_epoch(2)
    seen = torch.cat([batch_labels for _, batch_labels in loader])
    assert len(seen) == 50 and 12 <= int((seen == 1).sum()) <= 38  # ~25 of the rare class, not 5
    paths = []
    for index in range(50):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(images[index, 0].numpy()).save(paths[-1])
    streaming = StreamingLoader(FileSplit(paths, labels, ["a", "b"]), 1, (4, 4), num_workers=0, **options)
    streamed = [index for batch in streaming.epoch_batches(2) for index, _ in batch]
    assert streamed == loader._epoch_plan(2)[0].tolist()


# ---------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def imbalanced_folder(tmp_path_factory, fashion_images):
    """4 Fashion-MNIST classes with 100, 100, 20 and 20 training images (PNG folders), test untouched."""
    root = tmp_path_factory.mktemp("imbalanced")
    kept = {"Bag": 100, "Sneaker": 100, "T-shirt": 20, "Trouser": 20}
    for split, by_class in fashion_images.items():
        for name, images in by_class.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for index, image in enumerate(images[: kept[name]] if split == "train" else images):
                Image.fromarray(image, mode="L").save(folder / f"{index:03d}.png")
    return root


def test_setup_wires_weights_focal_and_oversampling(imbalanced_folder):
    from cnnkit.tasks.classification import setup as setup_classification
    from cnnkit.engine.distributed import DistInfo

    config = TrainConfig(data=str(imbalanced_folder), class_weights="inverse", sampler="oversample", loss="focal",
                         focal_gamma=1.5, val_fraction=0.2, batch_size=32, progress=False)
    setup = setup_classification(config, torch.device("cpu"), DistInfo(), None)
    # Training split after the stratified 20% validation cut: 80, 80, 16, 16 images (Bag, Sneaker, T-shirt, Trouser).
    assert setup.task.class_weights.tolist() == pytest.approx([1 / 3, 1 / 3, 5 / 3, 5 / 3])  # 1/n over its mean
    assert setup.task.focal_gamma == 1.5
    assert setup.train_loader.oversample and not setup.val_loader.oversample
    plain = setup_classification(TrainConfig(data=str(imbalanced_folder), val_fraction=0.2, progress=False),
                                 torch.device("cpu"), DistInfo(), None)
    assert plain.task.class_weights is None and plain.task.focal_gamma == 0.0 and not plain.train_loader.oversample


@pytest.mark.parametrize("settings", [{"class_weights": "inverse"}, {"class_weights": "effective"},
                                      {"sampler": "oversample"}, {"loss": "focal", "label_smoothing": 0.1}])
def test_training_runs_with_each_remedy(imbalanced_folder, tmp_path, settings):
    import cnnkit

    run = cnnkit.train(data=str(imbalanced_folder), epochs=1, batch_size=32, val_fraction=0.2, num_threads=1,
                       out=str(tmp_path), name="run", progress=False, report=False, **settings)
    assert math.isfinite(run.best["train_loss"]) and 0.0 <= run.best["val_accuracy"] <= 1.0
    saved = yaml.safe_load((run.run_dir / "config.yaml").read_text())
    assert all(saved[key] == value for key, value in settings.items())
