"""What `cnnkit evaluate` and `cnnkit predict` print for an embedding run."""

from __future__ import annotations

from cnnkit.files import require_files
from cnnkit.tasks.base import PredictOptions


def evaluation_text(result: dict, split: str) -> str:
    """Identification and verification on one line each; the CMC curve's first ranks."""
    cmc = "  ".join(f"{k + 1}:{value:.3f}" for k, value in enumerate(result.get("cmc", [])[:10]))
    return (f"{split} rank-1 {result.get('rank1', float('nan')):.4f}  rank-5 {result.get('rank5', float('nan')):.4f}  "
            f"mAP {result['map']:.4f}  ({result['identities']} identities, {result['count']} images, "
            f"{result.get('probes', 0)} probes)\n"
            f"{split} TAR@FAR=1e-2 {result['tar_at_far_0.01']:.4f}  TAR@FAR=1e-3 {result['tar_at_far_0.001']:.4f}  "
            f"EER {result['eer']:.4f}  AUC {result['auc']:.4f}  10-fold accuracy {result['verification_accuracy']:.4f}"
            f" +- {result['verification_accuracy_std']:.4f}  ({result['pairs']} pairs, {result['genuine_pairs']} "
            f"genuine)\nCMC {cmc}")


def predict_images(embedder, images: list[str], options: PredictOptions) -> list[dict]:
    """`cnnkit predict` on an embed run: each image's embedding."""
    require_files(images)
    return [{"image": path, "embedding": embedding} for path, embedding in zip(images, embedder.predict(images))]


def prediction_text(result: dict) -> str:
    values = result["embedding"]
    return f"{result['image']}: {len(values)}-d embedding [{', '.join(f'{v:.3f}' for v in values[:4])}, ...]"
