"""A classification run read as a diagnostic test: per-class sensitivity, specificity and AUROC, and how
well its probabilities are calibrated (cnnkit.metrics.diagnostic), on its test or validation split.

`cnnkit diagnose RUN_DIR [--split test] [--plot FILE.png]` prints them and draws the reliability diagram.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cnnkit.data import ArrayDataset
from cnnkit.tasks.base import check_split, config_of, pick_split
from cnnkit.tasks.classification.data import prepare_data


@torch.no_grad()
def split_probabilities(classifier, split: str = "test", batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities (N, K), labels (N,)) of the run's split, through the classifier's own predict path."""
    check_split(split)
    config = config_of(classifier.record)
    data = prepare_data(config, classifier.preprocessing)
    dataset = pick_split(data, split, config, why="folder or CSV data without a test/ folder")
    outputs = []
    for start in range(0, len(dataset), batch_size):
        if isinstance(dataset, ArrayDataset):
            outputs.append(classifier.predict_proba(dataset.images[start:start + batch_size]))
        else:
            outputs.append(classifier.predict_proba([str(p) for p in dataset.paths[start:start + batch_size]]))
    return torch.cat(outputs), dataset.labels


def diagnose(classifier, split: str = "test", bins: int = 10, plot: str | Path | None = None) -> dict:
    """Sensitivity, specificity, AUROC per class, calibration bins and ECE; the reliability diagram if `plot`."""
    from cnnkit.metrics.diagnostic import calibration, diagnostic_metrics, plot_reliability

    probabilities, labels = split_probabilities(classifier, split)
    result = {"split": split, **diagnostic_metrics(probabilities.numpy(), labels.numpy(), classifier.classes),
              "calibration": calibration(probabilities.numpy(), labels.numpy(), bins)}
    if plot:
        result["plot"] = str(plot_reliability(result["calibration"], plot, f"Reliability ({split})"))
    return result


def diagnosis_text(result: dict) -> str:
    """The per-class table, the means and the ECE."""
    def show(value):
        return "-" if value is None else f"{value:.4f}"

    rows = result["per_class"]
    width = max([len("class"), *(len(name) for name in rows)])
    lines = [f"{result['split']}: {result['count']} images; one-vs-rest per class",
             f"{'class'.ljust(width)}  sensitivity  specificity  auroc   support"]
    for name, entry in rows.items():
        lines.append(f"{name.ljust(width)}  {show(entry['sensitivity']).ljust(11)}  {show(entry['specificity']).ljust(11)}"
                     f"  {show(entry['auroc']).ljust(6)}  {entry['support']}")
    lines.append(f"mean sensitivity {show(result['mean_sensitivity'])}  specificity {show(result['mean_specificity'])}  "
                 f"AUROC {show(result['mean_auroc'])}; calibration ECE {result['calibration']['ece']:.4f} "
                 f"({len(result['calibration']['bins'])} bins)" + (f"; diagram {result['plot']}" if "plot" in result else ""))
    return "\n".join(lines)
