"""The one in-memory annotation model that every detection format is read into and written from.

A dataset split is an `AnnotationSet`: the class names and one `ImageAnnotation` per image. Boxes are
always float32 (N, 4) in absolute pixel ``xyxy`` (x_min, y_min, x_max, y_max; the right and bottom edges
are exclusive, so a box covering pixel columns 3..9 is x_min=3, x_max=10), and labels are int64 (N,)
0-based class indices into ``classes``. The file formats differ in exactly these respects, and the readers
convert on the way in:

    format   box                                   class
    COCO     [x, y, w, h] absolute pixels          category id (any integers; sorted ids -> 0..K-1)
    VOC      xmin ymin xmax ymax absolute pixels   class name
    YOLO     cx cy w h, each divided by the size   0-based index

Instance masks are optional and kept in their compact form until asked for: COCO ``segmentation``
entries (polygons or RLE, decoded with pycocotools) or a PNG whose pixel value i marks the i-th object
(the scenes benchmark's ``instances/`` folder). ``ImageAnnotation.instance_masks()`` turns either into a
(N, H, W) uint8 array of 0/1.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy

from cnnkit.data.images import IMAGE_EXTENSIONS
from cnnkit.errors import DataError

__all__ = ["AnnotationSet", "ImageAnnotation", "empty_boxes", "find_image", "image_size", "mask_to_rle",
           "segmentation_to_rle"]


def empty_boxes() -> numpy.ndarray:
    """A (0, 4) float32 box array: an image without objects."""
    return numpy.zeros((0, 4), dtype=numpy.float32)


# The largest image side an annotation may declare: larger sizes are typos or hostile files, and masks of that
# size would not fit in memory (COCO's own images are at most 640 pixels a side).
MAX_IMAGE_SIDE = 65_535


def image_size(file: Path, where: str) -> tuple[int, int]:
    """(width, height) of an image from its header, without decoding the pixels.

    Raises:
        DataError: naming `where` and the file: missing, unreadable, or a decompression bomb Pillow refuses.
    """
    from PIL import Image

    try:
        with Image.open(file) as image:
            return image.size
    except FileNotFoundError:
        raise DataError(f"{where}: image {file} does not exist.") from None
    except Image.DecompressionBombError as error:
        raise DataError(f"{where}: image {file} declares too many pixels ({error}); replace or remove it.") from None
    except Exception as error:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError ... for bad headers
        raise DataError(f"{where}: cannot read image {file}: {error or type(error).__name__}") from None


def file_under(folder: Path, name, where: str) -> Path:
    """`folder / name` for a relative `name` that stays inside `folder` (no absolute paths, no `..` out of it).

    Raises:
        DataError: naming `where`, for a name that is not a string or would leave the dataset's folder.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise DataError(f"{where}: the image name {str(name)[:100]!r} is not a file name.")
    relative = Path(name)
    normal = os.path.normpath(name)
    if relative.is_absolute() or normal == ".." or normal.startswith(("../", "..\\")) or Path(normal).is_absolute():
        raise DataError(f"{where}: the image name {name[:200]!r} points outside the dataset folder {folder}; image "
                        "names must be relative paths inside it.")
    return folder / name


def check_side(value, what: str, where: str) -> int:
    """A declared image width or height: a whole number from 1 to MAX_IMAGE_SIDE, else DataError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_IMAGE_SIDE:
        raise DataError(f"{where}: {what} is {str(value)[:60]}; expected a whole number of pixels from 1 to "
                        f"{MAX_IMAGE_SIDE}.")
    return value


def find_image(folder: Path, stem: str) -> Path | None:
    """The image in `folder` named `stem` with any image extension, or None."""
    for extension in IMAGE_EXTENSIONS + tuple(extension.upper() for extension in IMAGE_EXTENSIONS):
        candidate = folder / f"{stem}{extension}"
        if candidate.is_file():
            return candidate
    return None


@dataclass
class ImageAnnotation:
    """The objects of one image.

    Attributes:
        file: Path of the image file.
        width, height: Image size in pixels (read from the annotation, or from the image header).
        boxes: float32 (N, 4) xyxy absolute pixels.
        labels: int64 (N,) 0-based class indices.
        image_id: A positive integer naming the image (the COCO id when read from COCO, else its
            1-based position in the split).
        segmentations: Per object, a COCO segmentation (a list of polygons ``[[x1, y1, x2, y2, ...], ...]``
            or an RLE dict ``{"size": [h, w], "counts": ...}``), or None when the source has no masks.
        instance_file: A PNG whose pixel value i (1-based) marks object i, or None.
        semantic_file: A PNG of class indices + 1 per pixel (0 background, 255 ignore), or None.
    """

    file: Path
    width: int
    height: int
    boxes: numpy.ndarray = field(default_factory=empty_boxes)
    labels: numpy.ndarray = field(default_factory=lambda: numpy.zeros((0,), dtype=numpy.int64))
    image_id: int = 0
    segmentations: list | None = None
    instance_file: Path | None = None
    semantic_file: Path | None = None

    def __post_init__(self) -> None:
        self.boxes = numpy.asarray(self.boxes, dtype=numpy.float32).reshape(-1, 4)
        self.labels = numpy.asarray(self.labels, dtype=numpy.int64).reshape(-1)
        if len(self.boxes) != len(self.labels):
            raise ValueError(f"{self.file}: {len(self.boxes)} boxes but {len(self.labels)} labels")

    @property
    def has_masks(self) -> bool:
        """Whether instance masks can be produced for this image."""
        return self.segmentations is not None or self.instance_file is not None

    def select(self, keep: numpy.ndarray) -> "ImageAnnotation":
        """A copy with only the objects where the boolean array `keep` is true (masks follow)."""
        keep = numpy.asarray(keep, dtype=bool)
        segmentations = None
        if self.segmentations is not None:
            segmentations = [segmentation for segmentation, kept in zip(self.segmentations, keep) if kept]
        # An instance PNG numbers objects by position, so it cannot follow a selection: decode it into RLE.
        instance_file = self.instance_file
        if instance_file is not None and segmentations is None and not keep.all():
            segmentations = [mask_to_rle(mask) for mask in self.instance_masks()[keep]]
            instance_file = None
        return dataclasses.replace(self, boxes=self.boxes[keep], labels=self.labels[keep],
                                   segmentations=segmentations, instance_file=instance_file)

    def instance_masks(self) -> numpy.ndarray:
        """The objects' masks as uint8 (N, H, W) of 0/1, from the segmentations or the instance PNG.

        Raises:
            DataError: If the image has no masks, or they do not match its objects or size.
        """
        if self.segmentations is not None:
            return _decode_segmentations(self.segmentations, self.height, self.width, self.file)
        if self.instance_file is not None:
            ids = _read_index_png(self.instance_file, self.height, self.width)
            if int(ids.max(initial=0)) > len(self.labels):
                raise DataError(f"{self.instance_file}: holds instance id {int(ids.max())} but {self.file} has only "
                                f"{len(self.labels)} annotated objects; ids must be 1..N in annotation order.")
            # (H, W) ids -> (N, H, W): object i (0-based) is where the PNG holds i + 1.
            numbers = numpy.arange(1, len(self.labels) + 1, dtype=numpy.uint8)[:, None, None]
            return (ids[None] == numbers).astype(numpy.uint8)
        raise DataError(f"{self.file}: this image has no instance masks (no segmentation in its annotation and no "
                        "instance PNG). Use a dataset with masks (COCO segmentation, or the scenes benchmark).")


@dataclass
class AnnotationSet:
    """One split of a detection dataset: class names and the annotated images.

    Attributes:
        classes: Class names; ``labels`` index this list.
        images: One entry per image, in a fixed order.
        source: Where it was read from (a file or folder), for messages.
        format: The format it was read from: "coco", "voc" or "yolo" ("" when built in memory).
    """

    classes: list[str]
    images: list[ImageAnnotation]
    source: str = ""
    format: str = ""

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_objects(self) -> int:
        return sum(len(image.labels) for image in self.images)

    @property
    def has_masks(self) -> bool:
        return bool(self.images) and all(image.has_masks for image in self.images)


def mask_to_rle(mask: numpy.ndarray) -> dict:
    """A (H, W) 0/1 mask as COCO compressed RLE with a str ``counts`` (JSON-ready, pycocotools-compatible)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(numpy.asfortranarray(mask.astype(numpy.uint8)))
    return {"size": [int(size) for size in rle["size"]], "counts": rle["counts"].decode("ascii")}


def segmentation_to_rle(segmentation, height: int, width: int) -> dict:
    """One object's COCO segmentation (polygons, RLE, or uncompressed RLE) as pycocotools' compressed RLE."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons of one object: merge them into one RLE
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        return mask_utils.frPyObjects(segmentation, height, width)
    counts = segmentation["counts"]
    return {"size": segmentation["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _decode_segmentations(segmentations: list, height: int, width: int, file: Path) -> numpy.ndarray:
    """COCO segmentations -> uint8 (N, H, W)."""
    from pycocotools import mask as mask_utils

    masks = numpy.zeros((len(segmentations), height, width), dtype=numpy.uint8)
    for index, segmentation in enumerate(segmentations):
        try:
            masks[index] = mask_utils.decode(segmentation_to_rle(segmentation, height, width))
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as error:
            raise DataError(f"{file}: object {index} has a malformed segmentation ({error}); expected COCO polygons "
                            "[[x1, y1, ...]] or RLE {'size': [h, w], 'counts': ...}.") from None
    return masks


def _read_index_png(path: Path, height: int, width: int) -> numpy.ndarray:
    """A single-channel index PNG (instance ids or class indices) as uint8 (H, W), size checked."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P"):
                raise DataError(f"{path}: index masks must be single-channel (mode L or P) PNGs, not mode {image.mode}.")
            array = numpy.asarray(image, dtype=numpy.uint8)
    except FileNotFoundError:
        raise DataError(f"mask file not found: {path}") from None
    except OSError as error:
        raise DataError(f"cannot read mask {path}: {error}") from None
    if array.shape != (height, width):
        raise DataError(f"{path}: mask is {array.shape[1]}x{array.shape[0]} but its image is {width}x{height}; "
                        "a mask must have its image's size.")
    return array
