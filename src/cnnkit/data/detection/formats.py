"""Finding, reading and writing whole detection datasets in any of the three formats.

`detect_layout(path)` recognises these layouts (checked in this order) and names their splits:

    split folders (the scenes benchmark; what `write_split` and `cnnkit data convert` write)
        ROOT/classes.txt, ROOT/{train,val,test}/images/*.png and, per format,
        COCO ROOT/annotations/instances_SPLIT.json, VOC ROOT/SPLIT/annotations/*.xml, YOLO ROOT/SPLIT/labels/*.txt;
        optional ROOT/SPLIT/instances/*.png (instance ids) and ROOT/SPLIT/masks/*.png (class index + 1)
    Pascal VOC  ROOT/Annotations/*.xml, ROOT/JPEGImages/, splits from ROOT/ImageSets/Main/SPLIT.txt
    YOLO        ROOT/images/SPLIT/ + ROOT/labels/SPLIT/ (Ultralytics), or ROOT/images/ + ROOT/labels/ (one split)
    COCO        ROOT/annotations/*.json or ROOT/*.json (split = file name without "instances_"), or one .json
                file; images in ROOT/SPLIT/images, ROOT/SPLIT, ROOT/SPLIT2017, ROOT/images[/SPLIT] or ROOT

A layout without named splits has one split called "train"; the detect task takes its validation
images from it. When a split-folder dataset carries several formats, COCO is read (one file, and it holds
the masks), then VOC, then YOLO, unless `format` picks one. Class names come from COCO's categories,
else ROOT/classes.txt, else an Ultralytics data.yaml ``names``, else (VOC only) the sorted object names.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy

from cnnkit.data.detection.annotations import AnnotationSet, ImageAnnotation, image_size
from cnnkit.data.detection.coco import read_coco, write_coco
from cnnkit.data.detection.voc import read_voc_file, voc_class_names, voc_xml
from cnnkit.data.detection.yolo import read_yolo_file, yolo_text
from cnnkit.data.images import is_image_file
from cnnkit.errors import DataError

__all__ = ["FORMATS", "DatasetLayout", "convert_dataset", "detect_layout", "read_class_names", "read_split", "read_splits", "write_split"]

FORMATS = ("coco", "voc", "yolo")
LAYOUTS_HELP = (
    "Accepted detection dataset layouts:\n"
    "  - split folders: ROOT/SPLIT/images/ with ROOT/annotations/instances_SPLIT.json (COCO), ROOT/SPLIT/annotations/*.xml\n"
    "    (VOC) or ROOT/SPLIT/labels/*.txt (YOLO), and ROOT/classes.txt (what `cnnkit data make-scenes` writes)\n"
    "  - Pascal VOC: ROOT/Annotations/*.xml and ROOT/JPEGImages/ (splits in ROOT/ImageSets/Main/SPLIT.txt)\n"
    "  - YOLO: ROOT/images/[SPLIT/] and ROOT/labels/[SPLIT/] with ROOT/classes.txt or ROOT/data.yaml\n"
    "  - COCO: ROOT/annotations/*.json or ROOT/*.json (one per split) with the images beside them, or one .json file"
)


def read_class_names(path: Path) -> list[str]:
    """Class names from classes.txt (one per line) or an Ultralytics data.yaml (``names`` list or dict)."""
    try:
        if path.suffix in (".yaml", ".yml"):
            from cnnkit.safe_yaml import load_file

            content = load_file(path, DataError) or {}  # no aliases (a 1 kB data.yaml could expand to gigabytes)
            if not isinstance(content, dict):
                raise DataError(f"{path}: expected a mapping with a 'names' list, e.g. names: [cat, dog].")
            names = content.get("names")
            if isinstance(names, dict):  # {0: person, 1: car}
                if not all(isinstance(key, int) for key in names):
                    raise DataError(f"{path}: 'names' keys must be class numbers (0: cat, 1: dog).")
                names = [names[key] for key in sorted(names)]
            if not isinstance(names, list):
                raise DataError(f"{path}: no 'names' list; expected e.g. names: [cat, dog].")
            if not all(isinstance(name, (str, int, float)) for name in names):
                raise DataError(f"{path}: every entry of 'names' must be a class name, e.g. names: [cat, dog].")
            names = [str(name) for name in names]
            if not names or not all(names):
                raise DataError(f"{path}: 'names' must list at least one class name, none of them empty.")
            return names
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read class names from {path}: {error}") from None
    except DataError:
        raise
    except Exception as error:  # yaml.YAMLError; yaml is imported lazily
        raise DataError(f"{path}: not valid YAML: {error}") from None
    while names and not names[-1]:
        names.pop()
    if not names or not all(names):
        raise DataError(f"{path}: expected one class name per line, without blank lines.")
    return names


@dataclass
class DatasetLayout:
    """Where a detection dataset's files are.

    Attributes:
        root: The dataset folder (or the COCO .json file given).
        layout: "split-folders", "voc", "yolo" or "coco".
        format: The annotation format read: "coco", "voc" or "yolo".
        splits: Split name -> what that split needs to be read (a JSON path, or folders and file lists).
        formats: Every format the dataset carries (split folders may carry all three).
    """

    root: Path
    layout: str
    format: str
    splits: dict[str, dict] = field(default_factory=dict)
    formats: tuple[str, ...] = ()

    def class_names(self) -> list[str] | None:
        """Class names from classes.txt / data.yaml beside the data, or None (COCO has its own)."""
        folder = self.root if self.root.is_dir() else self.root.parent
        for candidate in (folder / "classes.txt", folder / "data.yaml", folder / "classes.names", folder / "obj.names"):
            if candidate.is_file():
                return read_class_names(candidate)
        return None

    def read(self, split: str, check_files: bool = True) -> AnnotationSet:
        """Reads one split into memory (see `read_split`)."""
        if split not in self.splits:
            raise DataError(f"{self.root} has no split {split!r}; it has {', '.join(self.splits)}.")
        info = self.splits[split]
        if self.format == "coco":
            annotations = read_coco(info["json"], info.get("images"), check_files=check_files)
            classes_txt = self.class_names() if self.layout == "split-folders" else None
            if classes_txt is not None and classes_txt != annotations.classes:
                raise DataError(f"{info['json']}: categories ({', '.join(annotations.classes)}) differ from "
                                f"{self.root / 'classes.txt'} ({', '.join(classes_txt)}).")
        elif self.format == "voc":
            classes = self.class_names() or self._voc_classes()
            images = [read_voc_file(xml, classes, info["images"], number, check_files)
                      for number, xml in enumerate(info["files"], start=1)]
            annotations = AnnotationSet(classes, images)
        else:
            annotations = self._read_yolo(info)
        annotations.source, annotations.format = str(info.get("json", info.get("labels", self.root))), self.format
        if self.layout == "split-folders":
            _attach_mask_files(annotations, self.root / split)
        return annotations

    def _voc_classes(self) -> list[str]:
        names = {name for info in self.splits.values() for xml in info["files"] for name in voc_class_names(xml)}
        if not names:
            raise DataError(f"{self.root}: no objects in any VOC file and no classes.txt; add classes.txt.")
        return sorted(names)

    def _read_yolo(self, info: dict) -> AnnotationSet:
        classes = self.class_names()
        if classes is None:
            raise DataError(f"{self.root}: YOLO labels need class names: add classes.txt (one name per line, "
                            "line k names class k) or a data.yaml with 'names'.")
        images_dir, labels_dir = info["images"], info["labels"]
        files = sorted(path for path in images_dir.iterdir() if is_image_file(path))
        stems = {path.stem for path in files}
        orphans = sorted(path for path in labels_dir.glob("*.txt") if path.stem not in stems) if labels_dir.is_dir() else []
        if orphans:
            raise DataError(f"{orphans[0]} has no image {orphans[0].stem}.* in {images_dir} "
                            f"({len(orphans)} label files without images). Restore the images or remove the labels.")
        images = []
        for number, file in enumerate(files, start=1):
            width, height = image_size(file, str(labels_dir / f"{file.stem}.txt"))
            images.append(read_yolo_file(labels_dir / f"{file.stem}.txt", file, width, height, len(classes), number))
        return AnnotationSet(classes, images)


def _attach_mask_files(annotations: AnnotationSet, split_dir: Path) -> None:
    """Sets instance_file / semantic_file from SPLIT/instances/ and SPLIT/masks/ where they exist."""
    for folder, attribute in (("instances", "instance_file"), ("masks", "semantic_file")):
        if not (split_dir / folder).is_dir():
            continue
        available = {path.stem: path for path in (split_dir / folder).glob("*.png")}
        for image in annotations.images:
            path = available.get(image.file.stem)
            if path is not None:
                setattr(image, attribute, path)


def _split_folder_formats(root: Path, split: str) -> list[str]:
    formats = []
    if (root / "annotations" / f"instances_{split}.json").is_file():
        formats.append("coco")
    if (root / split / "annotations").is_dir():
        formats.append("voc")
    if (root / split / "labels").is_dir():
        formats.append("yolo")
    return formats


def _ordered(splits: dict) -> dict:
    """train, val, test first (in that order), then any other split names alphabetically."""
    known = ("train", "trainval", "val", "test")
    return dict(sorted(splits.items(), key=lambda item: (known.index(item[0]) if item[0] in known else len(known), item[0])))


def _choose(available: list[str], wanted: str | None, where: Path) -> str:
    if wanted is None:
        return available[0]
    if wanted not in available:
        raise DataError(f"{where} has no {wanted.upper()} annotations (it has: {', '.join(available) or 'none'}).")
    return wanted


def detect_layout(path: str | Path, format: str | None = None) -> DatasetLayout:
    """Recognises a detection dataset's layout and splits (see the module docstring).

    Args:
        path: A dataset folder, or a COCO .json file.
        format: "coco", "voc" or "yolo" to read that format when the dataset carries several; None picks.

    Raises:
        DataError: If the path does not exist or matches no layout (the message lists the layouts).
    """
    root = Path(path).expanduser()
    if format is not None and format not in FORMATS:
        raise DataError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    if root.is_file():
        if root.suffix.lower() != ".json":
            raise DataError(f"{root}: a single file must be a COCO .json file.\n{LAYOUTS_HELP}")
        _choose(["coco"], format, root)
        return DatasetLayout(root, "coco", "coco", {"train": {"json": root}}, ("coco",))
    if not root.is_dir():
        raise DataError(f"detection dataset {root}: no such file or folder.\n{LAYOUTS_HELP}")

    split_dirs = sorted(child.name for child in root.iterdir() if (child / "images").is_dir())
    if split_dirs:
        found = {split: _split_folder_formats(root, split) for split in split_dirs}
        splits = [split for split in split_dirs if found[split]]
        if splits:
            formats = tuple(name for name in FORMATS if all(name in found[split] for split in splits))
            chosen = _choose(list(formats), format, root)
            result = {}
            for split in splits:
                images = root / split / "images"
                if chosen == "coco":
                    result[split] = {"json": root / "annotations" / f"instances_{split}.json", "images": images}
                elif chosen == "voc":
                    result[split] = {"images": images, "files": sorted((root / split / "annotations").glob("*.xml"))}
                else:
                    result[split] = {"images": images, "labels": root / split / "labels"}
            return DatasetLayout(root, "split-folders", chosen, _ordered(result), formats)

    if (root / "Annotations").is_dir() and (root / "JPEGImages").is_dir():
        _choose(["voc"], format, root)
        every = sorted((root / "Annotations").glob("*.xml"))
        lists = sorted((root / "ImageSets" / "Main").glob("*.txt")) if (root / "ImageSets" / "Main").is_dir() else []
        lists = [path for path in lists if "_" not in path.stem]  # skip per-class lists such as cat_train.txt
        result = {}
        for list_file in lists:
            ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
            result[list_file.stem] = {"images": root / "JPEGImages", "files": [root / "Annotations" / f"{id_}.xml" for id_ in ids]}
        return DatasetLayout(root, "voc", "voc", _ordered(result) or {"train": {"images": root / "JPEGImages", "files": every}}, ("voc",))

    if (root / "images").is_dir() and (root / "labels").is_dir():
        _choose(["yolo"], format, root)
        nested = sorted(child.name for child in (root / "images").iterdir() if child.is_dir())
        if nested:
            result = {split: {"images": root / "images" / split, "labels": root / "labels" / split} for split in nested}
        else:
            result = {"train": {"images": root / "images", "labels": root / "labels"}}
        return DatasetLayout(root, "yolo", "yolo", _ordered(result), ("yolo",))

    jsons = sorted((root / "annotations").glob("*.json")) if (root / "annotations").is_dir() else []
    jsons = jsons or sorted(root.glob("*.json"))  # ROOT/SPLIT.json beside an image folder
    if jsons:
        _choose(["coco"], format, root)
        result = {path.stem.removeprefix("instances_"): {"json": path} for path in jsons}
        return DatasetLayout(root, "coco", "coco", _ordered(result), ("coco",))
    raise DataError(f"{root} is not a detection dataset this version understands.\n{LAYOUTS_HELP}")


def read_split(path: str | Path, split: str, format: str | None = None, check_files: bool = True) -> AnnotationSet:
    """Reads one split of a detection dataset in any layout (see `detect_layout`).

    Boxes are returned as written; run `validate_annotations` before training to clip and drop bad ones.
    """
    return detect_layout(path, format).read(split, check_files=check_files)


def read_splits(path: str | Path, format: str | None = None) -> dict[str, AnnotationSet]:
    """Reads every split of a detection dataset: {split name: AnnotationSet}."""
    layout = detect_layout(path, format)
    return {split: layout.read(split) for split in layout.splits}


def _place_image(source: Path, destination: Path) -> None:
    """Hard-links an image into the new dataset (no copy on the same disk), else copies it."""
    if destination.exists():
        if destination.samefile(source):
            return
        destination.unlink()
    try:
        os.link(source, destination)
    except OSError:
        shutil.copyfile(source, destination)


def write_split(annotations: AnnotationSet, root: str | Path, split: str, format: str) -> None:
    """Writes one split in the split-folder layout, in one format, with its images (linked or copied).

    Also writes ROOT/classes.txt and, when the split has masks, SPLIT/instances/*.png (instance ids; where
    masks overlap, the later object wins) and a copy of any SPLIT/masks/*.png semantic masks.

    Raises:
        DataError: If two images of the split share a file name (flattened into one images/ folder).
    """
    from PIL import Image

    if format not in FORMATS:
        raise DataError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    root = Path(root)
    images_dir = root / split / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in annotations.classes), encoding="utf-8")
    seen: dict[str, Path] = {}
    placed = []
    with_masks = annotations.has_masks
    for image in annotations.images:
        if image.file.name in seen:
            raise DataError(f"{image.file} and {seen[image.file.name]} have the same file name; they cannot share "
                            f"{images_dir}. Rename one of them.")
        seen[image.file.name] = image.file
        destination = images_dir / image.file.name
        _place_image(image.file, destination)
        placed.append((image, destination))
        stem = image.file.stem
        if format == "voc":
            (root / split / "annotations").mkdir(exist_ok=True)
            (root / split / "annotations" / f"{stem}.xml").write_text(voc_xml(image, annotations.classes), encoding="utf-8")
        elif format == "yolo":
            (root / split / "labels").mkdir(exist_ok=True)
            (root / split / "labels" / f"{stem}.txt").write_text(yolo_text(image), encoding="utf-8")
        if with_masks and format != "coco":
            (root / split / "instances").mkdir(exist_ok=True)
            ids = numpy.zeros((image.height, image.width), dtype=numpy.uint8)
            for number, mask in enumerate(image.instance_masks(), start=1):
                ids[mask > 0] = number
            Image.fromarray(ids, mode="L").save(root / split / "instances" / f"{stem}.png")
        if image.semantic_file is not None:
            (root / split / "masks").mkdir(exist_ok=True)
            _place_image(image.semantic_file, root / split / "masks" / f"{stem}.png")
    if format == "coco":
        moved = AnnotationSet(annotations.classes, [_with_file(image, destination) for image, destination in placed])
        write_coco(moved, root / "annotations" / f"instances_{split}.json", image_dir=images_dir)


def _with_file(image: ImageAnnotation, file: Path) -> ImageAnnotation:
    import dataclasses

    return dataclasses.replace(image, file=file)


def convert_dataset(source: str | Path, destination: str | Path, to: str, source_format: str | None = None
                    ) -> dict[str, tuple[int, int]]:
    """Converts a detection dataset in any layout to the split-folder layout in format `to`.

    Boxes, labels and masks are carried over as they are (no clipping: run `validate_annotations`, or
    `cnnkit data check`, for that); images are hard-linked where possible, else copied.

    Returns:
        {split: (images, objects)} written.

    Raises:
        DataError: If `destination` is not empty, or the source cannot be read.
    """
    if to not in FORMATS:
        raise DataError(f"--to must be one of {', '.join(FORMATS)}, got {to!r}")
    destination = Path(destination)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise DataError(f"{destination} already exists and is not an empty folder; choose a new folder.")
    layout = detect_layout(source, source_format)
    written = {}
    for split in layout.splits:
        annotations = layout.read(split)
        write_split(annotations, destination, split, to)
        written[split] = (len(annotations), annotations.num_objects)
    return written
