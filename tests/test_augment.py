"""Batched augmentations against torchvision, MixUp/CutMix label bookkeeping, and the config wiring."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from cnnkit.config import TrainConfig
from cnnkit.data.augment import AugmentConfig, build_augmentations
from cnnkit.data.augment_ops import ColorJitter, PolicyAugment, RandomErasing, RandomWarp
from cnnkit.data.loader import TensorLoader
from cnnkit.data.mixing import BatchMixer, cutmix
from cnnkit.errors import ConfigError


def shape_image(channels: int = 1, size: int = 28) -> torch.Tensor:
    """A bar and a cap on black: asymmetric, so a wrong rotation or shear direction shows."""
    image = torch.zeros(1, channels, size, size, dtype=torch.uint8)
    image[..., 6:20, 10:14] = 255
    image[..., 6:9, 10:22] = 200
    return image


def warp_params(angle=0.0, zoom=1.0, shear=0.0, crop=(1.0, 1.0, 0.0, 0.0)) -> torch.Tensor:
    return torch.tensor([[angle, zoom, shear, *crop]], dtype=torch.float64)


@pytest.mark.parametrize("degrees, zoom, shear_degrees", [(17.0, 1.0, 0.0), (-30.0, 1.0, 0.0), (0.0, 1.2, 0.0),
                                                          (0.0, 1.0, 15.0), (10.0, 0.9, -12.0)])
def test_warp_matches_torchvision_affine(degrees, zoom, shear_degrees) -> None:
    image = shape_image()
    params = warp_params(math.radians(degrees), zoom, math.tan(math.radians(shear_degrees)))
    ours, _ = RandomWarp().apply(image, torch.zeros(1), params)
    reference = TF.affine(image, angle=degrees, translate=[0, 0], scale=zoom, shear=[shear_degrees, 0.0],
                          interpolation=TF.InterpolationMode.BILINEAR)
    # Same sampling grid; only rounding at the bilinear weights may differ.
    assert (ours.int() - reference.int()).abs().float().mean() < 1.0


def test_warp_crop_takes_the_window_and_resizes_it() -> None:
    image = torch.arange(16 * 16, dtype=torch.float32).view(1, 1, 16, 16)
    image = (image / image.max() * 255).round().to(torch.uint8)
    # The top-left quarter: width/height 0.5 of the image, centred at (-0.5, -0.5) in [-1, 1] units.
    params = warp_params(crop=(0.5, 0.5, -0.5, -0.5))
    ours, _ = RandomWarp(resized_crop=0.25).apply(image, torch.zeros(1), params)
    reference = F.interpolate(image[..., :8, :8].float(), size=(16, 16), mode="bilinear", align_corners=False)
    assert (ours.float() - reference).abs()[..., 1:-1, 1:-1].max() <= 1.0


def test_identity_warp_and_zero_jitter_leave_images_unchanged() -> None:
    images = (torch.rand(4, 3, 12, 12) * 255).to(torch.uint8)
    warped, _ = RandomWarp().apply(images, torch.zeros(4), warp_params().repeat(4, 1))
    assert torch.equal(warped, images)
    jitter = ColorJitter(0.0, 0.0, 0.0, 0.0)
    same, _ = jitter.apply(images, torch.zeros(4), torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(4, 1))
    assert torch.equal(same, images)


@pytest.mark.parametrize("channels", [1, 3])
def test_color_jitter_matches_torchvision_factors(channels: int) -> None:
    images = (torch.rand(3, channels, 10, 10) * 255).to(torch.uint8)
    params = torch.tensor([[1.3, 1.0, 1.0, 0.0], [1.0, 0.6, 1.0, 0.0], [1.0, 1.0, 1.5, 0.0]])
    ours, _ = ColorJitter(0.5, 0.5, 0.5).apply(images, torch.zeros(3), params)
    assert (ours[0].int() - TF.adjust_brightness(images[0], 1.3).int()).abs().max() <= 1
    assert (ours[1].int() - TF.adjust_contrast(images[1], 0.6).int()).abs().max() <= 1
    expected = TF.adjust_saturation(images[2], 1.5) if channels == 3 else images[2]
    assert (ours[2].int() - expected.int()).abs().max() <= 1


def test_hue_rotation_keeps_gray_pixels_and_changes_colour() -> None:
    gray = torch.full((1, 3, 4, 4), 128, dtype=torch.uint8)
    red = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    red[:, 0] = 200
    params = torch.tensor([[1.0, 1.0, 1.0, 0.3]])
    jitter = ColorJitter(hue=0.5)
    assert torch.equal(jitter.apply(gray, torch.zeros(1), params)[0], gray)
    shifted, _ = jitter.apply(red, torch.zeros(1), params)
    assert shifted[0, 0].float().mean() < 150 and shifted[0, 1:].float().mean() > 20


def test_random_erasing_blacks_out_one_rectangle_of_the_right_size() -> None:
    images = torch.full((64, 1, 20, 20), 255, dtype=torch.uint8)
    erasing = RandomErasing(probability=1.0)
    out, _ = erasing.apply(images, torch.zeros(64), erasing.sample(64, torch.Generator().manual_seed(0)))
    erased = (out == 0).float().mean(dim=(1, 2, 3))
    assert (erased > 0.005).all() and (erased < 0.40).all()
    for image in out[:, 0]:  # the black pixels form one axis-aligned rectangle
        rows, cols = (image == 0).nonzero(as_tuple=True)
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    none, _ = RandomErasing(probability=0.0).apply(images, torch.zeros(64),
                                                   RandomErasing(0.0).sample(64, torch.Generator()))
    assert torch.equal(none, images)


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment", "trivialaugment"])
@pytest.mark.parametrize("channels", [1, 3])
def test_policies_run_per_image_and_repeat_with_the_same_seed(policy: str, channels: int) -> None:
    images = (torch.rand(6, channels, 16, 16) * 255).to(torch.uint8)
    augment = PolicyAugment(policy)
    params = augment.sample(6, torch.Generator().manual_seed(1))
    state = torch.random.get_rng_state()
    first, _ = augment.apply(images, torch.zeros(6), params)
    second, _ = augment.apply(images, torch.zeros(6), params)
    assert torch.equal(first, second) and first.shape == images.shape and first.dtype == torch.uint8
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone


def test_loader_with_every_augmentation_is_deterministic_and_keeps_labels() -> None:
    images = (torch.rand(64, 1, 28, 28) * 255).to(torch.uint8)
    labels = torch.arange(64) % 10
    config = AugmentConfig(hflip=True, vflip=True, translate=2, rotate=10, scale=0.1, shear=5, resized_crop=0.5,
                           brightness=0.2, contrast=0.2, auto_augment="trivialaugment", random_erasing=0.5)
    assert len(build_augmentations(config)) == 7  # flips, translate, one warp, policy, jitter, erasing

    def epoch():
        loader = TensorLoader(images, labels, batch_size=16, mean=[0.5], std=[0.25], shuffle=True, augment=config,
                              drop_last=True, seed=3)
        return list(loader)

    first, second = epoch(), epoch()
    for (a, la), (b, lb) in zip(first, second):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert sorted(torch.cat([lb for _, lb in first]).tolist()) == sorted(labels.tolist())


def test_mixup_mixes_images_and_labels_in_the_same_proportion() -> None:
    torch.manual_seed(0)
    images, labels = torch.randn(8, 1, 4, 4), torch.arange(8) % 4
    mixed, targets = BatchMixer(4, mixup_alpha=0.4)(images, labels)
    assert torch.allclose(targets.sum(1), torch.ones(8))
    lam = float(targets[0, labels[0]]) if labels[0] != labels[7] else None
    if lam is not None:
        assert torch.allclose(mixed[0], lam * images[0] + (1 - lam) * images[7], atol=1e-6)


def test_cutmix_label_weight_equals_the_pasted_area() -> None:
    torch.manual_seed(1)
    images, partner = torch.zeros(2, 1, 10, 10), torch.ones(2, 1, 10, 10)
    mixed, kept = cutmix(images, partner, lam=0.6)
    assert math.isclose(kept, 1 - float(mixed[0].mean()), abs_tol=1e-6)
    mixer = BatchMixer(2, cutmix_alpha=1.0)
    labels = torch.tensor([0, 1])
    batch = torch.cat([torch.zeros(1, 1, 10, 10), torch.ones(1, 1, 10, 10)])  # sample 1 is sample 0's partner
    out, targets = mixer(batch, labels)
    # Sample 0 keeps the zeros image's class in proportion to its untouched pixels.
    assert math.isclose(float(targets[0, 0]), 1 - float(out[0].mean()), abs_tol=1e-6)


def test_config_validates_augmentation_values() -> None:
    with pytest.raises(ConfigError, match="auto_augment"):
        TrainConfig(auto_augment="autoaug")
    with pytest.raises(ConfigError, match="hue"):
        TrainConfig(hue=0.7)
    with pytest.raises(ConfigError, match="mixup"):
        TrainConfig(mixup=-1.0)
    assert TrainConfig(rotate=10, random_erasing=0.25).augment_config().rotate == 10


def test_training_with_mixing_and_policies_runs(image_folder, tmp_path) -> None:
    import cnnkit

    run = cnnkit.train(data=str(image_folder / "train"), epochs=1, batch_size=32, mixup=0.2, cutmix=1.0,
                       auto_augment="randaugment", random_erasing=0.25, rotate=10, grad_clip_value=1.0,
                       tta=True, out=str(tmp_path), progress=False, num_threads=1)
    assert 0.0 <= run.best["val_accuracy"] <= 1.0 and math.isfinite(run.best["train_loss"])


def test_augment_preview_writes_a_grid(image_folder, tmp_path) -> None:
    from conftest import run_cli

    out = tmp_path / "grid.png"
    result = run_cli("augment", "preview", "--data", str(image_folder / "train"), "--out", str(out), "--count", "12",
                     "rotate=20", "cutmix=1.0")
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 5_000 and str(out) in result.stdout
    bad = run_cli("augment", "preview", "--data", str(image_folder / "train"), "hue=0.9")
    assert bad.returncode == 2 and "hue" in bad.stderr and "Traceback" not in bad.stderr


def test_label_text_names_both_classes_of_a_mixed_label() -> None:
    from cnnkit.tasks.classification.preview import label_text

    assert label_text(torch.tensor([0.0, 1.0, 0.0]), ["a", "b", "c"]) == "b"
    assert label_text(torch.tensor([0.25, 0.75, 0.0]), ["a", "b", "c"]) == "b 0.75 + a 0.25"
