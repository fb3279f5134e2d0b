"""Pascal VOC XML: one file per image, objects named by class.

    <annotation>
      <filename>000000.png</filename>
      <size><width>128</width><height>128</height><depth>3</depth></size>
      <object>
        <name>Sneaker</name>
        <difficult>0</difficult>
        <bndbox><xmin>12</xmin><ymin>40</ymin><xmax>57</xmax><ymax>71</ymax></bndbox>
      </object>
    </annotation>

Coordinates are read and written as they are, as pixel edges (xmax = xmin + width). The original VOC
files count pixels from 1 with xmax inclusive, which puts their boxes half a pixel to the lower right in
this convention; torchvision's VOC dataset reads them the same way, and at mAP@.5 it does not matter.
Files are parsed with defusedxml, which refuses the entity tricks (billion laughs, external entities)
that the standard library's parser would follow in a hostile file.
"""

from __future__ import annotations

import math
from pathlib import Path
from xml.sax.saxutils import escape

import numpy

from cnnkit.data.detection.annotations import MAX_IMAGE_SIDE, ImageAnnotation, file_under, find_image, image_size
from cnnkit.errors import DataError

__all__ = ["read_voc_file", "voc_class_names", "voc_xml"]


def _parse(path: Path):
    import defusedxml.ElementTree as ElementTree
    from defusedxml import DefusedXmlException
    from xml.etree.ElementTree import ParseError

    try:
        root = ElementTree.parse(path).getroot()
    except FileNotFoundError:
        raise DataError(f"VOC annotation file not found: {path}") from None
    except ParseError as error:
        raise DataError(f"{path}: not well-formed XML ({error}). Is the file complete?") from None
    except DefusedXmlException as error:
        raise DataError(f"{path}: refused to parse XML with entity declarations ({type(error).__name__}).") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error}") from None
    if root.tag != "annotation":
        raise DataError(f"{path}: the root element is <{root.tag}>, not <annotation>; this is not a VOC annotation.")
    return root


def _text(element, tag: str) -> str | None:
    child = element.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def voc_class_names(path: Path) -> list[str]:
    """The object names in one VOC file, in order (used to build a class list when none is given)."""
    return [_text(obj, "name") or "" for obj in _parse(path).iter("object")]


def read_voc_file(path: str | Path, classes: list[str], image_dir: Path, image_id: int = 0,
                  check_files: bool = True) -> ImageAnnotation:
    """Reads one VOC XML file.

    Args:
        path: The XML file.
        classes: Class names; an object whose <name> is not among them is an error.
        image_dir: Folder holding the image named by <filename> (or, without one, the image with the
            XML file's stem and any image extension).
        image_id: The id to give the image.
        check_files: Raise if the image file is missing.

    Raises:
        DataError: naming the file and the object, for malformed XML, an unknown class name, a missing
            or non-numeric <bndbox> coordinate, or a missing image.
    """
    path = Path(path)
    root = _parse(path)
    file_name = _text(root, "filename")
    file = file_under(image_dir, file_name, str(path)) if file_name else find_image(image_dir, path.stem)
    if check_files and (file is None or not file.is_file()):
        named = f"names <filename>{file_name}</filename>" if file_name else "has no <filename>"
        raise DataError(f"{path} {named}, but there is no such image in {image_dir}.")
    size = root.find("size")
    width = height = None
    if size is not None:
        try:  # inf -> OverflowError, nan -> ValueError
            width, height = int(float(_text(size, "width") or 0)), int(float(_text(size, "height") or 0))
        except (ValueError, OverflowError):
            width = height = -1
        if not (0 <= width <= MAX_IMAGE_SIDE and 0 <= height <= MAX_IMAGE_SIDE):
            raise DataError(f"{path}: <size> holds {str(_text(size, 'width'))[:40]!r} x "
                            f"{str(_text(size, 'height'))[:40]!r}; expected whole numbers of pixels from 1 to "
                            f"{MAX_IMAGE_SIDE}.")
    if not width or not height:  # absent or 0: some tools write <width>0</width>; ask the image
        width, height = image_size(file, str(path))
    class_index = {name: k for k, name in enumerate(classes)}
    boxes, labels = [], []
    for number, obj in enumerate(root.iter("object")):
        name = _text(obj, "name")
        if name not in class_index:
            raise DataError(f"{path}: object {number} is named {name!r}, which is not a known class "
                            f"({', '.join(classes)}). Add it to classes.txt or fix the name.")
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{path}: object {number} ({name}) has no <bndbox>.")
        coordinates = []
        for tag in ("xmin", "ymin", "xmax", "ymax"):
            text = _text(box, tag)
            try:
                value = float(text)
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value):
                raise DataError(f"{path}: object {number} ({name}) has <{tag}>{str(text)[:40]}</{tag}>; expected a "
                                "number (a finite one).")
            coordinates.append(value)
        boxes.append(coordinates)
        labels.append(class_index[name])
    return ImageAnnotation(file=file, width=width, height=height, boxes=numpy.array(boxes, dtype=numpy.float32),
                           labels=numpy.array(labels, dtype=numpy.int64), image_id=image_id)


def _coordinate(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def voc_xml(image: ImageAnnotation, classes: list[str]) -> str:
    """One image's annotation as VOC XML text (pixel-edge coordinates, integers when they are whole)."""
    lines = ["<annotation>", f"  <filename>{escape(image.file.name)}</filename>",
             f"  <size><width>{image.width}</width><height>{image.height}</height><depth>3</depth></size>"]
    for box, label in zip(image.boxes.tolist(), image.labels.tolist()):
        x_min, y_min, x_max, y_max = (_coordinate(value) for value in box)
        lines += ["  <object>", f"    <name>{escape(classes[label])}</name>", "    <pose>Unspecified</pose>",
                  "    <truncated>0</truncated>", "    <difficult>0</difficult>",
                  f"    <bndbox><xmin>{x_min}</xmin><ymin>{y_min}</ymin><xmax>{x_max}</xmax><ymax>{y_max}</ymax></bndbox>",
                  "  </object>"]
    return "\n".join(lines + ["</annotation>", ""])
