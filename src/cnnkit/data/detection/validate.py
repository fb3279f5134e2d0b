"""Checking annotations before training, so bad boxes fail loudly or get fixed visibly, never silently.

Two kinds of problem:

- Fixable, and common in real datasets (annotation tools let boxes spill over the border; rounding
  makes slivers): a box that crosses the image border is clipped to it, and a box that is then narrower
  or lower than `min_size` pixels (zero area, or inverted with x_max < x_min) is dropped. Each is counted
  and listed with its image file in the `ValidationReport`, which the detect task prints.
- Not fixable without guessing: a class index outside the class list (an unknown category), a
  coordinate that is not a finite number, a missing image file. These raise DataError naming the file
  and the object. (Malformed files and unknown category ids / names are caught earlier, by the readers,
  which know the file and line.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy

from cnnkit.data.detection.annotations import AnnotationSet
from cnnkit.errors import DataError

__all__ = ["ValidationReport", "validate_annotations"]

# Boxes that move less than this (in pixels) when clipped are not counted as clipped: YOLO's six decimals
# put a box that touches the border a few millionths of the size outside it.
_CLIP_TOLERANCE = 0.01


@dataclass
class ValidationReport:
    """What `validate_annotations` changed.

    Attributes:
        name: The split's name or source, for the summary.
        images, objects: Counts after validation.
        clipped: (image file, object index, box before, box after) per clipped box.
        dropped: (image file, object index, box after clipping) per dropped box.
    """

    name: str
    images: int = 0
    objects: int = 0
    clipped: list[tuple[str, int, list[float], list[float]]] = field(default_factory=list)
    dropped: list[tuple[str, int, list[float]]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.clipped or self.dropped)

    def summary(self, max_listed: int = 5) -> str:
        """A few lines: the counts, then the first `max_listed` clipped and dropped boxes with their files."""
        lines = [f"{self.name}: {self.images} images, {self.objects} objects"
                 + (f"; clipped {len(self.clipped)} boxes to the image border" if self.clipped else "")
                 + (f"; dropped {len(self.dropped)} boxes of (near) zero area" if self.dropped else "")]
        for file, index, before, after in self.clipped[:max_listed]:
            lines.append(f"  clipped {file} object {index}: {_box_text(before)} -> {_box_text(after)}")
        if len(self.clipped) > max_listed:
            lines.append(f"  ... and {len(self.clipped) - max_listed} more clipped")
        for file, index, box in self.dropped[:max_listed]:
            lines.append(f"  dropped {file} object {index}: {_box_text(box)}")
        if len(self.dropped) > max_listed:
            lines.append(f"  ... and {len(self.dropped) - max_listed} more dropped")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _box_text(box) -> str:
    return "[" + ", ".join(f"{value:g}" for value in box) + "]"


def validate_annotations(annotations: AnnotationSet, name: str | None = None, min_size: float = 1.0,
                         check_files: bool = True) -> tuple[AnnotationSet, ValidationReport]:
    """Clips boxes to their image, drops boxes smaller than `min_size` pixels, and checks the rest.

    Args:
        annotations: One split, as a reader returned it (not modified).
        name: What to call the split in the report (default: its source).
        min_size: Boxes narrower or lower than this many pixels after clipping are dropped (torchvision's
            SanitizeBoundingBoxes uses the same default, 1).
        check_files: Raise if an image file is missing.

    Returns:
        (the cleaned split, its report). Masks follow their boxes.

    Raises:
        DataError: For a missing image, a class index outside the class list or a non-finite coordinate,
            naming the image file and the object.
    """
    report = ValidationReport(name or annotations.source or "annotations")
    num_classes = len(annotations.classes)
    cleaned = []
    for image in annotations.images:
        if check_files and not image.file.is_file():
            raise DataError(f"image {image.file} is missing (it is listed in {annotations.source or 'the annotations'}). "
                            "Restore it or remove its annotation.")
        boxes, labels = image.boxes, image.labels
        unknown = numpy.flatnonzero((labels < 0) | (labels >= num_classes))
        if len(unknown):
            raise DataError(f"{image.file}: object {unknown[0]} has class index {labels[unknown[0]]}, but there are "
                            f"{num_classes} classes (0..{num_classes - 1}: {', '.join(annotations.classes)}). "
                            "Fix the annotation or the class list.")
        bad = numpy.flatnonzero(~numpy.isfinite(boxes).all(axis=1))
        if len(bad):
            raise DataError(f"{image.file}: object {bad[0]} has box {boxes[bad[0]].tolist()}, which is not finite numbers.")
        limits = numpy.array([image.width, image.height, image.width, image.height], dtype=numpy.float32)
        clipped = numpy.clip(boxes, 0, limits)
        for index in numpy.flatnonzero(numpy.abs(clipped - boxes).max(axis=1, initial=0) > _CLIP_TOLERANCE):
            report.clipped.append((str(image.file), int(index), boxes[index].tolist(), clipped[index].tolist()))
        keep = ((clipped[:, 2] - clipped[:, 0]) >= min_size) & ((clipped[:, 3] - clipped[:, 1]) >= min_size)
        for index in numpy.flatnonzero(~keep):
            report.dropped.append((str(image.file), int(index), clipped[index].tolist()))
        if keep.all() and numpy.array_equal(clipped, boxes):
            cleaned.append(image)  # nothing to fix: keep the reader's object
            continue
        result = image.select(keep)  # a copy, with the masks of the kept objects
        result.boxes = clipped[keep]
        cleaned.append(result)
    report.images, report.objects = len(cleaned), sum(len(image.labels) for image in cleaned)
    return AnnotationSet(annotations.classes, cleaned, annotations.source, annotations.format), report
