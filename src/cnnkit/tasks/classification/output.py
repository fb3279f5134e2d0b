"""What `cnnkit evaluate` and `cnnkit predict` print for a classification run."""

from __future__ import annotations

import math

from cnnkit.errors import CheckpointError
from cnnkit.tasks.base import PredictOptions


def evaluation_text(result: dict, split: str) -> str:
    """Accuracy, loss and balanced accuracy on one line, then the per-class table."""
    from cnnkit.metrics.classification import per_class_table

    return (f"{split} accuracy {result['accuracy']:.4f}  loss {result['loss']:.4f}  "
            f"balanced accuracy {result['balanced_accuracy']:.4f}  ({result['count']} images)\n"
            + per_class_table(result))


def predict_images(classifier, images: list[str], options: PredictOptions) -> list[dict]:
    """Top-k classes per image. `classifier` is a Classifier or an exported-runtime predictor (same predict)."""
    results = []
    for path in images:
        top = classifier.predict([path], top_k=options.top_k)[0]
        if not all(math.isfinite(probability) for _, probability in top):
            raise CheckpointError(f"the model's outputs for {path} are not finite (NaN or inf): its weights are "
                                  "broken (a diverged or damaged checkpoint); retrain it or use another checkpoint")
        results.append({"image": path, "predictions": [{"class": c, "probability": p} for c, p in top]})
    return results


def prediction_text(result: dict) -> str:
    shown = ", ".join(f"{p['class']} {p['probability']:.3f}" for p in result["predictions"])
    return f"{result['image']}: {shown}"
