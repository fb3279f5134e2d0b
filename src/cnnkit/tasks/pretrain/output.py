"""What `cnnkit evaluate` and `cnnkit predict` print for a pretrain run."""

from __future__ import annotations

from cnnkit.files import require_files
from cnnkit.tasks.base import PredictOptions


def evaluation_text(result: dict, split: str) -> str:
    """kNN and linear-probe accuracy of the pretrained backbone's features."""
    probe = result.get("linear_probe_accuracy")
    probe_text = (f"  linear probe {probe:.4f} (L-BFGS logistic regression, l2 {result['probe_l2']:g})"
                  if probe is not None else "")
    return (f"{split} kNN accuracy {result['knn_accuracy']:.4f} (k={result['k']}, cosine, temperature "
            f"{result['temperature']:g}, bank of {result['bank_count']} training images){probe_text}\n"
            f"({result['count']} {split} images, {result['feature_dim']}-d features of the backbone)")


def predict_images(encoder, images: list[str], options: PredictOptions) -> list[dict]:
    """`cnnkit predict` on a pretrain run: each image's backbone features."""
    require_files(images)
    return [{"image": path, "features": features} for path, features in zip(images, encoder.predict(images))]


def prediction_text(result: dict) -> str:
    values = result["features"]
    return f"{result['image']}: {len(values)}-d features [{', '.join(f'{v:.3f}' for v in values[:4])}, ...]"
