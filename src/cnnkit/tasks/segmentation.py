"""Semantic segmentation: a class for every pixel. `cnnkit train --task segment`, evaluate, predict.

The model maps a normalized image batch (B, C, H, W) to logits (B, K, H, W); the loss compares them
with the index masks (B, H, W) pixel by pixel (cnnkit.losses.segmentation: cross-entropy, Dice, focal
or a sum, `seg_loss=`), skipping pixels whose mask value is `ignore_index`. Validation accumulates a
pixel confusion matrix (cnnkit.metrics.segmentation) from which mIoU, per-class IoU, pixel accuracy and
Dice follow; the best checkpoint is the one with the highest validation mIoU.

Data (cnnkit.data.segmentation): a scenes-style folder ({train,val,test}/images + masks, classes.txt)
or a Pascal VOC folder. Without a val split, `val_fraction` of the training images is held out (seeded).
Images are resized to `image_size` (default: the first training image's size); validation during training
is done at that size too (masks resized with nearest neighbour). `evaluate` and `predict` upsample the
logits back to each image's own size, so test metrics are measured on the masks as they are and predicted
masks match the input files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.data.preprocess import Preprocessing
from cnnkit.data.segmentation import (SegmentationDataset, SegmentationFiles, SegmentationLoader, check_masks,
                                      class_pixel_counts, has_split, image_channels, mean_std, read_image,
                                      scan_segmentation, segmentation_transform)
from cnnkit.errors import CheckpointError, ConfigError
from cnnkit.losses.segmentation import SegmentationLoss
from cnnkit.metrics.segmentation import SegmentationMeter
from cnnkit.tasks.base import Task, TaskSetup

VALUE_RANGE = "8-bit: value / 255; single-channel 16-bit: (value - min) / (max - min) per image"


class SegmentationTask(Task):
    """Per-pixel classification with a configurable loss; validation mIoU picks the best checkpoint.

    Args:
        model: Images (B, C, H, W) -> logits (B, K, H, W).
        class_names: The K class names (index 0 is usually "background").
        loss: The training loss (SegmentationLoss); validation always reports plain cross-entropy.
        ignore_index: Mask value of pixels that count for nothing.
        tta: Average the logits of each image and its mirror image in evaluation.
    """

    name = "segment"
    monitor = "val_miou"

    def __init__(self, model: nn.Module, class_names: list[str], loss: SegmentationLoss | None = None,
                 ignore_index: int = 255, tta: bool = False):
        self.model, self.class_names = model, list(class_names)
        self.loss = loss or SegmentationLoss("ce", ignore_index=ignore_index)
        self.ignore_index, self.tta = ignore_index, tta

    def training_step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict:
        logits = model(images)  # (B, K, H, W)
        return {"loss": self.loss(logits, targets), "batch_size": len(images)}

    @torch.no_grad()
    def evaluation_step(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict:
        """Predicted classes (B, H, W) and the summed cross-entropy over the counted pixels."""
        logits = predict_logits(model, images, self.tta)
        loss_sum = F.cross_entropy(logits, targets, ignore_index=self.ignore_index, reduction="sum")
        return {"loss": loss_sum, "predictions": logits.argmax(dim=1)}

    def new_meter(self) -> SegmentationMeter:
        return SegmentationMeter(self.class_names, self.ignore_index)

    def update_meter(self, meter: SegmentationMeter, result: dict, targets: torch.Tensor) -> None:
        meter.update(result["predictions"], targets, result["loss"])


def predict_logits(model: nn.Module, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """float32 logits (B, K, H, W); with tta, the mean of the image's and its mirror image's."""
    logits = model(images).float()
    if tta:
        logits = (logits + model(images.flip(-1)).float().flip(-1)) / 2
    return logits


# ----------------------------------------------------------------------------------------------- data
@dataclass
class SegmentationData:
    """The splits of a segmentation dataset and the preprocessing derived from its training split."""

    train: SegmentationFiles
    val: SegmentationFiles | None
    test: SegmentationFiles | None
    classes: list[str]
    preprocessing: Preprocessing


def prepare_data(config, preprocessing: Preprocessing | None = None, check: bool = True) -> SegmentationData:
    """Scan the splits, hold out validation images if the data has no val split, check masks, derive
    the channels, size and normalization (unless `preprocessing`, from a checkpoint, is given)."""
    train = scan_segmentation(config.data, "train")
    if has_split(config.data, "val"):
        val = scan_segmentation(config.data, "val", train.classes)
    elif config.val_fraction > 0:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed)).tolist()
        held_out = max(1, round(len(train) * config.val_fraction))
        train, val = train.subset(sorted(order[held_out:])), train.subset(sorted(order[:held_out]))
    else:
        val = None
    test = scan_segmentation(config.data, "test", train.classes) if has_split(config.data, "test") else None
    ignore_index = config.ignore_index
    if ignore_index < len(train.classes):
        raise ConfigError(f"ignore_index={ignore_index} is one of the {len(train.classes)} class indices; "
                          "choose a value no class uses (255 by default)")
    if check:
        for files in (train, val):
            if files is not None:
                check_masks(files, ignore_index)
    if preprocessing is None:
        channels = config.channels or image_channels(train.pairs[0][0])
        size = (config.image_size,) * 2 if config.image_size else tuple(read_image(train.pairs[0][0], 1).shape[-2:])
        mean, std = mean_std(train, channels, seed=config.seed)
        preprocessing = Preprocessing(channels, size, tuple(mean), tuple(std))
    return SegmentationData(train, val, test, train.classes, preprocessing)


def make_loader(files: SegmentationFiles, preprocessing: Preprocessing, config, train: bool,
                dist_info=None) -> SegmentationLoader:
    """A loader of normalized (images, masks) batches; training batches augmented as the config asks."""
    rank, world_size = (dist_info.rank, dist_info.world_size) if dist_info is not None else (0, 1)
    transform = segmentation_transform(tuple(preprocessing.image_size), preprocessing.mean, preprocessing.std,
                                       config.augment_config() if train else None, config.ignore_index)
    dataset = SegmentationDataset(files, preprocessing.channels, transform, config.ignore_index)
    workers = config.num_workers if config.num_workers >= 0 else min(4, max(0, (os.cpu_count() or 1) - 1))
    batch_size = max(1, config.batch_size // world_size) if train else config.batch_size
    return SegmentationLoader(dataset, batch_size, train, config.seed, workers, rank, world_size)


def pixel_class_weights(files: SegmentationFiles, mode: str, beta: float, ignore_index: int) -> torch.Tensor | None:
    """Loss weights per class from the training split's pixel counts (class_weights=inverse|effective),
    normalised to mean 1 over the classes present: the classification recipe, counting pixels."""
    if mode == "none":
        return None
    counts = class_pixel_counts(files, ignore_index).double()
    present = counts > 0
    raw = 1 / counts[present] if mode == "inverse" else (1 - beta) / (1 - beta ** counts[present])
    weights = torch.zeros(len(counts), dtype=torch.float64)
    weights[present] = raw / raw.mean()
    return weights.float()


# ----------------------------------------------------------------------------------------------- setup
def setup(config, device, dist_info, resume) -> TaskSetup:
    """`cnnkit train --task segment`: model, data, loss and the checkpoint record."""
    from cnnkit.api import resolve_architecture, versions
    from cnnkit.engine import checkpoint as ckpt
    from cnnkit.registry import create_model, get_entry

    data = prepare_data(config)
    torch.manual_seed(config.seed)
    if resume:
        architecture = ckpt.read_record(Path(resume) / "last.safetensors")["architecture"]
    else:
        if get_entry(config.model).task != "segment":
            raise ConfigError(f"model={config.model!r} is not a segmentation model; choose one of "
                              "`cnnkit models --family unet|fcn|deeplab` (e.g. unet_resnet18)")
        architecture = resolve_architecture(config, len(data.classes), data.preprocessing)
    model = create_model(architecture["name"], **architecture["args"])
    if config.pretrained and not resume:
        message = load_pretrained(model, config.pretrained, architecture)
        if dist_info.is_main:
            print(message, flush=True)
    weights = pixel_class_weights(data.train, config.class_weights, config.class_weights_beta, config.ignore_index)
    loss = SegmentationLoss(config.seg_loss or config.loss, weights, config.ignore_index, config.focal_gamma)
    task = SegmentationTask(model, data.classes, loss, config.ignore_index, config.tta)
    record = {"task": task.name, "architecture": architecture, "classes": data.classes,
              "preprocessing": {**data.preprocessing.to_dict(), "value_range": VALUE_RANGE,
                                "ignore_index": config.ignore_index},
              "config": config.to_dict(), "versions": versions()}
    train_loader = make_loader(data.train, data.preprocessing, config, train=True, dist_info=dist_info)
    val_loader = None
    if data.val is not None:
        val_files = data.val
        if dist_info.enabled:
            val_files = val_files.subset(range(dist_info.rank, len(val_files), dist_info.world_size))
        val_loader = make_loader(val_files, data.preprocessing, config, train=False)
    parameters = sum(p.numel() for p in model.parameters()) / 1e6
    size = "x".join(map(str, data.preprocessing.image_size))
    header = (f"cnnkit train --task segment: {config.model} ({parameters:.2f}M parameters) on {config.data}: "
              f"{len(data.train)} train / {len(data.val) if data.val else 0} val images, {len(data.classes)} classes, "
              f"{size}x{data.preprocessing.channels}, loss {loss.spec}; {device}, {config.epochs} epochs")
    return TaskSetup(task, train_loader, val_loader, record, header, [print_segmentation_metrics])


def print_segmentation_metrics(trainer, metrics: dict) -> None:
    """After each epoch: mIoU and pixel accuracy (the Trainer's epoch line shows losses only)."""
    from tqdm import tqdm

    if trainer.dist.is_main and "val_miou" in metrics:
        tqdm.write(f"  val mIoU {metrics['val_miou']:.4f}  pixel accuracy {metrics['val_pixel_accuracy']:.4f}  "
                   f"mean Dice {metrics['val_mean_dice']:.4f}")


def load_pretrained(model: nn.Module, spec: str, architecture: dict) -> str:
    """Load the tensors of `spec` that fit `model` by name and shape; say how many.

    `spec` as for classification (a file, a run directory, a torchvision weight name such as
    FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1, timm:NAME). "imagenet" loads the ImageNet classifier
    of the model's backbone or encoder (resnet18 for unet_resnet18 ...) into it. Names are matched with or
    without the backbone's prefix (backbone., encoder.body.); RGB first-layer kernels are summed for
    grayscale models.
    """
    from cnnkit.engine.transfer import load_pretrained_state

    source = architecture["name"]
    if spec in ("imagenet", "default"):
        source = backbone_name(architecture)
    state, _ = load_pretrained_state(spec, source)
    own = model.state_dict()
    best: dict[str, torch.Tensor] = {}
    for strip in ("", "module.", "model.", "features."):
        for add in ("", "backbone.", "encoder.body.", "model.backbone.body."):
            renamed = {add + k[len(strip):]: v for k, v in state.items() if k.startswith(strip)}
            fitted = {}
            for name, tensor in renamed.items():
                target = own.get(name)
                if target is None:
                    continue
                if tensor.shape != target.shape and tensor.dim() == 4 and tensor.shape[1] == 3 and target.shape[1] == 1 \
                        and tensor.shape[0] == target.shape[0] and tensor.shape[2:] == target.shape[2:]:
                    tensor = tensor.sum(dim=1, keepdim=True)  # RGB kernels -> one gray channel
                if tensor.shape == target.shape:
                    fitted[name] = tensor
            if len(fitted) > len(best):
                best = fitted
    if not best:
        raise CheckpointError(f"--pretrained {spec}: none of its tensors fit {architecture['name']} (by name and shape)")
    model.load_state_dict(best, strict=False)
    return f"pretrained {spec}: loaded {len(best)} of {len(own)} tensors (the rest keep their fresh initialisation)"


def backbone_name(architecture: dict) -> str:
    """The zoo classifier whose ImageNet weights fit the model's backbone/encoder."""
    name, args = architecture["name"], architecture["args"]
    if name.startswith("unet"):
        encoder = args.get("encoder") or {"unet_resnet18": "resnet18", "unet_resnet34": "resnet34",
                                          "unet_efficientnet_b0": "efficientnet_b0"}.get(name, "plain")
        if encoder == "plain" or encoder.startswith("timm:"):
            raise ConfigError(f"--pretrained imagenet: encoder={encoder!r} has no zoo weights; use a zoo encoder "
                              "(unet_resnet18, encoder=resnet34 ...) or pass --pretrained timm:NAME for timm encoders")
        return encoder
    for backbone in ("resnet18", "resnet34", "resnet50", "resnet101", "mobilenet_v3_large"):
        if name.endswith(backbone) or f"_{backbone}_" in name:
            return backbone
    raise ConfigError(f"no ImageNet backbone known for {name}; pass a weights file or run directory instead")


# ----------------------------------------------------------------------------------------------- inference
def palette(num_classes: int) -> numpy.ndarray:
    """(K, 3) uint8 colours: Pascal VOC's palette (class 0 black, then well-separated colours).

    Class c's colour takes its bits three at a time: bit 0 -> red, bit 1 -> green, bit 2 -> blue, each
    placed from the colour's top bit downwards, which is how the VOC masks are coloured.
    """
    colours = numpy.zeros((max(num_classes, 1), 3), dtype=numpy.uint8)
    for index in range(num_classes):
        value, shift = index, 7
        while value:
            for channel in range(3):
                colours[index, channel] |= ((value >> channel) & 1) << shift
            value, shift = value >> 3, shift - 1
    return colours


class Segmenter:
    """A trained segmentation run loaded for inference and evaluation: `cnnkit.load(run_dir)`.

    Attributes:
        model: The network in eval mode.
        classes: Class names, in mask-index order.
        preprocessing: Channels, size, mean and std from the checkpoint.
        record: The checkpoint's JSON record.
    """

    def __init__(self, model: nn.Module, record: dict[str, Any], run_dir: Path | None, device: torch.device):
        self.model, self.record, self.run_dir, self.device = model, record, run_dir, device
        self.classes: list[str] = list(record["classes"])
        self.preprocessing = Preprocessing.from_dict(record["preprocessing"])
        self.ignore_index = int(record["preprocessing"].get("ignore_index", 255))
        self.tta = bool(record.get("config", {}).get("tta", False))

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        """float [0, 1] (C, H, W) or (B, C, H, W) -> normalized (B, C, h, w) at the model's size."""
        size = tuple(self.preprocessing.image_size)
        x = images if images.dim() == 4 else images.unsqueeze(0)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(self.preprocessing.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.preprocessing.std).view(1, -1, 1, 1)
        return ((x - mean) / std).to(self.device)

    @torch.no_grad()
    def predict_proba(self, images) -> list[torch.Tensor]:
        """Class probabilities (K, H, W) per image, at each image's own size.

        Args:
            images: File paths, PIL images, or float (C, H, W) tensors in [0, 1].
        """
        results = []
        for source in images if isinstance(images, (list, tuple)) else [images]:
            image = source if isinstance(source, torch.Tensor) else read_image(source, self.preprocessing.channels)
            logits = predict_logits(self.model, self._inputs(image), self.tta)  # (1, K, h, w)
            logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
            results.append(logits[0].softmax(dim=0).cpu())
        return results

    def predict(self, images) -> list[torch.Tensor]:
        """Class index masks (H, W) int64, one per image, at each image's own size."""
        return [probabilities.argmax(dim=0) for probabilities in self.predict_proba(images)]

    def evaluate(self, split: str = "test") -> dict[str, Any]:
        """mIoU, pixel accuracy, mean Dice, loss, per-class IoU/Dice and the confusion matrix on a split.

        Unlike validation during training (at the model's input size), every mask is scored at its own
        resolution: the logits are upsampled to it, as `predict` does.
        """
        from cnnkit.config import TrainConfig, apply_overrides
        from cnnkit.engine.trainer import resolve_precision

        if split not in ("test", "val"):
            raise ConfigError(f"split must be 'test' or 'val', got {split!r}")
        config = TrainConfig(**apply_overrides({}, self.record["config"], "checkpoint config"))
        data = prepare_data(config, self.preprocessing, check=False)
        files = data.test if split == "test" else data.val
        if files is None:
            raise ConfigError(f"the dataset {config.data} has no {split} split; evaluate with --split val")
        check_masks(files, self.ignore_index)
        # The files as they are (no resizing): each mask is scored at its own resolution.
        dataset = SegmentationDataset(files, self.preprocessing.channels, None, self.ignore_index)
        loader = SegmentationLoader(dataset, config.batch_size, train=False, collate_fn=_same_size_batches)
        meter = SegmentationMeter(self.classes, self.ignore_index)
        dtype = resolve_precision(config.precision, self.device)
        with torch.no_grad(), torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            for images, masks in (group for batch in loader for group in batch):
                logits = predict_logits(self.model, self._inputs(images), self.tta)  # (B, K, h, w)
                logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
                masks = masks.to(self.device)
                loss_sum = F.cross_entropy(logits, masks, ignore_index=self.ignore_index, reduction="sum")
                meter.update(logits.argmax(dim=1), masks, loss_sum)
        return {"split": split, "images": len(files), "resolution": "each mask's own", **meter.compute(per_class=True)}


def _same_size_batches(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Collate: one stacked (images, masks) pair per image size in the batch (VOC images differ in size)."""
    groups: dict[tuple, list] = {}
    for image, mask in samples:
        groups.setdefault(tuple(image.shape), []).append((image, mask))
    return [(torch.stack([i for i, _ in group]), torch.stack([m for _, m in group])) for group in groups.values()]


def load_run(run_dir: Path, file: Path, record: dict, tensors: dict, device: torch.device) -> Segmenter:
    """`cnnkit.load` for task=segment runs: rebuild the model from the record and load its weights."""
    from cnnkit.tasks.base import rebuild_model

    return Segmenter(rebuild_model(file, record, tensors, device), record, run_dir, device)


# ----------------------------------------------------------------------------------------------- predict output
def overlay(image: torch.Tensor, mask: torch.Tensor, colours: numpy.ndarray, alpha: float = 0.5) -> torch.Tensor:
    """uint8 (3, H, W): the image with every non-background class tinted in its palette colour."""
    from torchvision.utils import draw_segmentation_masks

    present = [int(c) for c in mask.unique() if int(c) != 0]
    if not present:
        return image
    masks = torch.stack([mask == c for c in present])  # (N, H, W) bool, one per class present
    return draw_segmentation_masks(image, masks, alpha=alpha, colors=[tuple(int(v) for v in colours[c]) for c in present])


def write_predictions(segmenter: Segmenter, images: list[str], out: Path) -> list[dict]:
    """For each image: OUT/NAME-mask.png (class indices, a palette PNG like Pascal VOC's: its pixel values
    are the classes, its colours the palette) and OUT/NAME-overlay.png (the image with the classes tinted).

    Returns one {"image", "mask", "overlay", "classes": {name: fraction of pixels}} entry per image.
    """
    from PIL import Image

    from cnnkit.tasks.instance import unique_stems

    out.mkdir(parents=True, exist_ok=True)
    colours = palette(len(segmenter.classes))
    results = []
    for path, name in zip(images, unique_stems(images)):
        image = read_image(path, 3)  # the picture for the overlay (RGB)
        mask = segmenter.predict([path])[0]  # (H, W) int64
        if mask.max() > 255:
            raise ConfigError(f"{len(segmenter.classes)} classes do not fit an 8-bit mask PNG")
        picture = Image.fromarray(mask.numpy().astype(numpy.uint8), mode="P")
        picture.putpalette(colours.flatten().tolist())
        files = {"mask": out / f"{name}-mask.png", "overlay": out / f"{name}-overlay.png"}
        picture.save(files["mask"])
        tinted = overlay((image * 255).round().to(torch.uint8), mask, colours)
        Image.fromarray(tinted.permute(1, 2, 0).numpy()).save(files["overlay"])
        counts = torch.bincount(mask.flatten(), minlength=len(segmenter.classes))
        fractions = {segmenter.classes[c]: round(float(n) / mask.numel(), 4) for c, n in enumerate(counts.tolist()) if n}
        results.append({"image": str(path), **{k: str(v) for k, v in files.items()}, "classes": fractions})
    return results
