"""The run report's instance segmentation part: detection's (cnnkit.tasks.detection.report) with mask mAP first,
the per-class table's mask AP and the drawings' masks."""

from __future__ import annotations

from pathlib import Path

import torch

from cnnkit.tasks.detection.report import report_sections as detection_sections
from cnnkit.tasks.instance.output import draw_instances
from cnnkit.tasks.plots import READABLE_SIDE


def _draw(image: torch.Tensor, objects: list[dict], masks: torch.Tensor | None) -> torch.Tensor:
    if masks is None:
        masks = torch.zeros((len(objects), *image.shape[-2:]), dtype=torch.bool)
    return draw_instances(image, objects, READABLE_SIDE, masks=masks)


def report_sections(segmenter, out: Path, deadline: float) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """(facts, sections): mask and box mAP, per-class AP, mask precision-recall curves, drawn masks."""
    return detection_sections(segmenter, out, deadline, draw=_draw)
