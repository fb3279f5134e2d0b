"""A trained detection run: `cnnkit.load(run_dir)` gives a Detector (detect, predict, evaluate)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnkit.data.images import decode_image
from cnnkit.device import resolve_precision
from cnnkit.engine.evaluate import evaluate_split
from cnnkit.errors import DataError
from cnnkit.tasks.base import check_split, config_of, pick_split
from cnnkit.tasks.detection.data import make_detection_loader, read_detection_data
from cnnkit.tasks.detection.task import DetectionTask


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

    # What `evaluate` reads and measures with (InstanceSegmenter: masks, its own task, fp32).
    task_class = DetectionTask
    read_data = staticmethod(read_detection_data)
    masks, eval_batch_size, autocast = False, 32, True

    def load_images(self, images) -> list[torch.Tensor]:
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
        check_split(split)
        config = config_of(self.record)
        data = self.read_data(config, verbose=False, splits=("train", split))
        annotations = pick_split(data, split, config)
        task = self.task_class(self.model, self.classes)
        loader = make_detection_loader(annotations, config, train=False, masks=self.masks,
                                       eval_batch_size=self.eval_batch_size)
        dtype = resolve_precision(config.precision, self.device) if self.autocast else None  # as validated
        count = 0

        def count_images(images, targets, result) -> None:
            nonlocal count
            count += len(targets)

        started = time.perf_counter()
        meter = evaluate_split(task, self.model, loader, self.device, dtype, on_batch=count_images)
        seconds = time.perf_counter() - started
        return {"split": split, **meter.compute(per_class=True), "images_per_second": count / max(seconds, 1e-9)}
