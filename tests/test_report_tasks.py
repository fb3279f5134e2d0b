"""The report of detect, segment, instance and embed runs (each task's `report_sections`), and the per-layer
parameters of models whose layers sit in containers they never call.

Runs are trained in-process for one epoch on tiny data (the patterns of test_detection_cli.py, test_embed.py
and test_segmentation_cli.py); the numbers are checked for form, not quality.
"""

from __future__ import annotations

import pytest


def test_summary_counts_trunk_convolutions_and_rows_add_up_to_the_total():
    """yolo_fastnet's trunk stages sit in a ModuleDict the trunk never calls: the convolutions own their weights."""
    from cnnkit.inspect.summary import summary
    from cnnkit.registry import create_model

    model = create_model("yolo_fastnet", num_classes=3, input_size=64)
    result = summary(model, input_size=(3, 64, 64))
    rows = {row.name: row for row in result.rows}
    stem = rows["trunk.stages.stem.0"]
    assert stem.type == "Conv2d" and stem.parameters == sum(p.numel() for p in model.trunk.stages.stem[0].parameters())
    assert all(row.parameters > 0 for row in result.rows if row.type == "Conv2d")
    assert sum(row.parameters for row in result.rows) == result.totals.parameters
