"""A pretrained run: `cnnkit.load(run_dir)` gives an Encoder (features, kNN and linear-probe evaluation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnkit.data import ArrayDataset
from cnnkit.data.preprocess import Preprocessing
from cnnkit.device import resolve_precision
from cnnkit.engine.evaluate import evaluate_split
from cnnkit.errors import ConfigError
from cnnkit.metrics.knn import knn_accuracy
from cnnkit.tasks.base import check_split, config_of, outputs_in_batches, pick_split
from cnnkit.tasks.pretrain.data import KNNLoader, read_pretrain_data
from cnnkit.tasks.pretrain.task import PretrainTask


def concatenate(first: ArrayDataset, second: ArrayDataset | None) -> ArrayDataset:
    if second is None:
        return first
    return ArrayDataset(torch.cat([first.images, second.images]), torch.cat([first.labels, second.labels]),
                        first.classes)


class Encoder:
    """A pretrained backbone loaded for inference.

    Attributes:
        model: The method's network in eval mode: images -> (B, D) backbone features (no projection head).
        classes: The data's class names ([] for unlabeled data): used only by the kNN and the probe.
        preprocessing, record, run_dir, device: As every predictor.
    """

    def __init__(self, model: nn.Module, record: dict[str, Any], run_dir: Path | None, device: torch.device):
        self.model, self.record, self.run_dir, self.device = model, record, run_dir, device
        self.classes: list[str] = list(record["classes"]) if record.get("labelled", True) else []
        self.preprocessing = Preprocessing.from_dict(record["preprocessing"])
        self.method = record["architecture"]["name"]

    @torch.no_grad()
    def embed(self, images) -> torch.Tensor:
        """(N, D) features of image files, PIL images, arrays or a uint8 (N, C, H, W) batch."""
        return outputs_in_batches(self.preprocessing, images, self.model, self.device)

    def predict(self, images) -> list[list[float]]:
        """The features of each image as a list of floats (JSON-ready)."""
        return [[round(value, 6) for value in row] for row in self.embed(images).tolist()]

    def features(self, dataset: ArrayDataset, config) -> tuple[torch.Tensor, torch.Tensor]:
        """(features (N, D), labels (N,)) of a labelled split, through the evaluation loop."""
        task = PretrainTask(self.model, self.method, max(len(self.classes), 1))
        meter = evaluate_split(task, self.model, KNNLoader(dataset, None, self.preprocessing, config, self.device),
                               self.device, resolve_precision(config.precision, self.device))
        bank, labels, _, _ = meter.split()
        return bank, labels

    def evaluate(self, split: str = "test", probe: bool = True) -> dict[str, Any]:
        """kNN accuracy of `split`'s images among the labelled training images (k, temperature: the run's), and
        the linear probe's accuracy (L-BFGS logistic regression on the training features, its L2 strength chosen
        on the validation images; cnnkit.transfer.linear_probe)."""
        from cnnkit.transfer.linear_probe import fit_linear_probe

        check_split(split)
        config = config_of(self.record)
        if not self.classes:
            raise ConfigError(f"{self.run_dir}: pretrained on unlabeled images ({config.data}); kNN and linear-probe "
                              "evaluation need labels: fine-tune it (pretrained=RUN_DIR) or pretrain on labelled data")
        data = read_pretrain_data(config, self.preprocessing)
        queries = pick_split(data, split, config)
        train = self.features(data.train, config)
        val = self.features(data.val, config) if data.val is not None else None
        query = val if split == "val" else self.features(queries, config)
        bank = train if split == "val" or val is None else (torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]))
        num_classes = len(self.classes)
        result = {"split": split, "count": len(query[1]), "bank_count": len(bank[1]), "k": config.knn_k,
                  "temperature": config.knn_temperature, "feature_dim": int(train[0].shape[1]),
                  "knn_accuracy": knn_accuracy(query[0], query[1], bank[0], bank[1], num_classes, config.knn_k,
                                               config.knn_temperature)}
        if probe:
            fit = fit_linear_probe(train, val, num_classes)
            logits = query[0].double() @ fit.weight.double().T + fit.bias.double()
            result.update(linear_probe_accuracy=float((logits.argmax(1) == query[1]).double().mean()), probe_l2=fit.l2)
        return result
