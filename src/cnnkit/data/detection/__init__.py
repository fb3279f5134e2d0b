"""Object detection data: COCO, Pascal VOC and YOLO annotations in one in-memory model.

    read      detect_layout / read_split / read_splits   any layout -> {split: AnnotationSet}
    check     validate_annotations                       clip boxes, drop empty ones, report; DataError for the rest
    write     write_split, convert_dataset               the split-folder layout in any of the three formats
    train     DetectionDataset, collate_detection, detection_transforms

Every reader returns boxes as float32 (N, 4) absolute-pixel xyxy and labels as int64 0-based class
indices (see annotations.py for the conventions of each format).
"""

from cnnkit.data.detection.annotations import AnnotationSet, ImageAnnotation
from cnnkit.data.detection.coco import read_coco, to_coco_dict, write_coco
from cnnkit.data.detection.formats import (
    FORMATS,
    DatasetLayout,
    convert_dataset,
    detect_layout,
    read_class_names,
    read_split,
    read_splits,
    write_split,
)
from cnnkit.data.detection.dataset import DetectionDataset, collate_detection
from cnnkit.data.detection.transforms import AUGMENT_PRESETS, DetectionAugment, detection_transforms
from cnnkit.data.detection.validate import ValidationReport, validate_annotations

__all__ = [
    "AUGMENT_PRESETS",
    "AnnotationSet",
    "DatasetLayout",
    "DetectionAugment",
    "DetectionDataset",
    "FORMATS",
    "ImageAnnotation",
    "ValidationReport",
    "collate_detection",
    "convert_dataset",
    "detect_layout",
    "detection_transforms",
    "read_class_names",
    "read_coco",
    "read_split",
    "read_splits",
    "to_coco_dict",
    "write_coco",
    "validate_annotations",
    "write_split",
]
