"""Object detection: `cnnkit train --task detect`, and trained detectors loaded for predict and evaluate.

    cnnkit train --task detect --model yolo_fastnet --data SCENES_DIR epochs=30
    cnnkit evaluate RUN_DIR                     # COCO mAP@[.5:.95], mAP@.5, per-class AP on the test split
    cnnkit predict RUN_DIR scene.png --out out/ # JSON + the image with its boxes drawn

The data is any layout cnnkit.data.detection recognises (COCO JSON, Pascal VOC XML, YOLO txt, or the
scenes benchmark's split folders); every split is validated first (boxes clipped to the image, empty boxes
dropped, each change reported with its file). Splits come from the layout: train, then val (or, without one,
`val_fraction` of train, seeded) and test. Training images get box-aware augmentation (`detect_augment`).

A batch is a float (B, C, H, W) tensor in [0, 1] (a list of images when their sizes differ) and one
{"boxes", "labels"} dict per image; the detectors (cnnkit.models.detection) normalise images themselves with
the mean and std measured on the training images, which the checkpoint's architecture record stores.
Validation after every epoch reports COCO mAP through the data side's DetectionMeter (pycocotools); the
best checkpoint is the one with the highest val_map50.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm import tqdm

from cnnkit.errors import ConfigError, DataError
from cnnkit.tasks.base import Task, TaskSetup

STATISTICS_IMAGES = 256  # training images the normalisation mean and std are measured on


class DetectionTask(Task):
    """A detector (cnnkit.models.detection contract) with its own losses; COCO mAP as the metric."""

    name = "detect"
    monitor = "val_map50"

    def __init__(self, model: nn.Module, class_names: list[str]):
        self.model = model
        self.class_names = list(class_names)

    def to_device(self, images, targets, device: torch.device):
        """uint8 images -> one float (B, C, H, W) batch in [0, 1] (a list if sizes differ); targets' tensors moved."""
        images = [image.to(device, non_blocking=True) for image in images]
        if len({tuple(image.shape) for image in images}) == 1:
            images = torch.stack(images).float().div_(255)
        else:
            images = [image.float().div_(255) for image in images]
        targets = [{key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
                    for key, value in target.items()} for target in targets]
        return images, targets

    def training_step(self, model: nn.Module, images, targets) -> dict:
        losses = model(images, targets)  # {"name": weighted scalar}: the model's own loss terms
        return {"loss": sum(losses.values()), "batch_size": len(targets),
                "losses": {name: value.detach() for name, value in losses.items()}}

    @torch.no_grad()
    def evaluation_step(self, model: nn.Module, images, targets) -> dict:
        detections = model(images)
        return {"detections": [{key: value.detach().float().cpu() if key != "labels" else value.cpu()
                                for key, value in detection.items()} for detection in detections]}

    def new_meter(self):
        from cnnkit.metrics.detection import DetectionMeter

        return DetectionMeter(self.class_names)

    def update_meter(self, meter, result: dict, targets) -> None:
        meter.update(result["detections"], [{"boxes": t["boxes"].cpu(), "labels": t["labels"].cpu()} for t in targets])


# ------------------------------------------------------------------------------------------ data
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
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed)).tolist()
        count = max(1, round(config.val_fraction * len(train)))
        result["val"], train = _subset(train, order[:count]), _subset(train, sorted(order[count:]))
    if len(train) == 0:
        raise DataError(f"{config.data}: the train split has no images")
    return DetectionData(train, result["val"], result["test"], list(train.classes))


def image_statistics(annotations, count: int = STATISTICS_IMAGES) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units over up to `count` evenly spread training images (RGB)."""
    from cnnkit.data.images import decode_image

    step = max(1, len(annotations.images) // count)
    total, squares, pixels = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64), 0
    for image in annotations.images[::step][:count]:
        values = decode_image(image.file, channels=3).double().div_(255).flatten(1)  # (3, H*W)
        total += values.sum(dim=1)
        squares += (values ** 2).sum(dim=1)
        pixels += values.shape[1]
    mean = total / pixels
    std = (squares / pixels - mean ** 2).clamp(min=1e-8).sqrt()
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def common_size(annotations) -> tuple[int, int]:
    """The most common (height, width) of the split's images: the size the detectors are built for."""
    return Counter((image.height, image.width) for image in annotations.images).most_common(1)[0][0]


def make_detection_loader(annotations, config, train: bool, dist_info=None, input_size=None):
    """A loader of (uint8 images, targets) batches with len() and set_epoch(), as the Trainer expects.

    Training batches are augmented (config.detect_augment), shuffled per (seed, epoch) and sharded under DDP.
    """
    from cnnkit.data.detection.dataset import DetectionDataset, collate_detection
    from cnnkit.data.detection.transforms import detection_transforms
    from cnnkit.data.segmentation import SegmentationLoader

    transforms = detection_transforms(config.detect_augment, size=input_size) if train else None
    dataset = DetectionDataset(annotations, transforms=transforms)
    workers = config.num_workers if config.num_workers >= 0 else 0  # in-memory scenes: augmenting in-process is fastest
    rank, world = (dist_info.rank, dist_info.world_size) if dist_info is not None and dist_info.enabled else (0, 1)
    batch_size = max(1, config.batch_size // world) if train else max(config.batch_size, 32)
    return SegmentationLoader(dataset, batch_size, train=train, seed=config.seed, num_workers=workers, rank=rank,
                              world_size=world, collate_fn=collate_detection)


# ------------------------------------------------------------------------------------------ setup
def resolve_detection_architecture(config, classes: list[str], input_size: tuple[int, int],
                                   statistics: tuple[list[float], list[float]]) -> dict[str, Any]:
    """The checkpoint's architecture record: the detector's name and every argument needed to rebuild it."""
    mean, std = statistics
    args = {"num_classes": len(classes), "in_chans": 3, "input_size": list(input_size), "image_mean": mean,
            "image_std": std, **config.model_args}
    return {"name": config.model, "args": args}


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the system.

    By default glibc serves every allocation above a threshold (128 KiB .. 32 MiB) with its own mmap and
    unmaps it on free, so each training step maps, zero-fills (page faults) and unmaps its large activation
    and gradient buffers again. Measured on this project's 2-core CPU (yolo_fastnet, batch 32, bf16): 25% of
    the step's CPU time was system time; with mmap off and trimming above 1 GiB, 64 -> 92 images per
    CPU-second. Affects the whole process; a no-op (False) where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


def setup(config, device: torch.device, dist_info, resume) -> TaskSetup:
    """`cnnkit train --task detect`: data (validated, augmented), the detector, the record."""
    from cnnkit.api import versions
    from cnnkit.engine import checkpoint as ckpt
    from cnnkit.engine.trainer import resolve_precision
    from cnnkit.registry import create_model

    from cnnkit.registry import get_entry, list_models

    if not resume and get_entry(config.model).task != "detect":  # before the data is read
        raise ConfigError(f"model {config.model!r} is a {get_entry(config.model).task} model; --task detect needs "
                          f"a detector: {', '.join(list_models(task='detect'))}")
    if config.pretrained:
        raise ConfigError("pretrained weights are not supported for detection yet; train from scratch "
                          "(leave pretrained unset)")
    keep_freed_memory()
    data = read_detection_data(config, verbose=dist_info.is_main)
    input_size = common_size(data.train)
    if resume:
        architecture = ckpt.read_record(Path(resume) / "last.safetensors")["architecture"]
    else:
        architecture = resolve_detection_architecture(config, data.classes, input_size, image_statistics(data.train))
    torch.manual_seed(config.seed)  # the same initial weights for the same seed
    model = create_model(architecture["name"], **architecture["args"])
    task = DetectionTask(model, data.classes)
    args = architecture["args"]
    record = {"task": task.name, "architecture": architecture, "classes": data.classes,
              "preprocessing": {"channels": 3, "image_size": list(input_size), "mean": args["image_mean"],
                                "std": args["image_std"], "value_range": "uint8 / 255",
                                "resize": "none: the detector takes images of any size (see its module)"},
              "config": config.to_dict(), "versions": versions()}
    train_loader = make_detection_loader(data.train, config, train=True, dist_info=dist_info, input_size=input_size)
    val_loader = make_detection_loader(data.val, config, train=False, dist_info=dist_info) if data.val else None
    parameters = sum(p.numel() for p in model.parameters())
    dtype = resolve_precision(config.precision, device)
    precision = str(dtype).replace("torch.", "") if dtype else "fp32"
    header = (f"cnnkit train --task detect: {config.model} ({parameters / 1e6:.2f}M parameters) on {config.data}: "
              f"{len(data.train)} train / {len(data.val) if data.val else 0} val images, {len(data.classes)} classes, "
              f"{input_size[0]}x{input_size[1]}; {device}, {precision}, {config.epochs} epochs")
    return TaskSetup(task, train_loader, val_loader, record, header, [print_detection_metrics])


def print_detection_metrics(trainer, metrics: dict) -> None:
    """After each epoch: the mAP values (the Trainer's epoch line shows losses only)."""
    if trainer.dist.is_main and "val_map50" in metrics:
        tqdm.write(f"  val mAP@.5 {metrics['val_map50']:.4f}  mAP@[.5:.95] {metrics['val_map']:.4f}")


# ------------------------------------------------------------------------------------------ trained runs
class Detector:
    """A trained detection run: `cnnkit.load(run_dir)` for a run whose record["task"] is "detect".

    Attributes:
        model: The detector in eval mode.
        classes: Class names; a detection's "label" indexes them.
        record: The checkpoint's JSON record.
    """

    def __init__(self, model: nn.Module, record: dict[str, Any], run_dir: Path | None, device: torch.device):
        self.model, self.record, self.run_dir, self.device = model, record, run_dir, device
        self.classes: list[str] = list(record["classes"])

    def load_images(self, images) -> list[torch.Tensor]:
        from cnnkit.data.images import decode_image

        sources = images if isinstance(images, (list, tuple)) else [images]
        if not sources:
            raise DataError("no images given to predict")
        result = []
        for source in sources:
            if isinstance(source, torch.Tensor) and source.dtype == torch.uint8 and source.dim() == 3:
                result.append(source)
            else:
                if isinstance(source, (str, Path)) and not Path(source).is_file():
                    raise DataError(f"image {source} not found")
                result.append(decode_image(source, channels=3))
        return result

    @torch.no_grad()
    def detect(self, images, score_threshold: float = 0.0) -> list[dict[str, torch.Tensor]]:
        """Raw detections per image: {"boxes" (N, 4) xyxy pixels, "scores", "labels"}, best first."""
        results = []
        for image in self.load_images(images):
            detection = self.model([image.to(self.device).float().div_(255)])[0]
            keep = detection["scores"] >= score_threshold
            results.append({key: value[keep].cpu() for key, value in detection.items()})
        return results

    def predict(self, images, score_threshold: float = 0.25) -> list[list[dict[str, Any]]]:
        """Per image, its detections as JSON-ready dicts {"class", "label", "score", "box": [x1, y1, x2, y2]}.

        Args:
            images: Image files, PIL images or uint8 (3, H, W) tensors (any size).
            score_threshold: Leave out detections scored below this.
        """
        return [[{"class": self.classes[int(label)], "label": int(label), "score": round(float(score), 4),
                  "box": [round(float(v), 2) for v in box]}
                 for box, score, label in zip(d["boxes"], d["scores"], d["labels"])]
                for d in self.detect(images, score_threshold)]

    def evaluate(self, split: str = "test") -> dict[str, Any]:
        """COCO mAP@[.5:.95] ("map"), mAP@.5 ("map50"), mAP@.75, recall and per-class AP on a split of the data."""
        from cnnkit.config import TrainConfig, apply_overrides
        from cnnkit.engine.trainer import resolve_precision

        if split not in ("test", "val"):
            raise ConfigError(f"split must be 'test' or 'val', got {split!r}")
        config = TrainConfig(**apply_overrides({}, self.record["config"], "checkpoint config"))
        data = read_detection_data(config, verbose=False, splits=("train", split))
        annotations = data.test if split == "test" else data.val
        if annotations is None:
            raise ConfigError(f"the dataset {config.data} has no {split} split; evaluate with --split val")
        task = DetectionTask(self.model, self.classes)
        meter = task.new_meter()
        dtype = resolve_precision(config.precision, self.device)  # as the run was validated
        started, count = time.perf_counter(), 0
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            for images, targets in make_detection_loader(annotations, config, train=False):
                images, targets = task.to_device(images, targets, self.device)
                task.update_meter(meter, task.evaluation_step(self.model, images, targets), targets)
                count += len(targets)
        seconds = time.perf_counter() - started
        return {"split": split, **meter.compute(per_class=True), "images_per_second": count / max(seconds, 1e-9)}


def load_run(run_dir: Path, file: Path, record: dict, tensors: dict, device: torch.device) -> Detector:
    """`cnnkit.load` for detection runs: rebuild the detector from the record and load its weights."""
    from cnnkit.tasks.base import rebuild_model

    return Detector(rebuild_model(file, record, tensors, device), record, run_dir, device)


# ------------------------------------------------------------------------------------------ predict output
# Box colours by class (Tableau 10): distinguishable, and the same class always gets the same colour.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]


def draw_detections(image: torch.Tensor, detections: list[dict[str, Any]]) -> torch.Tensor:
    """The uint8 (3, H, W) image with each detection's box and "class score" label drawn (torchvision)."""
    from torchvision.utils import draw_bounding_boxes

    if not detections:
        return image
    boxes = torch.tensor([d["box"] for d in detections], dtype=torch.float32)
    labels = [f"{d['class']} {d['score']:.2f}" for d in detections]
    colors = [PALETTE[d["label"] % len(PALETTE)] for d in detections]
    return draw_bounding_boxes(image, boxes, labels, colors=colors, width=1)


def write_predictions(detector: Detector, images: list[str], out: Path, score_threshold: float) -> list[dict]:
    """For each image file: OUT/<name>.json (its detections) and OUT/<name>.png (the boxes drawn).

    Returns one {"image", "json", "drawing", "detections"} entry per image.
    """
    from PIL import Image

    from cnnkit.engine.checkpoint import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    results, used = [], set()
    for path in images:
        image = detector.load_images([path])[0]
        detections = detector.predict([image], score_threshold)[0]
        stem = Path(path).stem
        name, number = stem, 1
        while name in used:  # two inputs with the same file name (from different folders)
            name, number = f"{stem}-{number}", number + 1
        used.add(name)
        entry = {"image": str(path), "width": int(image.shape[2]), "height": int(image.shape[1]),
                 "score_threshold": score_threshold, "detections": detections}
        atomic_write_text(out / f"{name}.json", json.dumps(entry, indent=2) + "\n")
        drawing = draw_detections(image, detections)
        Image.fromarray(drawing.permute(1, 2, 0).numpy()).save(out / f"{name}.png")
        results.append({**entry, "json": str(out / f"{name}.json"), "drawing": str(out / f"{name}.png")})
    return results
