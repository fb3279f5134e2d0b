"""Instance segmentation: a class, a box and a mask for every object. `cnnkit train --task instance`.

    cnnkit train --task instance --model maskrcnn_resnet18_fpn --data SCENES_DIR epochs=12
    cnnkit evaluate RUN_DIR                     # COCO mask mAP@.5, mAP@[.5:.95] (and box mAP) on the test split
    cnnkit predict RUN_DIR scene.png --out out/ # JSON (boxes, scores, RLE masks), instance mask PNG, overlay

Everything but the masks is detection's (cnnkit.tasks.detection): the same data readers and validation
(COCO JSON with polygon/RLE segmentations, or the scenes benchmark's instance PNGs), the same box-aware
augmentation (`detect_augment`; masks move with the image), the same detection Dataset (here with
masks=True) and the same DetectionMeter, asked for both iouType "bbox" and "segm". The monitor is
val_mask_map50: COCO mask AP at IoU 0.5, averaged over the classes.

Predicted masks are the model's per-pixel probabilities thresholded at 0.5. `predict` writes them as COCO
RLE (pycocotools.mask.encode; "counts" as a string), as an instance-id PNG (0 background, i for the i-th
detection kept, highest score drawn last so it stays on top) and as an overlay of coloured masks and boxes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy
import torch
import torch.nn as nn

from cnnkit.errors import ConfigError, DataError
from cnnkit.tasks.base import TaskSetup
from cnnkit.tasks.detection import (DetectionTask, Detector, common_size, image_statistics, read_detection_data,
                                    resolve_detection_architecture)
from cnnkit.tasks.detection import load_run as load_detection_run

MASK_THRESHOLD = 0.5  # probability above which a pixel belongs to the predicted object (the paper's)


class InstanceTask(DetectionTask):
    """Mask R-CNN-style models (detection contract plus "masks"); COCO box and mask mAP as metrics."""

    name = "instance"
    monitor = "val_mask_map50"

    @torch.no_grad()
    def evaluation_step(self, model: nn.Module, images, targets) -> dict:
        detections = []
        for detection in model(images):
            kept = {key: value.detach().float().cpu() if key in ("boxes", "scores") else value.cpu()
                    for key, value in detection.items() if key != "masks"}
            kept["masks"] = (detection["masks"] >= MASK_THRESHOLD).to(torch.uint8).cpu()  # (N, H, W)
            detections.append(kept)
        return {"detections": detections}

    def new_meter(self):
        from cnnkit.metrics.detection import DetectionMeter

        return DetectionMeter(self.class_names, iou_type=("bbox", "segm"))

    def update_meter(self, meter, result: dict, targets) -> None:
        meter.update(result["detections"], [{"boxes": t["boxes"].cpu(), "labels": t["labels"].cpu(),
                                             "masks": t["masks"].cpu()} for t in targets])


def read_instance_data(config, verbose: bool = True, splits: tuple[str, ...] = ("train", "val", "test")):
    """Detection's validated splits; every image must come with instance masks."""
    data = read_detection_data(config, verbose=verbose, splits=splits)
    for split in ("train", "val", "test"):
        annotations = getattr(data, split)
        if annotations is not None and annotations.images and not all(i.has_masks for i in annotations.images):
            missing = next(i.file for i in annotations.images if not i.has_masks)
            raise DataError(f"{missing} has no instance masks ({split} split of {config.data}); --task instance needs "
                            "COCO segmentations (polygons or RLE) or instance-id PNGs (SPLIT/instances/ in the scenes "
                            "layout). For boxes only, use --task detect")
    return data


def make_instance_loader(annotations, config, train: bool, dist_info=None, input_size=None):
    """Detection's loader with masks: (uint8 images, targets with "masks" (N, H, W)) batches."""
    from cnnkit.data.detection.dataset import DetectionDataset, collate_detection
    from cnnkit.data.detection.transforms import detection_transforms
    from cnnkit.data.segmentation import SegmentationLoader

    transforms = detection_transforms(config.detect_augment, size=input_size) if train else None
    dataset = DetectionDataset(annotations, transforms=transforms, masks=True)
    workers = config.num_workers if config.num_workers >= 0 else 0  # in memory: augmenting in-process is fastest
    rank, world = (dist_info.rank, dist_info.world_size) if dist_info is not None and dist_info.enabled else (0, 1)
    batch_size = max(1, config.batch_size // world) if train else max(config.batch_size, 16)
    return SegmentationLoader(dataset, batch_size, train=train, seed=config.seed, num_workers=workers, rank=rank,
                              world_size=world, collate_fn=collate_detection)


def setup(config, device: torch.device, dist_info, resume) -> TaskSetup:
    """`cnnkit train --task instance`: data with masks, the Mask R-CNN-style model, the record."""
    from cnnkit.api import versions
    from cnnkit.engine import checkpoint as ckpt
    from cnnkit.registry import create_model, get_entry, list_models

    if config.pretrained:
        raise ConfigError("pretrained weights are not supported for instance segmentation yet; train from scratch")
    if not resume and get_entry(config.model).task != "instance":
        raise ConfigError(f"model {config.model!r} is not an instance segmentation model; --task instance needs one "
                          f"of {', '.join(list_models(task='instance'))}")
    data = read_instance_data(config, verbose=dist_info.is_main)
    input_size = common_size(data.train)
    if resume:
        architecture = ckpt.read_record(Path(resume) / "last.safetensors")["architecture"]
    else:
        # Detection's record builder checks for task "detect": build the same record here.
        mean, std = image_statistics(data.train)
        architecture = {"name": config.model, "args": {"num_classes": len(data.classes), "in_chans": 3,
                                                       "input_size": list(input_size), "image_mean": mean,
                                                       "image_std": std, **config.model_args}}
    torch.manual_seed(config.seed)
    model = create_model(architecture["name"], **architecture["args"])
    task = InstanceTask(model, data.classes)
    args = architecture["args"]
    record = {"task": task.name, "architecture": architecture, "classes": data.classes,
              "preprocessing": {"channels": 3, "image_size": list(input_size), "mean": args["image_mean"],
                                "std": args["image_std"], "value_range": "uint8 / 255",
                                "resize": "none: the model takes images of any size"},
              "config": config.to_dict(), "versions": versions()}
    train_loader = make_instance_loader(data.train, config, train=True, dist_info=dist_info, input_size=input_size)
    val_loader = make_instance_loader(data.val, config, train=False, dist_info=dist_info) if data.val else None
    parameters = sum(p.numel() for p in model.parameters())
    from cnnkit.engine.trainer import resolve_precision

    dtype = resolve_precision(config.precision, device)  # auto: bf16 where the CPU has it (2.1x faster steps)
    precision = str(dtype).replace("torch.", "") if dtype else "fp32"
    header = (f"cnnkit train --task instance: {config.model} ({parameters / 1e6:.2f}M parameters) on {config.data}: "
              f"{len(data.train)} train / {len(data.val) if data.val else 0} val images, {len(data.classes)} classes, "
              f"{input_size[0]}x{input_size[1]}; {device}, {precision}, {config.epochs} epochs")
    return TaskSetup(task, train_loader, val_loader, record, header, [print_instance_metrics])


def print_instance_metrics(trainer, metrics: dict) -> None:
    """After each epoch: the mask and box mAP (the Trainer's epoch line shows losses only)."""
    from tqdm import tqdm

    if trainer.dist.is_main and "val_mask_map50" in metrics:
        tqdm.write(f"  val mask mAP@.5 {metrics['val_mask_map50']:.4f}  mask mAP@[.5:.95] {metrics['val_mask_map']:.4f}"
                   f"  box mAP@.5 {metrics['val_map50']:.4f}")


# ------------------------------------------------------------------------------------------ trained runs
class InstanceSegmenter(Detector):
    """A trained instance segmentation run (`cnnkit.load` of a task "instance" run)."""

    def predict(self, images, score_threshold: float = 0.25) -> list[list[dict[str, Any]]]:
        """Per image, its objects as JSON-ready dicts: {"class", "label", "score", "box": [x1, y1, x2, y2],
        "mask": COCO RLE {"size": [H, W], "counts": str}, "area": mask pixels}, best first."""
        from pycocotools import mask as mask_utils

        results = []
        for detection in self.detect(images, score_threshold):
            objects = []
            masks = (detection["masks"] >= MASK_THRESHOLD).numpy().astype(numpy.uint8)  # (N, H, W)
            for box, score, label, mask in zip(detection["boxes"], detection["scores"], detection["labels"], masks):
                rle = mask_utils.encode(numpy.asfortranarray(mask))
                objects.append({"class": self.classes[int(label)], "label": int(label), "score": round(float(score), 4),
                                "box": [round(float(v), 2) for v in box], "area": int(mask.sum()),
                                "mask": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}})
            results.append(objects)
        return results

    def evaluate(self, split: str = "test") -> dict[str, Any]:
        """COCO mask mAP ("mask_map50", "mask_map" ...), box mAP ("map50" ...) and per-class AP on a split."""
        import time

        from cnnkit.config import TrainConfig, apply_overrides

        if split not in ("test", "val"):
            raise ConfigError(f"split must be 'test' or 'val', got {split!r}")
        config = TrainConfig(**apply_overrides({}, self.record["config"], "checkpoint config"))
        data = read_instance_data(config, verbose=False, splits=("train", split))
        annotations = data.test if split == "test" else data.val
        if annotations is None:
            raise ConfigError(f"the dataset {config.data} has no {split} split; evaluate with --split val")
        task = InstanceTask(self.model, self.classes)
        meter = task.new_meter()
        started, count = time.perf_counter(), 0
        for images, targets in make_instance_loader(annotations, config, train=False):
            images, targets = task.to_device(images, targets, self.device)
            task.update_meter(meter, task.evaluation_step(self.model, images, targets), targets)
            count += len(targets)
        seconds = time.perf_counter() - started
        return {"split": split, **meter.compute(per_class=True), "images_per_second": count / max(seconds, 1e-9)}


def load_run(run_dir: Path, file: Path, record: dict, tensors: dict, device: torch.device) -> InstanceSegmenter:
    """`cnnkit.load` for instance runs: detection's loader, then this task's predictor."""
    detector = load_detection_run(run_dir, file, record, tensors, device)
    return InstanceSegmenter(detector.model, record, run_dir, device)


# ------------------------------------------------------------------------------------------ predict output
def decode_masks(objects: list[dict], height: int, width: int) -> numpy.ndarray:
    """The objects' RLE masks decoded with pycocotools: uint8 (N, H, W)."""
    import warnings

    from pycocotools import mask as mask_utils

    if not objects:
        return numpy.zeros((0, height, width), dtype=numpy.uint8)
    rles = [{"size": o["mask"]["size"], "counts": o["mask"]["counts"].encode("ascii")} for o in objects]
    with warnings.catch_warnings():  # pycocotools' Cython decode predates NumPy 2's __array__(copy=) protocol
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        return numpy.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))  # (H, W, N) -> (N, H, W)


def instance_id_mask(objects: list[dict], height: int, width: int) -> numpy.ndarray:
    """uint8 (H, W): 0 background, i for the i-th object (1-based); higher scores painted last (on top)."""
    masks = decode_masks(objects, height, width)
    ids = numpy.zeros((height, width), dtype=numpy.uint8)
    for index in sorted(range(len(objects)), key=lambda i: objects[i]["score"])[-255:]:
        ids[masks[index].astype(bool)] = index + 1
    return ids


def draw_instances(image: torch.Tensor, objects: list[dict]) -> torch.Tensor:
    """The uint8 (3, H, W) image with each object's mask tinted (alpha 0.5) and its box and label drawn."""
    from torchvision.utils import draw_segmentation_masks

    from cnnkit.tasks.detection import PALETTE, draw_detections

    if not objects:
        return image
    masks = torch.from_numpy(decode_masks(objects, image.shape[1], image.shape[2])).bool()
    colours = [PALETTE[o["label"] % len(PALETTE)] for o in objects]
    tinted = draw_segmentation_masks(image, masks, alpha=0.5, colors=colours)
    return draw_detections(tinted, objects)


def write_predictions(segmenter: InstanceSegmenter, images: list[str], out: Path, score_threshold: float) -> list[dict]:
    """For each image: OUT/NAME.json (objects with RLE masks), OUT/NAME-mask.png (instance ids),
    OUT/NAME-overlay.png (masks, boxes and labels drawn). Returns one entry per image."""
    from PIL import Image

    from cnnkit.engine.checkpoint import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path, name in zip(images, unique_stems(images)):
        image = segmenter.load_images([path])[0]
        objects = segmenter.predict([image], score_threshold)[0]
        height, width = int(image.shape[1]), int(image.shape[2])
        entry = {"image": str(path), "width": width, "height": height, "score_threshold": score_threshold,
                 "mask_threshold": MASK_THRESHOLD, "objects": objects}
        files = {"json": out / f"{name}.json", "mask": out / f"{name}-mask.png", "overlay": out / f"{name}-overlay.png"}
        atomic_write_text(files["json"], json.dumps(entry, indent=2) + "\n")
        Image.fromarray(instance_id_mask(objects, height, width), mode="L").save(files["mask"])
        Image.fromarray(draw_instances(image, objects).permute(1, 2, 0).numpy()).save(files["overlay"])
        results.append({**entry, **{key: str(value) for key, value in files.items()}})
    return results


def unique_stems(paths: list[str]) -> list[str]:
    """File stems, numbered where two inputs share one (from different folders)."""
    names, used = [], set()
    for path in paths:
        stem = Path(path).stem
        name, number = stem, 1
        while name in used:
            name, number = f"{stem}-{number}", number + 1
        used.add(name)
        names.append(name)
    return names
