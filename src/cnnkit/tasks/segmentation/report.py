"""The run report's segmentation part (TaskInfo.report_sections): test mIoU and pixel accuracy, per-class IoU and
Dice, and predicted masks beside the ground truth.

The evaluation is the predictor's own (`Segmenter.evaluate`: every mask scored at its own resolution, the same
task and meter), run here so it stops at the report's time budget.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy
import torch

from cnnkit.errors import ConfigError
from cnnkit.tasks.plots import READABLE_SIDE, check_time, guarded, html_image, plot_image_grid, table, upscale

NUM_DRAWN = 4  # images drawn: image, true mask, predicted mask


def report_sections(segmenter, out: Path, deadline: float) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """(facts, sections) of a segmentation run: mIoU, pixel accuracy, per-class IoU/Dice, drawn masks."""
    from cnnkit.data.segmentation import SegmentationDataset, SegmentationLoader, check_masks
    from cnnkit.device import resolve_precision
    from cnnkit.engine.evaluate import evaluate_split
    from cnnkit.tasks.base import config_of
    from cnnkit.tasks.segmentation.data import prepare_data
    from cnnkit.tasks.segmentation.predictor import FullResolutionEvaluation, _same_size_batches

    config = config_of(segmenter.record)
    data = prepare_data(config, segmenter.preprocessing, check=False)
    split, files = ("test", data.test) if data.test is not None else ("val", data.val)
    if files is None:
        raise ConfigError(f"the dataset {config.data} has neither a test nor a validation split")
    check_masks(files, segmenter.ignore_index)
    dataset = SegmentationDataset(files, segmenter.preprocessing.channels, None, segmenter.ignore_index)
    loader = SegmentationLoader(dataset, config.batch_size, train=False, collate_fn=_same_size_batches)
    groups = (group for batch in loader for group in batch)
    images = 0

    def count(batch, masks, result) -> bool:
        nonlocal images
        images += len(masks)
        return time.perf_counter() > deadline

    meter = evaluate_split(FullResolutionEvaluation(segmenter), segmenter.model, groups, segmenter.device,
                           resolve_precision(config.precision, segmenter.device), on_batch=count)
    metrics = meter.compute(per_class=True)
    facts = {f"{split} mIoU": f"{metrics['miou']:.4f} ({images} images, each mask at its own resolution)",
             "pixel accuracy": f"{metrics['pixel_accuracy']:.4f}, mean Dice {metrics['mean_dice']:.4f}"}
    if images < len(files):
        facts["note"] = (f"time budget spent: evaluated {images} of {len(files)} images; "
                         "`cnnkit report RUN_DIR --max-seconds 600` evaluates more")
    sections = [guarded("per-class", f"Per-class IoU and Dice ({split})", lambda: _per_class(metrics)),
                guarded("masks", f"Predicted masks ({split})", lambda: _masks(segmenter, dataset, out, deadline))]
    return facts, sections


def _per_class(metrics: dict) -> str:
    rows = [[name, values["iou"], values["dice"], values["pixels"]] for name, values in metrics["per_class"].items()]
    return (table(["class", "IoU", "Dice", "true pixels"], rows)
            + f"<p>mIoU {metrics['miou']:.4f}, pixel accuracy {metrics['pixel_accuracy']:.4f}, mean Dice "
            f"{metrics['mean_dice']:.4f} over {metrics['pixels']:,} labelled pixels; - marks a class that is "
            "neither in the masks nor predicted.</p>")


def _coloured(mask: torch.Tensor, colours: numpy.ndarray, ignore_index: int) -> torch.Tensor:
    """int64 (H, W) class indices -> uint8 (3, H, W) in the VOC palette (ignored pixels white)."""
    indices = mask.clone()
    ignored = indices == ignore_index
    indices[ignored] = 0
    picture = torch.from_numpy(colours)[indices.clamp(0, len(colours) - 1)].permute(2, 0, 1).contiguous()
    picture[:, ignored] = 255
    return picture


def _masks(segmenter, dataset, out: Path, deadline: float) -> str:
    from cnnkit.tasks.segmentation.output import overlay, palette

    check_time(deadline)
    colours = palette(len(segmenter.classes))
    pictures, labels = [], []
    for index in range(min(NUM_DRAWN, len(dataset))):
        image, truth = dataset[index]  # float (C, H, W) in [0, 1], int64 (H, W)
        predicted = segmenter.predict([image])[0]
        picture = image.mul(255).round().clamp(0, 255).to(torch.uint8)
        picture = picture.expand(3, -1, -1) if picture.shape[0] == 1 else picture[:3]
        name = dataset.files.pairs[index][0].name
        shown = [picture, _coloured(truth, colours, segmenter.ignore_index),
                 overlay(picture, predicted, colours)]
        pictures += [upscale(p, READABLE_SIDE)[0] for p in shown]
        labels += [name, "true mask", "predicted (overlay)"]
    path = plot_image_grid(pictures, labels, "image, true mask, predicted mask", out / "masks.png", columns=3,
                           tile_inches=3.0)
    legend = ", ".join(f'<span style="color: rgb{tuple(int(v) for v in colours[k])}">&#9632;</span> {name}'
                       for k, name in enumerate(segmenter.classes))
    return html_image(path, "predicted masks beside the ground truth") + f"<p>Colours: {legend}.</p>"
