"""Semantic segmentation data: image + index-mask PNG pairs, checked, augmented together, batched.

A *mask* is a single-channel PNG the size of its image whose pixel values are class indices:
0 .. K-1 for the K classes of `classes`, and `ignore_index` (default 255) for pixels that count for
nothing (object borders in Pascal VOC, unlabelled areas). Colour (RGB) masks are not index masks and
are refused with a message saying so. Pascal VOC's masks are palette ("P") PNGs: their pixel values are
the palette indices, i.e. already class indices (the palette only colours them for people).

Two layouts are recognised (`scan_segmentation`):

    scenes / generic                      Pascal VOC
    ROOT/classes.txt                      ROOT/JPEGImages/2007_000032.jpg
    ROOT/{train,val,test}/images/X.png    ROOT/SegmentationClass/2007_000032.png
    ROOT/{train,val,test}/masks/X.png     ROOT/ImageSets/Segmentation/{train,val,...}.txt
                                          (ROOT may also be a VOCdevkit/ folder holding VOC2012/)

Class names: `classes` if given, else ROOT/classes.txt, else (VOC layout) the 21 VOC names. The scenes
benchmark (`cnnkit data make-scenes`) writes the 10 object classes to classes.txt and marks class k as
k+1 in the masks, 0 being background: so "background" is put first unless the file's first line already
is "background".

Images are decoded by `cnnkit.data.images.decode_image_float` (`read_image` here): 8-bit files go
through `decode_image` (the same decoding as classification) and are scaled by 1/255. Single-channel
16-bit images (PNG/TIFF modes "I;16", "I"; medical imaging, microscopy) keep their full precision: each is scaled from its own real range, (value - min) / (max - min),
to [0, 1] in float32, rather than being cut to 8 bits (a 12-bit CT slice stored in 16 bits would
otherwise use only 1/16 of the range and lose 4 bits). Model inputs are therefore float images in
[0, 1], normalized with the training split's per-channel mean and std.

Augmentation uses torchvision.transforms.v2 with the image as a `tv_tensors.Image` and the mask as a
`tv_tensors.Mask`, so geometric transforms move both together (masks are resized with nearest-neighbour
interpolation, never blended into non-existent classes) and colour transforms touch the image only
(`segmentation_transform`, i.e. `cnnkit.data.transforms.mask_transform`; the settings are the training config's hflip, scale, brightness ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from cnnkit.data.images import (IMAGE_EXTENSIONS, SIXTEEN_BIT_MODES, decode_image_float,  # noqa: F401 - re-exported
                                image_channels)
from cnnkit.data.sharded_loader import ShardedLoader
from cnnkit.data.statistics import images_mean_std, sample_indices
from cnnkit.data.transforms import IGNORE_INDEX, UNSUPPORTED_MASK_AUGMENTATIONS, mask_transform
from cnnkit.errors import DataError, DatasetNotFoundError

SPLITS = ("train", "val", "test")
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
MASK_MODES = {"L", "P", "I;16", "I;16B", "I;16L", "I;16N", "I", "1"}


@dataclass
class SegmentationFiles:
    """The (image, mask) file pairs of one split and the dataset's class names."""

    pairs: list[tuple[Path, Path]]
    classes: list[str]
    layout: str  # "scenes" or "voc"

    def __len__(self) -> int:
        return len(self.pairs)

    def subset(self, indices: Sequence[int]) -> SegmentationFiles:
        return SegmentationFiles([self.pairs[int(i)] for i in indices], self.classes, self.layout)


# ----------------------------------------------------------------------------------------------- layouts
def _voc_root(root: Path) -> Path | None:
    """ROOT itself, or the VOC20xx folder inside ROOT (a VOCdevkit), when it has the VOC folders."""
    candidates = [root, *sorted(root.glob("VOC20*")), *sorted(root.glob("VOCdevkit/VOC20*"))]
    for candidate in candidates:
        if (candidate / "SegmentationClass").is_dir() and (candidate / "JPEGImages").is_dir():
            return candidate
    return None


def resolve_classes(root: Path, layout: str, classes: Sequence[str] | None) -> list[str]:
    """Class names: given, from classes.txt (background first), or VOC's 21 (see the module docstring)."""
    if classes is not None:
        return list(classes)
    file = root / "classes.txt"
    if file.is_file():
        from cnnkit.data.detection.formats import read_class_names  # the detection readers' classes.txt

        names = read_class_names(file)
        return names if names[0].lower() == "background" else ["background", *names]
    if layout == "voc":
        return list(VOC_CLASSES)
    raise DataError(f"{root} has no classes.txt: write the class names there, one per line in mask-index order "
                    "(\"background\" first, or it is added as index 0), or pass classes=[...]")


def has_split(root: str | Path, split: str) -> bool:
    """Whether the dataset at `root` has a `split` (train, val, test) of masks."""
    root = Path(root)
    voc = _voc_root(root)
    if voc is not None:
        return (voc / "ImageSets" / "Segmentation" / f"{split}.txt").is_file()
    return (root / split / "masks").is_dir()


def scan_segmentation(root: str | Path, split: str, classes: Sequence[str] | None = None) -> SegmentationFiles:
    """List the image/mask pairs of one split of a scenes-style or VOC-style dataset.

    Args:
        root: The dataset folder.
        split: "train", "val" or "test" (VOC: any name with an ImageSets/Segmentation/NAME.txt).
        classes: Class names in mask-index order; default: see `resolve_classes`.

    Raises:
        DatasetNotFoundError: If `root` or the split is missing.
        DataError: If an image has no mask, a listed file is missing, or class names are missing.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"segmentation dataset {root} not found: pass a folder with "
                                   "{train,val,test}/images + masks, or a Pascal VOC folder")
    voc = _voc_root(root)
    if voc is not None:
        listing = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file():
            raise DatasetNotFoundError(f"{listing} not found: the VOC dataset has no {split!r} split")
        pairs = []
        for line_number, line in enumerate(listing.read_text().splitlines(), 1):
            stem = line.strip().split()[0] if line.strip() else ""
            if not stem:
                continue
            mask = voc / "SegmentationClass" / f"{stem}.png"
            image = next((voc / "JPEGImages" / f"{stem}{ext}" for ext in (".jpg", ".jpeg", ".png")
                          if (voc / "JPEGImages" / f"{stem}{ext}").is_file()), None)
            if image is None or not mask.is_file():
                missing = mask if image is not None else voc / "JPEGImages" / f"{stem}.jpg"
                raise DataError(f"{listing}, line {line_number}: {missing} does not exist; remove the line or "
                                "add the file")
            pairs.append((image, mask))
        return SegmentationFiles(pairs, resolve_classes(voc, "voc", classes), "voc")

    images_dir, masks_dir = root / split / "images", root / split / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise DatasetNotFoundError(f"{root} has no {split}/images and {split}/masks folders (nor a Pascal VOC "
                                   "layout: JPEGImages/, SegmentationClass/, ImageSets/Segmentation/)")
    masks = {path.stem: path for path in masks_dir.iterdir() if path.suffix.lower() == ".png"}
    pairs = []
    for image in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
        if image.stem not in masks:
            raise DataError(f"{image} has no mask {masks_dir / (image.stem + '.png')}; add it or remove the image")
        pairs.append((image, masks[image.stem]))
    if not pairs:
        raise DataError(f"{images_dir} holds no images")
    return SegmentationFiles(pairs, resolve_classes(root, "scenes", classes), "scenes")


# ----------------------------------------------------------------------------------------------- decoding
# image_channels and read_image (= images.decode_image_float) are images.py's, re-exported here.
read_image = decode_image_float


def read_mask(path: str | Path, num_classes: int, ignore_index: int = IGNORE_INDEX,
              image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Read and check an index mask: int64 (H, W) of values in 0..num_classes-1 or ignore_index.

    Args:
        path: A single-channel PNG (modes L, P, I;16, I, 1).
        num_classes: K: valid values are 0 .. K-1.
        ignore_index: The value of pixels without a label.
        image_size: The (height, width) of the mask's image, which the mask must match.

    Raises:
        DataError: Naming the file, for a colour mask, a size that differs from the image, or values
            outside the classes.
    """
    try:
        with Image.open(path) as mask:
            if mask.mode not in MASK_MODES:
                raise DataError(f"mask {path} is a {mask.mode} image, not an index mask: a mask holds one class "
                                f"index per pixel in one channel (L or P PNG); convert colour masks to indices")
            values = numpy.asarray(mask).astype(numpy.int64)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"mask file not found: {path}") from None
    except Exception as error:  # noqa: BLE001
        raise DataError(f"cannot read mask {path}: {error}; replace or remove the file") from None
    height, width = values.shape
    if image_size is not None and (height, width) != tuple(image_size):
        raise DataError(f"mask {path} is {width}x{height} but its image is {image_size[1]}x{image_size[0]} "
                        "(width x height); a mask must be the size of its image")
    found = numpy.unique(values)
    bad = found[((found < 0) | (found >= num_classes)) & (found != ignore_index)]
    if len(bad):
        shown = ", ".join(str(v) for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
        raise DataError(f"mask {path} has values {shown} outside the {num_classes} classes (0..{num_classes - 1}) "
                        f"and the ignore index {ignore_index}; fix the mask or the class list (classes.txt)")
    return torch.from_numpy(values)


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception as error:  # noqa: BLE001
        raise DataError(f"cannot read image {path}: {error}; replace or remove the file") from None
    return height, width


def check_masks(files: SegmentationFiles, ignore_index: int = IGNORE_INDEX) -> None:
    """Read every mask once and check it against its image (size) and the classes (values).

    Raises the first problem as a DataError naming the file, before any training starts.
    """
    for image, mask in files.pairs:
        read_mask(mask, len(files.classes), ignore_index, _image_size(image))


# ----------------------------------------------------------------------------------------------- transforms
# The image + mask pipeline lives with the other v2 pipelines (transforms.py); the old names stay.
segmentation_transform = mask_transform
UNSUPPORTED_AUGMENTATIONS = UNSUPPORTED_MASK_AUGMENTATIONS


class SegmentationDataset(Dataset):
    """(image, mask) pairs decoded per item: image float32 (C, H, W) normalized, mask int64 (H, W).

    Args:
        files: The pairs and class names (`scan_segmentation`).
        channels: 1 or 3: the model's input channels (grayscale images are repeated to RGB, colour
            images converted to luma).
        transform: A v2 pipeline taking (tv_tensors.Image, tv_tensors.Mask); None returns them as read.
        ignore_index: The mask value of unlabelled pixels.
    """

    def __init__(self, files: SegmentationFiles, channels: int, transform: v2.Transform | None = None,
                 ignore_index: int = IGNORE_INDEX):
        self.files, self.channels, self.transform, self.ignore_index = files, channels, transform, ignore_index

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.files.pairs[index]
        image = read_image(image_path, self.channels)
        mask = read_mask(mask_path, len(self.files.classes), self.ignore_index, tuple(image.shape[-2:]))
        image, mask = tv_tensors.Image(image), tv_tensors.Mask(mask)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


def mean_std(files: SegmentationFiles, channels: int, max_images: int = 256, seed: int = 0) -> tuple[list, list]:
    """Per-channel mean and std, in [0, 1] units, of up to `max_images` images (a seeded sample).

    The sample is `statistics.sample_indices` in drawn order (the sums follow it); std is floored at 1e-3.
    """
    chosen = sample_indices(len(files), max_images, seed, sort=False)
    images = (read_image(files.pairs[index][0], channels) for index in chosen)
    return images_mean_std(images, channels, variance_floor=1e-12, std_floor=1e-3)


def class_pixel_counts(files: SegmentationFiles, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pixels per class over every mask of `files` (int64 (K,)); ignored pixels are not counted."""
    num_classes = len(files.classes)
    counts = torch.zeros(num_classes, dtype=torch.int64)
    for _, mask_path in files.pairs:
        mask = read_mask(mask_path, num_classes, ignore_index).flatten()
        counts += torch.bincount(mask[mask != ignore_index], minlength=num_classes)
    return counts


def class_balanced_weights(files: SegmentationFiles, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Sampling weight of each training image for class-balanced sampling (sampler=oversample), float64 (N,).

    The image-level analogue of the classifiers' oversampler, for tiny or rare structures (nnU-Net samples
    patches around a random foreground class for the same reason): with n_c the number of images holding
    class c, an image weighs max over its classes c of 1 / n_c, so an image holding a structure that only a
    few images show is drawn as often as those few together would be under a plain shuffle of one image
    per structure. Background counts as a class like any other (it is in nearly every image, so it rarely
    decides). An image with only ignored pixels weighs 0; if every image does, all weigh 1."""
    num_classes = len(files.classes)
    presence = torch.zeros(len(files.pairs), num_classes, dtype=torch.bool)
    for row, (_, mask_path) in enumerate(files.pairs):
        mask = read_mask(mask_path, num_classes, ignore_index).flatten()
        presence[row] = torch.bincount(mask[mask != ignore_index], minlength=num_classes) > 0
    images_per_class = presence.sum(0).double()
    inverse = torch.where(presence, 1.0 / images_per_class.clamp(min=1), torch.zeros((), dtype=torch.float64))
    weights = inverse.max(1).values
    return weights if weights.sum() > 0 else torch.ones(len(files.pairs), dtype=torch.float64)


# ----------------------------------------------------------------------------------------------- loading
# The loader of every file dataset decoded per item is sharded_loader.ShardedLoader; the old name stays.
SegmentationLoader = ShardedLoader
