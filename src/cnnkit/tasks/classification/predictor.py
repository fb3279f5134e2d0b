"""A trained classification run: `cnnkit.load(run_dir)` gives a Classifier (predict, predict_proba, evaluate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnkit.data.preprocess import Preprocessing
from cnnkit.device import resolve_precision
from cnnkit.engine.evaluate import evaluate_split
from cnnkit.errors import ConfigError
from cnnkit.tasks.base import check_split, config_of, outputs_in_batches, pick_split
from cnnkit.tasks.classification.data import make_loader, prepare_data
from cnnkit.tasks.classification.task import ClassificationTask, predict_logits


class Classifier:
    """A trained run loaded for inference and evaluation: `cnnkit.load(run_dir)`.

    Attributes:
        model: The network in eval mode.
        classes: Class names, in the model's output order.
        preprocessing: What images go through before the model (from the checkpoint).
        record: The checkpoint's full JSON record.
    """

    def __init__(self, model: nn.Module, record: dict[str, Any], run_dir: Path | None, device: torch.device):
        self.model, self.record, self.run_dir, self.device = model, record, run_dir, device
        self.classes: list[str] = list(record["classes"])
        self.preprocessing = Preprocessing.from_dict(record["preprocessing"])
        self.tta = bool(record.get("config", {}).get("tta", False))  # flip TTA, as the run was validated
        self.medical: dict | None = record["preprocessing"].get("medical")  # window of runs trained on DICOM
        if self.medical is not None:  # raw .dcm files are windowed as the training PNGs were (predict, explain)
            from cnnkit.data.medical.classify import WindowedPreprocessing

            self.preprocessing = WindowedPreprocessing.wrap(self.preprocessing, self.medical.get("window"))

    @torch.no_grad()
    def predict_proba(self, images) -> torch.Tensor:
        """Class probabilities (B, K) for image files, PIL images, arrays, or a uint8 (B, C, H, W) batch."""
        return outputs_in_batches(self.preprocessing, images,
                                  lambda inputs: predict_logits(self.model, inputs, self.tta).softmax(dim=1), self.device)

    def predict(self, images, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k (class name, probability) pairs per image, most likely first."""
        if top_k < 1:
            raise ConfigError(f"top_k must be 1 or more, got {top_k}")
        probabilities = self.predict_proba(images)
        values, indices = probabilities.topk(min(top_k, len(self.classes)), dim=1)
        return [[(self.classes[i], float(v)) for v, i in zip(row_values, row_indices)]
                for row_values, row_indices in zip(values.tolist(), indices.tolist())]

    def evaluate(self, split: str = "test") -> dict[str, Any]:
        """Accuracy, loss, balanced accuracy, per-class metrics and confusion matrix on the run's test or val split."""
        check_split(split)
        config = config_of(self.record)
        data = prepare_data(config, self.preprocessing)
        dataset = pick_split(data, split, config, why="folder or CSV data without a test/ folder")
        loader = make_loader(dataset, self.preprocessing, config, self.device, train=False)
        task = ClassificationTask(self.model, self.classes, tta=self.tta)
        meter = evaluate_split(task, self.model, loader, self.device, resolve_precision(config.precision, self.device))
        return {"split": split, **meter.compute(per_class=True)}
