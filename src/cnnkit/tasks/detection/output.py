"""What detection runs write and print: boxes drawn on the image, JSON per image, the mAP table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from cnnkit.errors import ConfigError
from cnnkit.files import atomic_write_text, require_files
from cnnkit.tasks.base import PredictOptions, unique_stems
from cnnkit.tasks.plots import READABLE_SIDE, upscale


# Box colours by class (Tableau 10): distinguishable, and the same class always gets the same colour.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]


def draw_detections(image: torch.Tensor, detections: list[dict[str, Any]], min_side: int = 0) -> torch.Tensor:
    """The uint8 (3, H, W) image with each detection's box and "class score" label drawn (torchvision).

    Args:
        image: uint8 (3, H, W).
        detections: {"class", "label", "box": [x1, y1, x2, y2]} and "score" (ground truth without it: the
            label is the class alone).
        min_side: Enlarge the image first (nearest neighbour, a whole factor, boxes with it) until its shorter
            side reaches this, so labels stay readable: on a 64-pixel canvas a label covers the objects.
    """
    from torchvision.utils import draw_bounding_boxes

    image, factor = upscale(image, min_side) if min_side else (image, 1)
    if not detections:
        return image
    boxes = torch.tensor([d["box"] for d in detections], dtype=torch.float32) * factor
    labels = [f"{d['class']} {d['score']:.2f}" if "score" in d else str(d["class"]) for d in detections]
    colors = [PALETTE[d["label"] % len(PALETTE)] for d in detections]
    return draw_bounding_boxes(image, boxes, labels, colors=colors, width=2 if factor > 1 else 1)


def save_drawings(drawn: Callable[[int], torch.Tensor], image: torch.Tensor, path: Path) -> dict[str, str]:
    """Save drawn(0) (at the image's own size, pixel for pixel with the JSON) as `path`; for an image whose
    shorter side is under READABLE_SIDE also drawn(READABLE_SIDE) as PATH-readable.png, where the labels fit.
    Returns {"drawing": path} and, when written, {"readable": path}."""
    from PIL import Image

    Image.fromarray(drawn(0).permute(1, 2, 0).numpy()).save(path)
    files = {"drawing": str(path)}
    if min(image.shape[-2:]) < READABLE_SIDE:
        readable = path.with_name(f"{path.stem}-readable.png")
        Image.fromarray(drawn(READABLE_SIDE).permute(1, 2, 0).numpy()).save(readable)
        files["readable"] = str(readable)
    return files


def write_predictions(detector, images: list[str], out: Path, score_threshold: float) -> list[dict]:
    """For each image file: OUT/<name>.json (its detections) and OUT/<name>.png (the boxes drawn), and for
    small images OUT/<name>-readable.png (enlarged, labels readable).

    Returns one {"image", "json", "drawing", "detections"} (and "readable") entry per image.
    """
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path, name in zip(images, unique_stems(images)):  # two inputs may share a file name (other folders)
        image = detector.load_images([path])[0]
        detections = detector.predict([image], score_threshold)[0]
        entry = {"image": str(path), "width": int(image.shape[2]), "height": int(image.shape[1]),
                 "score_threshold": score_threshold, "detections": detections}
        atomic_write_text(out / f"{name}.json", json.dumps(entry, indent=2) + "\n")
        drawings = save_drawings(lambda side: draw_detections(image, detections, side), image, out / f"{name}.png")
        results.append({**entry, "json": str(out / f"{name}.json"), **drawings})
    return results


def evaluation_text(result: dict, split: str) -> str:
    """`cnnkit evaluate`: COCO mAP values on one line, then the per-class AP table."""
    return map_summary(result, split, [("mAP@[.5:.95]", "map"), ("mAP@.5", "map50"), ("mAP@.75", "map75"),
                                       ("recall@100", "mar100")])


def map_summary(result: dict, split: str, values: list[tuple[str, str]]) -> str:
    """One line of (label, result key) values with the image count and speed, then the per-class AP table."""
    from cnnkit.metrics.detection import coco_ap_table

    shown = "  ".join(f"{label} {result[key]:.4f}" for label, key in values)
    return (f"{split} {shown}  ({result['count']} images, {result['images_per_second']:.1f} images/s)\n"
            + coco_ap_table(result))


def predict_images(detector, images: list[str], options: PredictOptions, write=None) -> list[dict]:
    """`cnnkit predict`: JSON and a drawing per image (or what `write` writes) in options.out (default
    RUN_DIR/predictions)."""
    check_score_threshold(options.score_threshold)
    require_files(images)
    out = options.out or detector.run_dir / "predictions"
    return (write or write_predictions)(detector, images, Path(out), options.score_threshold)


def prediction_text(result: dict) -> str:
    shown = ", ".join(f"{d['class']} {d['score']:.2f}" for d in result["detections"]) or "nothing"
    readable = f" (enlarged: {result['readable']})" if "readable" in result else ""
    return f"{result['image']}: {shown} -> {result['drawing']}{readable}"


def check_score_threshold(value: float) -> None:
    if not 0 <= value <= 1:
        raise ConfigError(f"--score-threshold must be in [0, 1], got {value}")
