"""Detection data: any layout cnnkit.data.detection recognises (COCO JSON, Pascal VOC XML, YOLO txt, or the
scenes benchmark's split folders), every split validated first (boxes clipped to the image, empty boxes
dropped, each change reported with its file). Splits come from the layout: train, then val (or, without one,
`val_fraction` of train, seeded) and test. Training images get box-aware augmentation (`detect_augment`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from cnnkit.errors import DataError

STATISTICS_IMAGES = 256  # training images the normalisation mean and std are measured on


@dataclass
class DetectionData:
    """The validated splits of a detection dataset (val/test None when the layout has none)."""

    train: Any  # cnnkit.data.detection.AnnotationSet
    val: Any
    test: Any
    classes: list[str]


def _subset(annotations, indices):
    from cnnkit.data.detection import AnnotationSet

    return AnnotationSet(annotations.classes, [annotations.images[i] for i in indices], annotations.source,
                         annotations.format)


def read_detection_data(config, verbose: bool = True,
                        splits: tuple[str, ...] = ("train", "val", "test")) -> DetectionData:
    """Read and validate the splits of `config.data`; split val off train (seeded) when the layout has no val.

    Raises:
        DataError: For unreadable data, a dataset without a train split, or splits with different classes.
    """
    from cnnkit.data.detection import detect_layout, validate_annotations
    from cnnkit.data.splits import train_val_split

    layout = detect_layout(config.data)
    if "train" not in layout.splits:
        raise DataError(f"{config.data} has no train split (it has {', '.join(layout.splits) or 'none'}); "
                        "detection training needs one (e.g. train/images + annotations)")
    result = {}
    for split in ("train", "val", "test"):
        if split not in layout.splits or (split not in splits and split != "train"):
            result[split] = None
            continue
        annotations, report = validate_annotations(layout.read(split), name=f"{split} ({layout.format})")
        if verbose:
            print(report.summary(), flush=True)
        result[split] = annotations
    train = result["train"]
    for split in ("val", "test"):
        if result[split] is not None and result[split].classes != train.classes:
            raise DataError(f"{config.data}: the {split} split's classes ({', '.join(result[split].classes)}) differ "
                            f"from train's ({', '.join(train.classes)})")
    if result["val"] is None and "val" in splits and config.val_fraction > 0:
        train_indices, val_indices = train_val_split(len(train), config.val_fraction, config.seed, min_val=1,
                                                     val_order="drawn")
        result["val"], train = _subset(train, val_indices.tolist()), _subset(train, train_indices.tolist())
    if len(train) == 0:
        raise DataError(f"{config.data}: the train split has no images")
    return DetectionData(train, result["val"], result["test"], list(train.classes))


def image_statistics(annotations, count: int = STATISTICS_IMAGES) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units over up to `count` evenly spread training images (RGB)."""
    from cnnkit.data.images import decode_image
    from cnnkit.data.statistics import images_mean_std, spread_indices

    chosen = spread_indices(len(annotations.images), count)
    images = (decode_image(annotations.images[index].file, channels=3).double().div_(255) for index in chosen)
    return images_mean_std(images, 3, variance_floor=1e-8, decimals=4)


def common_size(annotations) -> tuple[int, int]:
    """The most common (height, width) of the split's images: the size the detectors are built for."""
    return Counter((image.height, image.width) for image in annotations.images).most_common(1)[0][0]


def make_detection_loader(annotations, config, train: bool, dist_info=None, input_size=None, masks: bool = False,
                          eval_batch_size: int = 32):
    """A loader of (uint8 images, targets) batches with len() and set_epoch(), as the Trainer expects.

    Training batches are augmented (config.detect_augment), shuffled per (seed, epoch) and sharded under DDP.
    With `masks` (instance segmentation) the targets carry "masks" (N, H, W) too. Evaluation batches hold at
    least `eval_batch_size` images.
    """
    from cnnkit.data.detection.dataset import DetectionDataset, collate_detection
    from cnnkit.data.detection.transforms import detection_transforms
    from cnnkit.data.sharded_loader import ShardedLoader

    transforms = detection_transforms(config.detect_augment, size=input_size) if train else None
    dataset = DetectionDataset(annotations, transforms=transforms, masks=masks)
    workers = config.num_workers if config.num_workers >= 0 else 0  # in-memory scenes: augmenting in-process is fastest
    rank, world = (dist_info.rank, dist_info.world_size) if dist_info is not None and dist_info.enabled else (0, 1)
    batch_size = max(1, config.batch_size // world) if train else max(config.batch_size, eval_batch_size)
    return ShardedLoader(dataset, batch_size, train=train, seed=config.seed, num_workers=workers, rank=rank,
                              world_size=world, collate_fn=collate_detection)
