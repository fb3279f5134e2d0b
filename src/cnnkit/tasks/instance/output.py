"""What instance runs write and print: RLE masks in JSON, an instance-id PNG and an overlay per image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy
import torch

from cnnkit.files import atomic_write_text
from cnnkit.tasks.base import PredictOptions, unique_stems
from cnnkit.tasks.detection.output import PALETTE, draw_detections, map_summary, save_drawings
from cnnkit.tasks.plots import upscale
from cnnkit.tasks.detection.output import predict_images as predict_detections
from cnnkit.tasks.instance.task import MASK_THRESHOLD


def decode_masks(objects: list[dict], height: int, width: int) -> numpy.ndarray:
    """The objects' RLE masks decoded with pycocotools: uint8 (N, H, W)."""
    import warnings

    from pycocotools import mask as mask_utils

    if not objects:
        return numpy.zeros((0, height, width), dtype=numpy.uint8)
    rles = [{"size": o["mask"]["size"], "counts": o["mask"]["counts"].encode("ascii")} for o in objects]
    with warnings.catch_warnings():  # pycocotools' Cython decode predates NumPy 2's __array__(copy=) protocol
        warnings.filterwarnings("ignore", message="__array__ implementation", category=DeprecationWarning)
        return numpy.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))  # (H, W, N) -> (N, H, W)


def instance_id_mask(objects: list[dict], height: int, width: int) -> numpy.ndarray:
    """uint8 (H, W): 0 background, i for the i-th object (1-based); higher scores painted last (on top)."""
    masks = decode_masks(objects, height, width)
    ids = numpy.zeros((height, width), dtype=numpy.uint8)
    for index in sorted(range(len(objects)), key=lambda i: objects[i]["score"])[-255:]:
        ids[masks[index].astype(bool)] = index + 1
    return ids


def draw_instances(image: torch.Tensor, objects: list[dict], min_side: int = 0,
                   masks: torch.Tensor | None = None) -> torch.Tensor:
    """The uint8 (3, H, W) image with each object's mask tinted (alpha 0.5) and its box and label drawn.

    Args:
        objects: As `predict` gives them (RLE "mask"), or with `masks` given: bool (N, H, W), one per object.
        min_side: Enlarge the image, masks and boxes first until the shorter side reaches this (readable labels).
    """
    from torchvision.utils import draw_segmentation_masks

    if masks is None:
        masks = torch.from_numpy(decode_masks(objects, image.shape[1], image.shape[2])).bool()
    picture, factor = upscale(image, min_side) if min_side else (image, 1)
    if not objects:
        return picture
    masks = upscale(masks, min_side)[0] if factor > 1 else masks
    colours = [PALETTE[o["label"] % len(PALETTE)] for o in objects]
    tinted = draw_segmentation_masks(picture, masks.bool(), alpha=0.5, colors=colours)
    return draw_detections(tinted, [{**o, "box": [v * factor for v in o["box"]]} for o in objects])


def write_predictions(segmenter, images: list[str], out: Path, score_threshold: float) -> list[dict]:
    """For each image: OUT/NAME.json (objects with RLE masks), OUT/NAME-mask.png (instance ids),
    OUT/NAME-overlay.png (masks, boxes and labels drawn) and for small images OUT/NAME-overlay-readable.png
    (enlarged, labels readable). Returns one entry per image."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    results = []
    for path, name in zip(images, unique_stems(images)):
        image = segmenter.load_images([path])[0]
        objects = segmenter.predict([image], score_threshold)[0]
        height, width = int(image.shape[1]), int(image.shape[2])
        entry = {"image": str(path), "width": width, "height": height, "score_threshold": score_threshold,
                 "mask_threshold": MASK_THRESHOLD, "objects": objects}
        files = {"json": out / f"{name}.json", "mask": out / f"{name}-mask.png", "overlay": out / f"{name}-overlay.png"}
        atomic_write_text(files["json"], json.dumps(entry, indent=2) + "\n")
        Image.fromarray(instance_id_mask(objects, height, width), mode="L").save(files["mask"])
        drawings = save_drawings(lambda side: draw_instances(image, objects, side), image, files["overlay"])
        results.append({**entry, **{key: str(value) for key, value in files.items()},
                        **({"readable": drawings["readable"]} if "readable" in drawings else {})})
    return results


def evaluation_text(result: dict, split: str) -> str:
    """`cnnkit evaluate`: mask and box mAP and the masks' semantic mIoU on one line, then the per-class table."""
    values = [("mask mAP@.5", "mask_map50"), ("mask mAP@[.5:.95]", "mask_map"), ("box mAP@.5", "map50"),
              ("box mAP@[.5:.95]", "map")]
    return map_summary(result, split, values + [("semantic mIoU", "semantic_miou")] * ("semantic_miou" in result))


def predict_images(segmenter, images: list[str], options: PredictOptions) -> list[dict]:
    """`cnnkit predict`: JSON, instance-id PNG and overlay per image in options.out (default RUN_DIR/predictions)."""
    return predict_detections(segmenter, images, options, write=write_predictions)


def prediction_text(result: dict) -> str:
    shown = ", ".join(f"{o['class']} {o['score']:.2f}" for o in result["objects"]) or "nothing"
    readable = f" (enlarged: {result['readable']})" if "readable" in result else ""
    return f"{result['image']}: {shown} -> {result['mask']}, {result['overlay']}{readable}"
