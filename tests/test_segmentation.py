"""Segmentation: mask data and its checks, 16-bit images, joint transforms, metrics and losses against hand
values, every segmentation model's forward/backward, the U-Net's encoder pyramid, Mask R-CNN's contract."""

from __future__ import annotations

import math

import numpy
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnkit.data.augment import AugmentConfig
from cnnkit.data.segmentation import (SegmentationDataset, check_masks, read_image, read_mask, scan_segmentation,
                                      segmentation_transform)
from cnnkit.errors import ConfigError, DataError, DatasetNotFoundError
from cnnkit.losses.segmentation import SegmentationLoss, dice_loss, focal_loss, parse_loss_spec
from cnnkit.metrics.segmentation import SegmentationMeter
from cnnkit.registry import create_model, list_models


def write_pair(root, split, name, image: numpy.ndarray, mask: numpy.ndarray) -> None:
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / split / "images" / f"{name}.png")
    Image.fromarray(mask, mode="L").save(root / split / "masks" / f"{name}.png")


@pytest.fixture
def scenes(tmp_path):
    """Two 16x16 images in the scenes layout; classes.txt names 2 objects (mask values 1, 2)."""
    (tmp_path / "classes.txt").write_text("square\nbar\n")
    mask = numpy.zeros((16, 16), numpy.uint8)
    mask[2:8, 2:8], mask[10:12, :] = 1, 2
    for name in ("a", "b"):
        write_pair(tmp_path, "train", name, numpy.full((16, 16, 3), 40, numpy.uint8), mask)
    return tmp_path


# ------------------------------------------------------------------------------------------------ data
def test_class_balanced_sampling_draws_images_of_rare_classes_more_often(tmp_path):
    """sampler=oversample for task=segment: 9 images hold only the square, 1 holds the bar too. By hand: the
    square is in 10 images, the bar in 1, background in 10 -> weights 1/10 for nine, 1 for the bar image, so
    the bar image is drawn with probability 1 / 1.9 ~ 0.53 per draw (a plain shuffle: 0.1)."""
    from cnnkit.config import TrainConfig
    from cnnkit.data.segmentation import class_balanced_weights
    from cnnkit.data.sharded_loader import ShardedLoader

    (tmp_path / "classes.txt").write_text("square\nbar\n")
    for k in range(10):
        mask = numpy.zeros((8, 8), numpy.uint8)
        mask[1:4, 1:4] = 1
        if k == 7:
            mask[6, :] = 2
        write_pair(tmp_path, "train", f"i{k}", numpy.full((8, 8, 3), 40, numpy.uint8), mask)
    files = scan_segmentation(tmp_path, "train")
    weights = class_balanced_weights(files)
    bar_image = [p[0].name for p in files.pairs].index("i7.png")
    expected = torch.full((10,), 0.1, dtype=torch.float64)
    expected[bar_image] = 1.0
    assert torch.allclose(weights, expected)
    dataset = list(range(10))
    loader = ShardedLoader(dataset, 2, train=True, seed=0, weights=weights)
    draws = [index for epoch in range(200) for index in loader.shard_indices(epoch)]
    assert 0.45 < draws.count(bar_image) / len(draws) < 0.61
    assert loader.shard_indices(3) == ShardedLoader(dataset, 2, train=True, seed=0, weights=weights).shard_indices(3)
    plain = [index for epoch in range(200) for index in ShardedLoader(dataset, 2, train=True).shard_indices(epoch)]
    assert plain.count(bar_image) == 200  # a permutation: each image once per epoch
    with pytest.raises(ConfigError, match="weights"):
        ShardedLoader(dataset, 2, train=True, weights=torch.ones(3))
    with pytest.raises(ConfigError, match="sampler=oversample is for task=classify and task=segment"):
        TrainConfig(task="detect", sampler="oversample")


def test_scenes_layout_puts_background_first(scenes):
    files = scan_segmentation(scenes, "train")
    assert files.classes == ["background", "square", "bar"]
    assert [p[0].name for p in files.pairs] == ["a.png", "b.png"]
    check_masks(files)  # valid: no error


def test_voc_layout(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    Image.fromarray(numpy.zeros((8, 10, 3), numpy.uint8)).save(voc / "JPEGImages" / "2007_000032.jpg")
    from cnnkit.tasks.segmentation import palette

    mask = Image.fromarray(numpy.array([[0, 15, 255] * 3 + [1]] * 8, numpy.uint8), mode="P")  # palette PNG, as VOC's
    mask.putpalette(palette(256).flatten().tolist())
    mask.save(voc / "SegmentationClass" / "2007_000032.png")
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000032\n")
    files = scan_segmentation(tmp_path, "train")
    assert files.layout == "voc" and len(files.classes) == 21 and files.classes[15] == "person"
    values = read_mask(files.pairs[0][1], 21, image_size=(8, 10))
    assert sorted(values.unique().tolist()) == [0, 1, 15, 255]
    with pytest.raises(DatasetNotFoundError, match="val"):
        scan_segmentation(tmp_path, "val")


def test_mask_of_another_size_is_refused_naming_the_file(scenes):
    write_pair(scenes, "train", "c", numpy.zeros((16, 16, 3), numpy.uint8), numpy.zeros((12, 16), numpy.uint8))
    with pytest.raises(DataError, match=r"masks/c\.png is 16x12 but its image is 16x16"):
        check_masks(scan_segmentation(scenes, "train"))


def test_mask_values_outside_the_classes_are_refused_naming_them(scenes):
    mask = numpy.zeros((16, 16), numpy.uint8)
    mask[0, 0], mask[0, 1], mask[0, 2] = 3, 7, 255  # 3 and 7 are no class of 3; 255 is the ignore index
    write_pair(scenes, "train", "c", numpy.zeros((16, 16, 3), numpy.uint8), mask)
    with pytest.raises(DataError, match=r"masks/c\.png has values 3, 7 outside the 3 classes"):
        check_masks(scan_segmentation(scenes, "train"))


def test_colour_mask_and_missing_mask_are_refused(scenes):
    (scenes / "train" / "masks").joinpath("c.png").unlink(missing_ok=True)
    Image.fromarray(numpy.zeros((16, 16, 3), numpy.uint8)).save(scenes / "train" / "masks" / "c.png")
    Image.fromarray(numpy.zeros((16, 16, 3), numpy.uint8)).save(scenes / "train" / "images" / "c.png")
    with pytest.raises(DataError, match="c.png is a RGB image, not an index mask"):
        check_masks(scan_segmentation(scenes, "train"))
    Image.fromarray(numpy.zeros((16, 16, 3), numpy.uint8)).save(scenes / "train" / "images" / "d.png")
    with pytest.raises(DataError, match=r"d\.png has no mask"):
        scan_segmentation(scenes, "train")


def test_sixteen_bit_images_keep_their_full_range(tmp_path):
    """A 12-bit CT-like slice in a 16-bit PNG: min -> 0, max -> 1, and neighbouring levels stay distinct
    (8-bit conversion would merge 1000 and 1001, and put 4000 at 4000/65535*255 = 15.6 of 255)."""
    values = numpy.array([[1000, 1001, 2500, 4000]] * 2, dtype=numpy.uint16)
    path = tmp_path / "ct.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode in ("I;16", "I")
    image = read_image(path, channels=1)
    assert image.dtype == torch.float32 and image.shape == (1, 2, 4)
    expected = (values[0].astype(numpy.float64) - 1000) / 3000
    assert numpy.allclose(image[0, 0].numpy(), expected, atol=1e-6)
    assert image[0, 0, 1] > image[0, 0, 0]  # 1001 > 1000 survives
    assert read_image(path, channels=3).shape == (3, 2, 4)


def test_joint_transforms_keep_image_and_mask_aligned(scenes):
    """Image brightness encodes the class (left half 1, right half 0). After flips, scale jitter, rotation and
    translation every labelled pixel's image value still says its class; padding is ignore (255)."""
    image = torch.zeros(1, 32, 32)
    image[:, :, :16] = 1.0
    mask = torch.zeros(32, 32, dtype=torch.int64)
    mask[:, :16] = 1
    from torchvision import tv_tensors

    augment = AugmentConfig(hflip=True, vflip=True, scale=0.3, rotate=20, translate=4)
    transform = segmentation_transform((32, 32), [0.0], [1.0], augment)
    flipped = 0
    for seed in range(12):
        torch.manual_seed(seed)
        out_image, out_mask = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        assert out_image.shape == (1, 32, 32) and out_mask.shape == (32, 32)
        labelled = out_mask != 255
        agree = ((out_image[0] > 0.5) == (out_mask == 1))[labelled].float().mean()
        assert agree > 0.93, f"seed {seed}: only {agree:.2f} of the pixels agree"
        assert set(out_mask.unique().tolist()) <= {0, 1, 255}  # nearest neighbour: no blended classes
        flipped += int(out_mask[16, 2] == 0 and out_mask[16, 29] == 1)
    assert 0 < flipped < 12  # the flips do happen, not always


def test_colour_jitter_changes_the_image_only(scenes):
    files = scan_segmentation(scenes, "train")
    plain = SegmentationDataset(files, 3, segmentation_transform((16, 16), [0] * 3, [1] * 3))
    jitter = AugmentConfig(brightness=0.5, contrast=0.5, hflip=False)
    jittered = SegmentationDataset(files, 3, segmentation_transform((16, 16), [0] * 3, [1] * 3, jitter))
    torch.manual_seed(1)
    (image_a, mask_a), (image_b, mask_b) = plain[0], jittered[0]
    assert torch.equal(mask_a, mask_b) and not torch.allclose(image_a, image_b)
    with pytest.raises(ConfigError, match="random_erasing"):
        segmentation_transform((16, 16), [0], [1], AugmentConfig(random_erasing=0.5))


# ------------------------------------------------------------------------------------------------ metrics
def test_meter_against_hand_computed_values():
    # targets / predictions over 8 pixels, one ignored (255); classes 0, 1, 2, 3 (3 never appears).
    targets = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 255]])
    predictions = torch.tensor([[0, 0, 1, 1, 2, 2, 2, 0]])
    meter = SegmentationMeter(["bg", "a", "b", "unused"])
    meter.update(predictions, targets, loss_sum=3.5)
    result = meter.compute(per_class=True)
    # class 0: TP 2, FP 0, FN 1 -> IoU 2/3, Dice 4/5; class 1: TP 1, FP 1, FN 1 -> 1/3, 1/2;
    # class 2: TP 2, FP 1, FN 0 -> 2/3, 4/5; class 3 absent everywhere: no IoU, left out of the means.
    assert result["miou"] == pytest.approx((2 / 3 + 1 / 3 + 2 / 3) / 3)
    assert result["mean_dice"] == pytest.approx((0.8 + 0.5 + 0.8) / 3)
    assert result["pixel_accuracy"] == pytest.approx(5 / 7)
    assert result["loss"] == pytest.approx(3.5 / 7)
    assert result["per_class"]["a"] == {"iou": pytest.approx(1 / 3), "dice": pytest.approx(0.5), "pixels": 2}
    assert result["per_class"]["unused"]["iou"] is None
    assert result["confusion_matrix"][0] == [2, 1, 0, 0]
    # Logits work too, and tensors() is the state to all-reduce.
    meter.update(F.one_hot(predictions, 4).permute(0, 2, 1).float(), targets)
    assert meter.compute()["miou"] == pytest.approx(result["miou"])
    assert int(meter.tensors()[0].sum()) == 14


# ------------------------------------------------------------------------------------------------ losses
def test_cross_entropy_with_weights_and_ignore_matches_torch():
    torch.manual_seed(0)
    logits, targets = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    targets[0, 0, 0] = 255
    weights = torch.tensor([0.5, 1.0, 2.0])
    loss = SegmentationLoss("ce", weights, ignore_index=255)(logits, targets)
    counted = targets != 255
    per_pixel = -F.log_softmax(logits, 1).gather(1, targets.clamp(max=2).unsqueeze(1))[:, 0]
    expected = (per_pixel * weights[targets.clamp(max=2)])[counted].sum() / weights[targets[counted]].sum()
    assert loss == pytest.approx(float(expected), rel=1e-5)


def test_dice_and_tversky_equal_the_one_hot_formula_in_value_and_gradient():
    """soft_counts gathers instead of building a (B, K, H, W) one-hot; both losses (and their gradients) must
    equal the textbook one-hot computation, ignored pixels and class weights included."""
    from cnnkit.losses.segmentation import tversky_loss

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 5, 6, generator=generator)
    targets = torch.randint(0, 7, (3, 5, 6), generator=generator)
    targets[0, :2] = 255
    weights = torch.rand(7, generator=generator) + 0.1

    def reference(x, alpha, beta, smooth, w):
        counted = (targets != 255).unsqueeze(1)
        p = x.softmax(1) * counted
        t = F.one_hot(targets.where(counted[:, 0], 0), 7).permute(0, 3, 1, 2) * counted
        tp = (p * t).sum((0, 2, 3))
        index = (tp + smooth) / (tp + alpha * (p.sum((0, 2, 3)) - tp) + beta * (t.sum((0, 2, 3)) - tp) + smooth)
        return ((1 - index) * w).sum() / w.sum()

    for loss_fn, alpha, beta, smooth in ((lambda x, w: dice_loss(x, targets, class_weights=w), 0.5, 0.5, 0.5),
                                         (lambda x, w: tversky_loss(x, targets, class_weights=w), 0.3, 0.7, 1.0)):
        for w in (None, weights):
            ours = logits.clone().requires_grad_()
            theirs = logits.clone().requires_grad_()
            value = loss_fn(ours, w)
            expected = reference(theirs, alpha, beta, smooth, torch.ones(7) if w is None else w)
            value.backward()
            expected.backward()
            assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
            assert torch.allclose(ours.grad, theirs.grad, atol=1e-7)


def test_dice_loss_hand_values():
    # Certain predictions (huge logits): 2 pixels, classes 0 and 1, both right -> Dice 1 per class -> loss 0.
    targets = torch.tensor([[[0, 1]]])
    certain = torch.tensor([[[[50.0, -50.0]], [[-50.0, 50.0]]]])
    assert dice_loss(certain, targets) == pytest.approx(0.0, abs=1e-6)
    # Uniform probabilities 1/2: per class intersection 1/2, sum(p) + sum(t) = 1 + 1:
    # Dice = (2 * 0.5 + 1) / (2 + 1) = 2/3 -> loss 1/3 for each class.
    assert dice_loss(torch.zeros(1, 2, 1, 2), targets) == pytest.approx(1 / 3)
    # Ignored pixels count nothing: the same with a third, ignored pixel.
    assert dice_loss(torch.zeros(1, 2, 1, 3), torch.tensor([[[0, 1, 255]]])) == pytest.approx(1 / 3)


def test_focal_loss_is_cross_entropy_at_gamma_zero_and_smaller_above():
    torch.manual_seed(1)
    logits, targets = torch.randn(2, 4, 3, 3) * 3, torch.randint(0, 4, (2, 3, 3))
    ce = F.cross_entropy(logits, targets)
    assert focal_loss(logits, targets, gamma=0.0) == pytest.approx(float(ce), rel=1e-5)
    assert focal_loss(logits, targets, gamma=2.0) < ce
    # One pixel by hand: p_t = 0.5 -> (1 - 0.5)^2 * log 2.
    assert focal_loss(torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, dtype=torch.int64)) == pytest.approx(
        0.25 * math.log(2))


def test_loss_specs():
    assert parse_loss_spec("ce+0.5*dice") == [(1.0, "ce"), (0.5, "dice")]
    assert parse_loss_spec("Focal + Dice") == [(1.0, "focal"), (1.0, "dice")]
    for bad in ("ce+lovasz", "ce++dice", "0.5dice"):
        with pytest.raises(ConfigError, match="seg_loss"):
            parse_loss_spec(bad)
    logits, targets = torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 4, 4))
    combined = SegmentationLoss("ce+0.5*dice")(logits, targets)
    assert combined == pytest.approx(float(F.cross_entropy(logits, targets) + 0.5 * dice_loss(logits, targets)), rel=1e-5)


# ------------------------------------------------------------------------------------------------ models
SEGMENT_MODELS = list_models(task="segment")
HEAVY = {"deeplabv3_resnet50", "deeplabv3plus_resnet50", "fcn_resnet50"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in SEGMENT_MODELS])
def test_segmentation_model_trains_a_step(name):
    """Grayscale 32x32 input: logits at the input's size, a finite loss, gradients everywhere."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, in_chans=1, input_size=32)
    images, targets = torch.randn(2, 1, 32, 32), torch.randint(0, 4, (2, 32, 32))
    logits = model(images)
    assert logits.shape == (2, 4, 32, 32)
    loss = SegmentationLoss("ce+dice")(logits, targets)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


def test_unet_encoder_pyramid_and_any_zoo_encoder():
    from cnnkit.models.unet import pyramid_nodes, unet

    resnet = create_model("resnet18", num_classes=1, in_chans=3, input_size=128)
    assert pyramid_nodes(resnet, 3, (128, 128)) == [("relu", 64, 2), ("layer1", 64, 4), ("layer2", 128, 8),
                                                    ("layer3", 256, 16), ("layer4", 512, 32)]
    # 28 px: padded stride-2 layers round up (28 -> 14 -> 7 -> 4): layer4's 4x4 map is still found.
    small = create_model("resnet18", num_classes=1, in_chans=1, input_size=28)
    assert [node for node, _, _ in pyramid_nodes(small, 1, (28, 28))] == ["layer1", "layer2", "layer3", "layer4"]
    model = unet(encoder="mobilenet_v3_small", num_classes=3, in_chans=1, input_size=64)
    assert model.encoder.reductions == [2, 4, 8, 16, 32]
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 3, 64, 64)
    assert "fc.weight" not in create_model("unet_resnet18", num_classes=3, input_size=64).state_dict()
    from cnnkit.errors import ModelError

    with pytest.raises(ModelError, match="alexnet"):
        unet(encoder="alexnet", input_size=128)  # its 11x11 stride-4 stem does not halve step by step


def test_deeplab_aspp_rates_follow_the_feature_map():
    from cnnkit.models.segmentation import default_rates

    assert default_rates(128, 16, small=False) == (1, 3, 4)  # 8x8 features: 6, 12, 18 x 8/33
    assert default_rates(512, 16, small=False) == (6, 12, 17)  # 32x32: close to the paper's
    model = create_model("deeplabv3_resnet18", num_classes=3, input_size=128)
    aspp = model.classifier[0]
    assert [conv[0].dilation[0] for conv in list(aspp.convs)[1:4]] == [3, 6, 9]  # output stride 8: 16x16


def test_mask_rcnn_contract():
    torch.manual_seed(0)
    model = create_model("maskrcnn_resnet18_fpn", num_classes=3, input_size=64, fpn_channels=32, representation_size=64)
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:30, 20:40] = 1
    target = {"boxes": torch.tensor([[20.0, 10, 40, 30]]), "labels": torch.tensor([2]), "masks": masks}
    model.train()
    losses = model(torch.rand(2, 3, 64, 64), [target, target])
    assert "loss_mask" in losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    detections = model(torch.rand(1, 3, 64, 64))
    assert detections[0]["masks"].shape[1:] == (64, 64) and detections[0]["masks"].dim() == 3
    assert (detections[0]["labels"] < 3).all()


def test_instance_task_scores_masks_not_boxes():
    """Mask mAP comes from the masks: a perfect box with a poor mask (IoU 0.3) scores box AP 1, mask AP 0."""
    from cnnkit.tasks.instance import InstanceTask

    truth = torch.zeros(1, 32, 32, dtype=torch.uint8)
    truth[0, 10:20, 10:20] = 1
    target = {"boxes": torch.tensor([[10.0, 10, 20, 20]]), "labels": torch.tensor([1]), "masks": truth}
    task = InstanceTask(None, ["a", "b"])
    for mask_rows, expected in ((slice(10, 20), 1.0), (slice(10, 13), 0.0)):
        predicted = torch.zeros(1, 32, 32)
        predicted[0, mask_rows, 10:20] = 0.9
        model = lambda images: [{"boxes": target["boxes"], "scores": torch.tensor([0.8]),  # noqa: E731
                                 "labels": torch.tensor([1]), "masks": predicted}]
        meter = task.new_meter()
        task.update_meter(meter, task.evaluation_step(model, torch.zeros(1, 3, 32, 32), [target]), [target])
        result = meter.compute()
        assert result["map50"] == pytest.approx(1.0)
        assert result["mask_map50"] == pytest.approx(expected)


def test_pretrained_backbone_weights_load_by_name(tmp_path):
    """A classifier's weights file fits the U-Net encoder (prefix encoder.body.) and the FCN backbone (backbone.),
    RGB kernels summed for a grayscale model; the decoder keeps its fresh initialisation."""
    from safetensors.torch import save_file

    from cnnkit.tasks.segmentation import load_pretrained

    classifier = create_model("resnet18", num_classes=10, in_chans=3, input_size=128)
    file = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(file))
    unet = create_model("unet_resnet18", num_classes=3, in_chans=1, input_size=128)
    message = load_pretrained(unet, str(file), {"name": "unet_resnet18", "args": {}})
    assert "loaded 120 of" in message  # every resnet18 tensor but fc.weight / fc.bias
    expected = classifier.state_dict()["conv1.weight"].sum(dim=1, keepdim=True)
    assert torch.equal(unet.state_dict()["encoder.body.conv1.weight"], expected)
    fcn = create_model("fcn_resnet18", num_classes=3, input_size=128)
    load_pretrained(fcn, str(file), {"name": "fcn_resnet18", "args": {}})
    assert torch.equal(fcn.state_dict()["backbone.layer4.1.conv2.weight"], classifier.state_dict()["layer4.1.conv2.weight"])


def test_fastnet_backbones_keep_fastnet_names_and_strides(tmp_path):
    """deeplabv3_fastnet / fcn_fastnet: 16x16 features on a 128-px image (stride 8), 32x32 at output_stride=4;
    a gray fastnet classifier loads into them tensor for tensor (all but its linear head), kernels spread over RGB."""
    from safetensors.torch import save_file

    from cnnkit.errors import ModelError
    from cnnkit.tasks.segmentation import load_pretrained

    torch.manual_seed(0)
    images = torch.randn(1, 3, 128, 128)
    for name in ("deeplabv3_fastnet", "fcn_fastnet"):
        model = create_model(name, num_classes=11, input_size=128).eval()
        assert model.backbone(images)["out"].shape == (1, 128, 16, 16)
        assert model(images).shape == (1, 11, 128, 128)
    fine = create_model("fcn_fastnet", num_classes=11, input_size=128, output_stride=4).eval()
    assert fine.backbone(images)["out"].shape == (1, 128, 32, 32)
    thin = create_model("deeplabv3_fastnet", num_classes=11, input_size=128, output_stride=4, aspp_channels=64).eval()
    assert thin.classifier[0].project[0].out_channels == 64 and thin(images).shape == (1, 11, 128, 128)
    default = create_model("deeplabv3_resnet18", num_classes=3, input_size=128).state_dict()
    assert default["classifier.1.weight"].shape == (256, 256, 3, 3)  # torchvision's DeepLabHead names and widths
    with pytest.raises(ModelError, match="output_stride"):
        create_model("deeplabv3_fastnet", num_classes=11, output_stride=16)
    classifier = create_model("fastnet", num_classes=10, in_chans=1, input_size=40)
    file = tmp_path / "fastnet.safetensors"
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(file))
    model = create_model("deeplabv3_fastnet", num_classes=11, input_size=128)
    message = load_pretrained(model, str(file), {"name": "deeplabv3_fastnet", "args": {}})
    assert f"loaded {len(classifier.state_dict()) - 2} of" in message  # all but head.weight / head.bias
    weights = classifier.state_dict()
    assert torch.equal(model.state_dict()["backbone.stages.2.conv2.weight"], weights["stages.2.conv2.weight"])
    assert model.state_dict()["backbone.stem.0.weight"].shape[1] == 3
