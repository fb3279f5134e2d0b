"""A trained segmentation run: `cnnkit.load(run_dir)` gives a Segmenter (predict, predict_proba, evaluate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.data.preprocess import Preprocessing
from cnnkit.data.segmentation import SegmentationDataset, SegmentationLoader, check_masks, read_image
from cnnkit.device import resolve_precision
from cnnkit.engine.evaluate import evaluate_split
from cnnkit.tasks.base import check_split, config_of, pick_split
from cnnkit.tasks.segmentation.data import prepare_data
from cnnkit.tasks.segmentation.task import SegmentationTask, predict_logits


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
        self.medical: dict | None = record["preprocessing"].get("medical")  # window + slice stack of study runs

    def read(self, source) -> torch.Tensor:
        """float [0, 1] (C, H, W) of a file as the model's training read it: a DICOM / NIfTI slice through the
        checkpoint's window and stack (runs trained on studies), any other image as `read_image` decodes it."""
        if self.medical is not None:
            from cnnkit.data.medical.slices import is_medical_file, read_medical_image

            if is_medical_file(source):
                return read_medical_image(source, self.medical)
        return read_image(source, self.preprocessing.channels)

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
            image = source if isinstance(source, torch.Tensor) else self.read(source)
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
        check_split(split)
        config = config_of(self.record)
        data = prepare_data(config, self.preprocessing, check=False)
        files = pick_split(data, split, config)
        check_masks(files, self.ignore_index)
        # The files as they are (no resizing): each mask is scored at its own resolution.
        dataset = SegmentationDataset(files, self.preprocessing.channels, None, self.ignore_index)
        loader = SegmentationLoader(dataset, config.batch_size, train=False, collate_fn=_same_size_batches)
        groups = (group for batch in loader for group in batch)  # one (images, masks) pair per image size
        meter = evaluate_split(FullResolutionEvaluation(self), self.model, groups, self.device,
                               resolve_precision(config.precision, self.device))
        result = {"split": split, "images": len(files), "resolution": "each mask's own", **meter.compute(per_class=True)}
        if self.medical is not None:  # trained on studies: each study's volume scored in 3-D (Dice, HD95, ASSD)
            from cnnkit.tasks.segmentation.volume import evaluate_studies

            result["volumes"] = evaluate_studies(self, config, split)
        return result


class FullResolutionEvaluation(SegmentationTask):
    """The task as `Segmenter.evaluate` scores it: images resized and normalised as for predict, logits
    upsampled back to each mask's own size."""

    def __init__(self, segmenter: Segmenter):
        super().__init__(segmenter.model, segmenter.classes, ignore_index=segmenter.ignore_index, tta=segmenter.tta)
        self.segmenter = segmenter

    def to_device(self, images: torch.Tensor, masks: torch.Tensor, device: torch.device):
        return self.segmenter._inputs(images), masks.to(device)

    @torch.no_grad()
    def evaluation_step(self, model: nn.Module, images: torch.Tensor, masks: torch.Tensor) -> dict:
        logits = predict_logits(model, images, self.tta)  # (B, K, h, w)
        logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        loss_sum = F.cross_entropy(logits, masks, ignore_index=self.ignore_index, reduction="sum")
        return {"loss": loss_sum, "predictions": logits.argmax(dim=1)}


def _same_size_batches(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Collate: one stacked (images, masks) pair per image size in the batch (VOC images differ in size)."""
    groups: dict[tuple, list] = {}
    for image, mask in samples:
        groups.setdefault(tuple(image.shape), []).append((image, mask))
    return [(torch.stack([i for i, _ in group]), torch.stack([m for _, m in group])) for group in groups.values()]
