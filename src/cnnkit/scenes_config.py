"""The scenes benchmark's settings (`ScenesConfig`), apart from the generator in cnnkit.data.scenes.

This module imports nothing heavy (no numpy, no torch), so `cnnkit data make-scenes --help` can show the
defaults without loading the generator.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnkit.errors import DataError


@dataclass
class ScenesConfig:
    """Settings of the scenes benchmark (the defaults are `cnnkit data make-scenes OUT`).

    The defaults aim at a benchmark that is neither trivial nor out of reach of CPU training (issue 6 asks
    for 0.90 mAP@.5 from a YOLO-style detector in 20 CPU minutes). 128x128 canvases train fast. What limits
    mAP here is telling garments apart (shirt vs T-shirt vs pullover vs coat), and that improves with the
    number of garments seen, so the defaults put ~4 objects (2-6, of 28-54 pixels) on each of 4 000
    canvases: more garments per canvas cost a detector nothing per image. Measured (benchmarks/scenes_data.py):
    fastnet classifying the ground-truth crops at 32x32 reaches 83 % test accuracy (12 epochs) from 1-4
    objects on 3 000 canvases (7 500 garments; oracle-box mAP@.5 0.90) and 86 % (10 epochs) from these defaults
    (16 000 garments; oracle-box mAP@.5 0.93), the ceiling a detector with perfect boxes would face.
    """

    seed: int = 0  # one seed for everything; the same seed writes byte-identical files
    train: int = 4000  # canvases per split
    val: int = 500
    test: int = 500
    size: int = 128  # canvas height and width in pixels
    min_objects: int = 2  # objects per canvas, drawn uniformly from min_objects..max_objects
    max_objects: int = 6
    min_scale: float = 0.22  # an item's 28x28 frame is resized to this fraction of the canvas side ...
    max_scale: float = 0.42  # ... up to this one (28-54 pixels on a 128 canvas)
    min_visible: float = 0.5  # every annotated object keeps at least this fraction of its pixels visible

    def check(self) -> None:
        """Raises DataError for settings that cannot make a dataset."""
        problems = []
        if min(self.train, self.val, self.test) < 0 or self.train + self.val + self.test == 0:
            problems.append("--train/--val/--test must be 0 or more, and not all 0")
        if not 32 <= self.size <= 2048:
            problems.append(f"--size must be 32..2048, got {self.size}")
        if not 1 <= self.min_objects <= self.max_objects <= 50:
            problems.append(f"objects per canvas must satisfy 1 <= min ({self.min_objects}) <= max ({self.max_objects}) <= 50")
        if not 0.05 <= self.min_scale <= self.max_scale <= 1.0:
            problems.append(f"scales must satisfy 0.05 <= min ({self.min_scale}) <= max ({self.max_scale}) <= 1")
        if not 0.3 <= self.min_visible <= 1.0:
            problems.append(f"min_visible must be 0.3..1 (objects less than 30% visible are never kept), got {self.min_visible}")
        if problems:
            raise DataError("cannot make scenes: " + "; ".join(problems))
