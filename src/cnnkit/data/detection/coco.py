"""COCO JSON: one file per split listing images, categories and annotations.

    {"images":      [{"id": 1, "file_name": "000000.png", "width": 128, "height": 128}, ...],
     "categories":  [{"id": 1, "name": "T-shirt/top"}, ...],
     "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [x, y, w, h], "area": 812,
                      "iscrowd": 0, "segmentation": [[x1, y1, x2, y2, ...]] or {"size": [h, w], "counts": "..."}}]}

``bbox`` is [x, y, width, height] in absolute pixels from the top-left corner. Category ids may be any
integers (COCO 2017 skips some between 1 and 90): they are sorted and numbered 0..K-1, so class k is
the k-th smallest id. The writer numbers categories 1..K (id = k + 1), the convention pycocotools and
most tools expect. Segmentations are kept as they are and decoded with pycocotools only when masks are
asked for. Crowd annotations (``iscrowd: 1``, COCO's regions of too many objects to box one by one)
are skipped. ``file_name`` is relative to an image folder, which is found next to the JSON file (see
`find_image_dir`) or given.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy

from cnnkit.data.detection.annotations import (
    AnnotationSet,
    ImageAnnotation,
    check_side,
    file_under,
    image_size,
    mask_to_rle,
    segmentation_to_rle,
)
from cnnkit.errors import DataError

__all__ = ["find_image_dir", "read_coco", "to_coco_dict", "write_coco"]


def _load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise DataError(f"COCO annotation file not found: {path}") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}). "
                        "Is the file complete?") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path}: {error}") from None
    except RecursionError:
        raise DataError(f"{path}: the JSON is nested too deeply to be a COCO annotation file.") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("categories"), list):
        raise DataError(f"{path}: not a COCO annotation file: expected a JSON object with 'images', 'categories' "
                        "and 'annotations' lists.")
    if not isinstance(data.get("annotations"), list):
        found = "no 'annotations' key" if "annotations" not in data else \
            f"'annotations': {str(data['annotations'])[:40]} (a {type(data['annotations']).__name__})"
        raise DataError(f"{path}: {found}; expected a list of objects (write \"annotations\": [] for images "
                        "without objects).")
    return data


def _is_id(value) -> bool:
    """COCO ids are integers (strings are accepted too); lists, dicts, floats and booleans are not ids."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def find_image_dir(json_path: Path, file_names: list[str]) -> Path:
    """The folder that COCO ``file_name`` entries are relative to.

    Tried in order, for ``ROOT/annotations/instances_SPLIT.json``: ROOT/SPLIT/images (the scenes layout),
    ROOT/SPLIT, ROOT/SPLIT2017 (COCO's own), ROOT/images/SPLIT, ROOT/images, ROOT, and the JSON's own folder.
    The first folder holding the first listed file wins; with no images listed, the JSON's folder.
    """
    folder = json_path.parent
    root = folder.parent if folder.name == "annotations" else folder
    split = json_path.stem.removeprefix("instances_")
    candidates = [root / split / "images", root / split, root / f"{split}2017", root / "images" / split,
                  root / "images", root, folder]
    if file_names:
        for candidate in candidates:
            if (candidate / file_names[0]).is_file():
                return candidate
        tried = "\n  ".join(str(candidate) for candidate in dict.fromkeys(candidates))
        raise DataError(f"{json_path}: image {file_names[0]!r} (the first listed) is in none of these folders:\n  {tried}\n"
                        "Pass the image folder explicitly (image_dir=...), or move the images next to the JSON file.")
    return folder


def _number(value, what: str, path: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{path}: {what[:120]} is {str(value)[:40]}, not a finite number.")
    return float(value)


def read_coco(json_path: str | Path, image_dir: str | Path | None = None, check_files: bool = True) -> AnnotationSet:
    """Reads one COCO annotation file.

    Args:
        json_path: The JSON file.
        image_dir: Folder that ``file_name`` is relative to; None finds it (see `find_image_dir`).
        check_files: Raise if an image file is missing.

    Returns:
        The split, images in the file's order, with classes named by the categories sorted by id.

    Raises:
        DataError: naming the file and entry, for invalid JSON, a missing field, an annotation whose
            category_id or image_id is not listed, a bbox that is not four numbers, or a missing image.
    """
    json_path = Path(json_path)
    data = _load_json(json_path)
    categories = {}
    for index, category in enumerate(data["categories"]):
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            raise DataError(f"{json_path}: categories[{index}] needs an 'id' and a 'name', got {str(category)[:100]}.")
        if not _is_id(category["id"]):
            raise DataError(f"{json_path}: categories[{index}] has id {str(category['id'])[:60]}; ids are integers.")
        categories[category["id"]] = str(category["name"])
    category_index = {category_id: k for k, category_id in enumerate(sorted(categories))}

    images, objects = {}, {}
    for index, entry in enumerate(data["images"]):
        missing = [key for key in ("id", "file_name") if not isinstance(entry, dict) or key not in entry]
        if missing:
            raise DataError(f"{json_path}: images[{index}] has no {' or '.join(missing)}: {str(entry)[:100]}.")
        if not _is_id(entry["id"]):
            raise DataError(f"{json_path}: images[{index}] has id {str(entry['id'])[:60]}; ids are integers.")
        file_under(Path("."), entry["file_name"], f"{json_path}: images[{index}]")  # stays inside the image folder
        if entry["id"] in images:
            raise DataError(f"{json_path}: images[{index}] repeats image id {entry['id']}; image ids must be unique.")
        images[entry["id"]] = entry
        objects[entry["id"]] = []
    for index, annotation in enumerate(data["annotations"]):
        where = f"{json_path}: annotations[{index}] (id {str(annotation.get('id'))[:40] if isinstance(annotation, dict) else None})"
        if not isinstance(annotation, dict) or "image_id" not in annotation or "category_id" not in annotation:
            raise DataError(f"{where} needs 'image_id', 'category_id' and 'bbox'.")
        for key in ("image_id", "category_id"):
            if not _is_id(annotation[key]):
                raise DataError(f"{where} has {key} {str(annotation[key])[:60]}; ids are integers.")
        if annotation["category_id"] not in category_index:
            raise DataError(f"{where} has category_id {annotation['category_id']!r}, which is not among the "
                            f"categories ({', '.join(map(str, sorted(categories)))}). Add the category or fix the id.")
        if annotation["image_id"] not in images:
            raise DataError(f"{where} has image_id {annotation['image_id']!r}, which is not among the images.")
        bbox = annotation.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise DataError(f"{where} has bbox {str(bbox)[:100]}; expected [x, y, width, height].")
        x, y, width, height = (_number(value, f"bbox {bbox!r} of annotations[{index}]", json_path) for value in bbox)
        if annotation.get("iscrowd", 0):
            continue  # a crowd region (too many objects to box one by one) is not an object to detect
        objects[annotation["image_id"]].append((annotation, (x, y, x + width, y + height)))

    image_dir = Path(image_dir) if image_dir is not None else find_image_dir(
        json_path, [entry["file_name"] for entry in images.values()])
    result = []
    for image_id, entry in images.items():
        file = file_under(image_dir, entry["file_name"], f"{json_path}: image id {image_id}")
        if check_files and not file.is_file():
            raise DataError(f"{json_path}: image id {image_id} names {entry['file_name']!r}, but {file} does not exist.")
        width, height = entry.get("width"), entry.get("height")
        if not isinstance(width, int) or not isinstance(height, int) or width < 1 or height < 1:
            width, height = image_size(file, f"{json_path}: image id {image_id}")
        for what, side in (("width", width), ("height", height)):
            check_side(side, what, f"{json_path}: image id {image_id}")
        annotations = objects[image_id]
        segmentations = [annotation.get("segmentation") for annotation, _ in annotations]
        # Masks only when every object has one; an image without objects has (zero) masks.
        has_masks = all(segmentation for segmentation in segmentations)
        result.append(ImageAnnotation(
            file=file, width=width, height=height,
            boxes=numpy.array([box for _, box in annotations], dtype=numpy.float32).reshape(-1, 4),
            labels=numpy.array([category_index[annotation["category_id"]] for annotation, _ in annotations],
                               dtype=numpy.int64),
            image_id=int(image_id) if isinstance(image_id, int) else len(result) + 1,
            segmentations=segmentations if has_masks else None))
    classes = [categories[category_id] for category_id in sorted(categories)]
    return AnnotationSet(classes, result, source=str(json_path), format="coco")


def to_coco_dict(annotations: AnnotationSet, image_dir: Path | None = None) -> dict:
    """The COCO JSON object of a split (categories numbered 1..K; masks as RLE or their own polygons).

    ``file_name`` is the image's path relative to `image_dir` (its bare name when None).
    """
    images, entries = [], []
    for position, image in enumerate(annotations.images):
        image_id = image.image_id if image.image_id > 0 else position + 1
        file_name = Path(os.path.relpath(image.file, image_dir)).as_posix() if image_dir is not None else image.file.name
        images.append({"id": image_id, "file_name": file_name, "width": int(image.width), "height": int(image.height)})
        segmentations = None
        if image.segmentations is not None:
            segmentations = image.segmentations
        elif image.instance_file is not None and len(image.labels):
            segmentations = [mask_to_rle(mask) for mask in image.instance_masks()]
        for index, (box, label) in enumerate(zip(image.boxes.tolist(), image.labels.tolist())):
            x_min, y_min, x_max, y_max = box
            bbox = [_round(x_min), _round(y_min), _round(x_max - x_min), _round(y_max - y_min)]
            entry = {"id": len(entries) + 1, "image_id": image_id, "category_id": label + 1, "bbox": bbox,
                     "area": _round(bbox[2] * bbox[3]), "iscrowd": 0}
            if segmentations is not None:
                entry["segmentation"] = segmentations[index]
                entry["area"] = _segmentation_area(segmentations[index], image)
            entries.append(entry)
    categories = [{"id": k + 1, "name": name, "supercategory": "object"} for k, name in enumerate(annotations.classes)]
    return {"images": images, "categories": categories, "annotations": entries}


def write_coco(annotations: AnnotationSet, json_path: str | Path, image_dir: Path | None = None) -> Path:
    """Writes a split as a COCO JSON file (see `to_coco_dict`); returns its path."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    # Compact separators: about half the size of an indented file.
    json_path.write_text(json.dumps(to_coco_dict(annotations, image_dir), separators=(",", ":")) + "\n", encoding="utf-8")
    return json_path


def _round(value: float):
    """Integers stay integers in the JSON; other values keep 3 decimals (a thousandth of a pixel)."""
    rounded = round(float(value), 3)
    return int(rounded) if rounded.is_integer() else rounded


def _segmentation_area(segmentation, image: ImageAnnotation) -> float:
    from pycocotools import mask as mask_utils

    return _round(mask_utils.area(segmentation_to_rle(segmentation, image.height, image.width)))
