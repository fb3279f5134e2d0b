"""The run report's detection part (TaskInfo.report_sections): test mAP, per-class AP, precision-recall curves
and drawn predictions beside the ground truth. Instance segmentation's report is this one with masks.

The evaluation is the predictor's own (`Detector.evaluate`: the same data, loader, task and meter), run here
so it can stop at the report's time budget, keep a few images to draw and keep the meter, whose COCOeval
gives the precision-recall curves (`DetectionMeter.precision_recall`).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from cnnkit.errors import ConfigError
from cnnkit.tasks.plots import (READABLE_SIDE, check_time, guarded, html_image, plot_image_grid, pyplot,
                                save_figure, table)

NUM_DRAWN = 4            # test images drawn with their predictions beside the ground truth
DRAW_THRESHOLD = 0.25    # predictions drawn from this score (`cnnkit predict`'s default)
MAX_DRAWN_OBJECTS = 20   # and at most this many per image, best first
MAX_CURVES = 20          # classes in the precision-recall plot


def report_sections(detector, out: Path, deadline: float, draw=None) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """(facts, sections) of a detection (or, with detector.masks, instance segmentation) run.

    Args:
        draw: (uint8 image, objects, bool masks (N, H, W) or None) -> the enlarged drawing; default: boxes.
    """
    from cnnkit.device import resolve_precision
    from cnnkit.engine.evaluate import evaluate_split
    from cnnkit.tasks.base import config_of
    from cnnkit.tasks.detection.data import make_detection_loader

    config = config_of(detector.record)
    data = detector.read_data(config, verbose=False, splits=("train", "val", "test"))
    split, annotations = ("test", data.test) if data.test is not None else ("val", data.val)
    if annotations is None:
        raise ConfigError(f"the dataset {config.data} has neither a test nor a validation split")
    task = detector.task_class(detector.model, detector.classes)
    loader = make_detection_loader(annotations, config, train=False, masks=detector.masks,
                                   eval_batch_size=detector.eval_batch_size)
    dtype = resolve_precision(config.precision, detector.device) if detector.autocast else None
    drawn: list[tuple[torch.Tensor, dict, dict]] = []  # (uint8 image, target, prediction)

    def keep(images, targets, result) -> bool:
        for image, target, prediction in zip(images, targets, result["detections"]):
            if len(drawn) < NUM_DRAWN:
                picture = image.detach().float().mul(255).round().clamp(0, 255).to(torch.uint8).cpu()
                drawn.append((picture, {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in target.items()},
                              prediction))
        return time.perf_counter() > deadline

    meter = evaluate_split(task, detector.model, loader, detector.device, dtype, on_batch=keep)
    metrics = meter.compute(per_class=True)
    masks = "segm" in meter.iou_types
    facts = {}
    if masks:
        facts[f"{split} mask mAP@.5"] = f"{metrics['mask_map50']:.4f}, mAP@[.5:.95] {metrics['mask_map']:.4f}"
    facts[f"{split} box mAP@.5"] = (f"{metrics['map50']:.4f}, mAP@[.5:.95] {metrics['map']:.4f} "
                                    f"({metrics['count']} images)")
    if metrics["count"] < len(annotations):
        facts["note"] = (f"time budget spent: evaluated {metrics['count']} of {len(annotations)} images; "
                         "`cnnkit report RUN_DIR --max-seconds 600` evaluates more")
    iou_type = "segm" if masks else "bbox"
    sections = [
        guarded("per-class", f"Per-class AP ({split})", lambda: _per_class(metrics, masks)),
        guarded("pr-curves", f"Precision-recall curves ({split})",
                lambda: _pr_curves(meter, iou_type, out)),
        guarded("predictions", f"Predictions and ground truth ({split})",
                lambda: _predictions(detector, drawn, draw or _draw_boxes, out, deadline)),
    ]
    return facts, sections


def _per_class(metrics: dict, masks: bool) -> str:
    keys = (["mask_ap50", "mask_ap"] if masks else []) + ["ap50", "ap"]
    names = {"mask_ap50": "mask AP@.5", "mask_ap": "mask AP@[.5:.95]", "ap50": "box AP@.5", "ap": "box AP@[.5:.95]"}
    rows = [[name] + [values.get(key) for key in keys] for name, values in metrics["per_class"].items()]
    return (table(["class"] + [names[key] for key in keys], rows)
            + f"<p>COCO AP (pycocotools) over {metrics['count']} images; - marks a class without ground truth "
            "in this split.</p>")


def _pr_curves(meter, iou_type: str, out: Path) -> str:
    from cnnkit.tasks.detection.output import PALETTE

    curves = meter.precision_recall(iou_type, 0.5)
    present = [(name, curve) for name, curve in curves.items() if curve is not None][:MAX_CURVES]
    if not present:
        return '<p class="missing">No class has ground truth in this split.</p>'
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(7.5, 4.8))
    for index, (name, (recall, precision)) in enumerate(present):
        axis.plot(recall, precision, color=PALETTE[index % len(PALETTE)], linestyle="-" if index < 10 else "--",
                  label=f"{name} (AP {precision.mean():.2f})")
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    what = "mask" if iou_type == "segm" else "box"
    axis.set_title(f"precision-recall per class at {what} IoU 0.5", fontsize=10)
    path = save_figure(figure, out / "pr-curves.png")
    return html_image(path, "precision-recall curves") + (
        "<p>COCOeval's interpolated precision at 101 recall levels (precision made monotonic); the mean of a "
        "curve is the class's AP@.5. A curve that drops to 0 stops at the highest recall the model reached.</p>")


def _objects(target: dict, classes: list[str]) -> list[dict]:
    return [{"class": classes[int(label)], "label": int(label), "box": [float(v) for v in box]}
            for box, label in zip(target["boxes"], target["labels"])]


def _predicted(prediction: dict, classes: list[str]) -> tuple[list[dict], torch.Tensor | None]:
    keep = (prediction["scores"] >= DRAW_THRESHOLD).nonzero().flatten()[:MAX_DRAWN_OBJECTS]
    objects = [{"class": classes[int(prediction["labels"][i])], "label": int(prediction["labels"][i]),
                "score": float(prediction["scores"][i]), "box": [float(v) for v in prediction["boxes"][i]]}
               for i in keep.tolist()]
    masks = prediction.get("masks")
    if masks is not None:
        masks = masks[keep]
        masks = (masks[:, 0] if masks.dim() == 4 else masks) >= 0.5
    return objects, masks


def _draw_boxes(image: torch.Tensor, objects: list[dict], masks) -> torch.Tensor:
    from cnnkit.tasks.detection.output import draw_detections

    return draw_detections(image, objects, READABLE_SIDE)


def _predictions(detector, drawn: list, draw, out: Path, deadline: float) -> str:
    check_time(deadline)
    if not drawn:
        return '<p class="missing">No evaluation image to draw.</p>'
    pictures, labels = [], []
    for index, (image, target, prediction) in enumerate(drawn):
        truth = _objects(target, detector.classes)
        predicted, predicted_masks = _predicted(prediction, detector.classes)
        truth_masks = target["masks"].bool() if "masks" in target else None
        pictures += [draw(image, truth, truth_masks), draw(image, predicted, predicted_masks)]
        labels += [f"image {index + 1}: ground truth ({len(truth)})",
                   f"image {index + 1}: predicted ({len(predicted)} scored >= {DRAW_THRESHOLD})"]
    path = plot_image_grid(pictures, labels, "ground truth (left) and predictions (right)",
                           out / "predictions.png", columns=2, tile_inches=4.0)
    return html_image(path, "predictions beside the ground truth") + (
        f"<p>Images enlarged to at least {READABLE_SIDE} pixels so labels stay readable; predictions scored below "
        f"{DRAW_THRESHOLD} are left out. <code>cnnkit predict RUN_DIR IMAGES</code> draws any image.</p>")
