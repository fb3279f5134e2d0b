"""A trained embedding run: `cnnkit.load(run_dir)` gives an Embedder (embed, verify, evaluate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnkit.data.preprocess import Preprocessing
from cnnkit.device import resolve_precision
from cnnkit.engine.evaluate import evaluate_split
from cnnkit.tasks.base import check_split, config_of, outputs_in_batches, pick_split
from cnnkit.tasks.embed.data import make_loader, read_identities
from cnnkit.tasks.embed.task import EmbedTask

DEFAULT_THRESHOLD = 0.5  # cosine similarity, for runs whose best checkpoint records no validation threshold


class Embedder:
    """A trained embedding network loaded for inference.

    Attributes:
        model: The network in eval mode: images -> (B, D) unit vectors.
        threshold: Cosine similarity from which two images count as the same identity: the threshold
            chosen on the validation identities (10-fold, best accuracy) of the best epoch.
        preprocessing, record, run_dir, device: As every predictor.
    """

    def __init__(self, model: nn.Module, record: dict[str, Any], run_dir: Path | None, device: torch.device):
        self.model, self.record, self.run_dir, self.device = model, record, run_dir, device
        self.classes: list[str] = list(record["classes"])  # the training identities
        self.preprocessing = Preprocessing.from_dict(record["preprocessing"])
        self.threshold = float(record.get("metrics", {}).get("val_threshold", DEFAULT_THRESHOLD))

    @torch.no_grad()
    def embed(self, images) -> torch.Tensor:
        """(N, D) unit-length embeddings of image files, PIL images, arrays or a uint8 (N, C, H, W) batch."""
        return outputs_in_batches(self.preprocessing, images, self.model, self.device)

    def predict(self, images) -> list[list[float]]:
        """The embedding of each image as a list of floats (JSON-ready)."""
        return [[round(value, 6) for value in row] for row in self.embed(images).tolist()]

    def verify(self, first, second) -> dict[str, Any]:
        """Whether two images show the same identity: cosine similarity against the run's threshold."""
        a, b = self.embed([first, second])
        score = float((a * b).sum())
        return {"score": round(score, 4), "threshold": round(self.threshold, 4), "same": score >= self.threshold}

    def verify_pairs(self, pairs: list[tuple]) -> dict[str, Any]:
        """The verification protocol on listed pairs (cnnkit.data.pairs: LFW pairs.txt or a pairs CSV): ROC
        metrics over all of them and the 10-fold accuracy over the folds in the listed order."""
        from cnnkit.files import require_files
        from cnnkit.metrics.verification import verification_metrics

        files = sorted({str(path) for first, second, _ in pairs for path in (first, second)})
        require_files(files)
        embeddings = torch.cat([self.embed(files[start:start + 512]) for start in range(0, len(files), 512)])
        index = {name: row for row, name in enumerate(files)}
        first = embeddings[[index[str(pair[0])] for pair in pairs]]
        second = embeddings[[index[str(pair[1])] for pair in pairs]]
        genuine = torch.tensor([bool(pair[2]) for pair in pairs])
        return verification_metrics((first * second).sum(dim=1), genuine, balance=False)

    def evaluate(self, split: str = "test") -> dict[str, Any]:
        """Verification (every pair: AUC, EER, TAR@FAR, 10-fold accuracy) and identification (rank-1/5, CMC,
        mAP) on identities never trained on: the data's test identities, or the validation identities."""
        check_split(split)
        config = config_of(self.record)
        data = read_identities(config, self.preprocessing)
        dataset = pick_split(data, split, config, "identities", "a folder with train/ and test/ identity folders has them")
        loader = make_loader(dataset, self.preprocessing, config, self.device, train=False)
        meter = evaluate_split(EmbedTask(self.model), self.model, loader, self.device,
                               resolve_precision(config.precision, self.device))
        return {"split": split, **meter.compute(per_class=True)}
