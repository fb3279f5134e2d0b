"""YOLO txt: one file per image, one line per object, coordinates divided by the image size.

    3 0.421875 0.453125 0.265625 0.335938
    k cx       cy       w        h

``k`` is the 0-based class index (names in classes.txt, or `names` in an Ultralytics data.yaml),
(cx, cy) the box centre and (w, h) its size, each in [0, 1] as fractions of the image width or height.
An image without a label file, or with an empty one, has no objects (a "background" image).
Segmentation-style lines (``k x1 y1 x2 y2 ...`` polygons) are not read: use COCO for masks.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy

from cnnkit.data.detection.annotations import ImageAnnotation
from cnnkit.errors import DataError

__all__ = ["read_yolo_file", "yolo_text"]


def read_yolo_file(path: Path | None, file: Path, width: int, height: int, num_classes: int,
                   image_id: int = 0) -> ImageAnnotation:
    """Reads one YOLO label file (None or a missing file: no objects) for the image `file` of the given size.

    Raises:
        DataError: naming the file and line, for a line that is not five numbers or a class index
            outside 0..num_classes-1.
    """
    boxes, labels = [], []
    if path is not None and path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"cannot read YOLO label file {path}: {error}") from None
        for line_number, line in enumerate(text.splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 5:
                raise DataError(f"{path} line {line_number}: {len(fields)} values {line.strip()!r}; expected "
                                "'class cx cy w h' (polygon lines are not supported: use COCO for masks).")
            try:
                values = [float(value) for value in fields]
            except ValueError:
                values = []
            if not values or not all(math.isfinite(value) for value in values):
                raise DataError(f"{path} line {line_number}: {line.strip()[:100]!r} is not five numbers (finite ones: no nan or inf).")
            if not values[0].is_integer() or not 0 <= values[0] < num_classes:
                raise DataError(f"{path} line {line_number}: class {fields[0]} is not a class index 0..{num_classes - 1} "
                                "(see classes.txt).")
            center_x, center_y, box_width, box_height = values[1:]
            boxes.append([(center_x - box_width / 2) * width, (center_y - box_height / 2) * height,
                          (center_x + box_width / 2) * width, (center_y + box_height / 2) * height])
            labels.append(int(values[0]))
    return ImageAnnotation(file=file, width=width, height=height, boxes=numpy.array(boxes, dtype=numpy.float32),
                           labels=numpy.array(labels, dtype=numpy.int64), image_id=image_id)


def yolo_text(image: ImageAnnotation) -> str:
    """One image's objects as YOLO lines (six decimals: a millionth of the image size)."""
    lines = []
    for (x_min, y_min, x_max, y_max), label in zip(image.boxes.tolist(), image.labels.tolist()):
        lines.append(f"{label} {(x_min + x_max) / 2 / image.width:.6f} {(y_min + y_max) / 2 / image.height:.6f} "
                     f"{(x_max - x_min) / image.width:.6f} {(y_max - y_min) / image.height:.6f}")
    return "".join(line + "\n" for line in lines)
