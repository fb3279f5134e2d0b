"""Diagnostic metrics of a classifier's probabilities: per-class sensitivity, specificity, AUROC; calibration.

Doctors read a classifier one class at a time, each as "this finding against the rest" (one-vs-rest):

    sensitivity_k = TP / (TP + FN)    of the images whose truth is k, the share predicted k (recall)
    specificity_k = TN / (TN + FP)    of the images whose truth is not k, the share not predicted k
    AUROC_k       = P(score_k of a random k image > score_k of a random non-k image), ties counting 1/2
                    (the Mann-Whitney U statistic over the ranks of p_k; threshold-free)

Predicted class = the argmax of the probabilities (what `predict` returns first). A class absent from the
truth has no sensitivity or AUROC (None), a split holding only class k has no specificity for it.

Calibration: is "0.8" right 80 % of the time? The top-class probabilities are put into `bins` equal-width
bins on [0, 1]; per bin the mean confidence and the accuracy. ECE (expected calibration error, Guo et al.
2017) = sum over bins of (images in bin / all) x |accuracy - confidence|. `plot_reliability` draws the
reliability diagram (accuracy against confidence, the diagonal is perfect calibration).

Hand-written (rank statistics and bin counts in a few numpy lines): scikit-learn is not a dependency; the
tests compare AUROC with scikit-learn's roc_auc_score where it is installed.
"""

from __future__ import annotations

from pathlib import Path

import numpy

from cnnkit.errors import DataError


def _ranks(values: numpy.ndarray) -> numpy.ndarray:
    """1-based ranks with ties given their average rank."""
    order = numpy.argsort(values, kind="mergesort")
    ranks = numpy.empty(len(values), dtype=numpy.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        stop = start
        while stop + 1 < len(values) and sorted_values[stop + 1] == sorted_values[start]:
            stop += 1
        ranks[order[start:stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks


def auroc(scores: numpy.ndarray, positive: numpy.ndarray) -> float | None:
    """Area under the ROC curve of `scores` for the boolean `positive`; None without both kinds."""
    scores, positive = numpy.asarray(scores, dtype=numpy.float64), numpy.asarray(positive, dtype=bool)
    positives, negatives = int(positive.sum()), int((~positive).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = _ranks(scores)
    return float((ranks[positive].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def diagnostic_metrics(probabilities, labels, classes: list[str]) -> dict:
    """Per class (one-vs-rest): sensitivity, specificity, AUROC, support; plus their means (macro).

    Args:
        probabilities: (N, K) class probabilities.
        labels: (N,) true class indices.
        classes: The K class names.
    """
    probabilities, labels = numpy.asarray(probabilities, dtype=numpy.float64), numpy.asarray(labels).reshape(-1)
    if probabilities.ndim != 2 or probabilities.shape != (len(labels), len(classes)):
        raise DataError(f"probabilities {probabilities.shape} must be (N, K) = ({len(labels)}, {len(classes)})")
    predicted = probabilities.argmax(axis=1)
    per_class = {}
    for index, name in enumerate(classes):
        truth, said = labels == index, predicted == index
        positives, negatives = int(truth.sum()), int((~truth).sum())
        per_class[name] = {
            "sensitivity": float((said & truth).sum() / positives) if positives else None,
            "specificity": float((~said & ~truth).sum() / negatives) if negatives else None,
            "auroc": auroc(probabilities[:, index], truth), "support": positives}

    def mean(key):
        values = [entry[key] for entry in per_class.values() if entry[key] is not None]
        return float(numpy.mean(values)) if values else None

    return {"per_class": per_class, "mean_sensitivity": mean("sensitivity"), "mean_specificity": mean("specificity"),
            "mean_auroc": mean("auroc"), "count": int(len(labels))}


def calibration(probabilities, labels, bins: int = 10) -> dict:
    """Reliability bins of the top-class probability and the ECE (see the module docstring)."""
    probabilities, labels = numpy.asarray(probabilities, dtype=numpy.float64), numpy.asarray(labels).reshape(-1)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = numpy.linspace(0.0, 1.0, bins + 1)
    which = numpy.clip(numpy.floor(confidence * bins).astype(int), 0, bins - 1)  # [k/B, (k+1)/B); 1.0 in the last
    rows, ece = [], 0.0
    for index in range(bins):
        members = which == index
        count = int(members.sum())
        row = {"low": float(edges[index]), "high": float(edges[index + 1]), "count": count,
               "confidence": float(confidence[members].mean()) if count else None,
               "accuracy": float(correct[members].mean()) if count else None}
        if count:
            ece += count / len(labels) * abs(row["accuracy"] - row["confidence"])
        rows.append(row)
    return {"bins": rows, "ece": float(ece), "count": int(len(labels))}


def plot_reliability(result: dict, path: str | Path, title: str = "Reliability diagram") -> Path:
    """Draw `calibration`'s bins: accuracy per bin against the bin's mean confidence, the diagonal for reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    used = [row for row in result["bins"] if row["count"]]
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    widths = [row["high"] - row["low"] for row in used]
    axis.bar([row["low"] for row in used], [row["accuracy"] for row in used], width=widths, align="edge",
             edgecolor="black", alpha=0.7, label="accuracy per bin")
    axis.plot([row["confidence"] for row in used], [row["accuracy"] for row in used], "o", color="black", markersize=3)
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-class probability)", ylabel="accuracy",
             title=f"{title}\nECE {result['ece']:.3f} over {result['count']} images")
    axis.legend(loc="upper left", fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
