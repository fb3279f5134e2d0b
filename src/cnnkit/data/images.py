"""Decoding users' image files, of any size and mode, into the uint8 (C, H, W) tensors models take.

One function, ``decode_image``, is used for training data and at prediction time alike, so a
picture is turned into pixels the same way in both places. ``decode_image_float`` is the float
[0, 1] form segmentation uses: 8-bit images are ``decode_image`` / 255, while single-channel
16-bit images (medical imaging, microscopy) are min-max scaled from their own range in float32,
keeping every level instead of cutting them to 8 bits (a 12-bit CT slice stored in 16 bits would
otherwise use 1/16 of the range and lose 4 bits).

Mode handling (what Pillow gives for PNG, JPEG, TIFF, BMP, GIF, WebP ...):

- ``L`` and ``RGB`` are used as they are; ``1`` (bilevel) becomes 0/255; ``CMYK``, ``YCbCr``
  and ``HSV`` go through Pillow's RGB conversion.
- ``P`` (palette) is expanded through its palette; with a transparent palette entry it is
  treated as RGBA.
- Alpha (``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``) is composited onto black: Fashion-MNIST-style
  data is a light object on a black background, so a transparent background must become black,
  not white, for a cut-out picture to look like the training data.
- 16-bit (``I;16``, ``I;16B``, ``I;16L``) is scaled by the full 16-bit range, ``value / 257``
  rounded, so 65535 -> 255 and the image's own contrast is kept (no clipping at 255, no
  stretching). ``I`` (32-bit integer, which older Pillow used for 16-bit PNGs) is treated the
  same when its values lie in 0..65535, else min-max scaled like ``F``.
- ``F`` (32-bit float) has no fixed range and is min-max scaled to 0..255 (a constant image
  becomes 0).
- channels=1 uses Pillow's ``L`` conversion (ITU-R 601-2 luma: 0.299 R + 0.587 G + 0.114 B);
  channels=3 repeats a grayscale image over three channels.

EXIF orientation is applied first (phone photos are often stored sideways). Resizing uses
Pillow's bilinear filter, which widens its support when shrinking, i.e. it antialiases
(torch's ``interpolate`` without ``antialias=True`` would alias on a 4000 -> 28 reduction).
The requested (H, W) is matched exactly, without keeping the aspect ratio, because a model
takes one fixed input size; crop beforehand if distortion matters. JPEGs that are much larger
than the target are decoded at 1/2, 1/4 or 1/8 scale first (Pillow's ``draft``, as its
``thumbnail`` does): a 4000x3000 JPEG to 28x28 takes ~3 ms instead of ~40 ms.

Files that declare more than ``MAX_PIXELS`` pixels (width x height, read from the header before any
decoding) are refused with a DataError, in training (where the loaders skip and count them) and at
prediction alike: a 164 kB PNG can declare 169 megapixels, half a gigabyte once decoded. The default is
Pillow's own decompression-bomb threshold (89,478,485, where it only warns); ``set_max_pixels`` changes it
for the process (DataLoader workers started by fork inherit it).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy
import torch
from PIL import Image, ImageOps

from cnnkit.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "MAX_PIXELS", "SIXTEEN_BIT_MODES", "decode_image", "decode_image_float",
           "image_channels", "is_image_file", "set_max_pixels"]

logger = logging.getLogger(__name__)

# Lower-case suffixes of the files image folders are scanned for (formats Pillow decodes
# without plugins).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".pnm", ".ppm", ".tif", ".tiff", ".webp",
)

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
# Single-channel modes that decode_image_float keeps at full precision ("I": older Pillow's 16-bit PNGs).
SIXTEEN_BIT_MODES = {*_SIXTEEN_BIT_MODES, "I"}
# Pillow's Image.thumbnail uses the same factor: let JPEG decode at 1/2, 1/4 or 1/8 scale (much
# faster for large photos) only down to twice the target, then resize properly from there.
_DRAFT_MARGIN = 2
_EXIF_ORIENTATION_TAG = 0x0112
# Pillow's DecompressionBombWarning threshold (Image.MAX_IMAGE_PIXELS); it raises only at twice this.
MAX_PIXELS = 89_478_485


def set_max_pixels(count: int) -> None:
    """Set the largest width x height image files may declare (see the module docstring)."""
    global MAX_PIXELS
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise DataError(f"the pixel cap must be a whole number of 1 or more, got {count!r}")
    MAX_PIXELS = count


def _check_pixels(image: Image.Image, path) -> None:
    """Refuse an opened (not yet decoded) file that declares more than MAX_PIXELS pixels."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise DataError(f"image {path} declares {width} x {height} = {width * height:,} pixels, more than the cap "
                        f"of {MAX_PIXELS:,} (a decompression bomb, or a picture far larger than a model needs); "
                        "shrink it or remove it")


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` has one of the ``IMAGE_EXTENSIONS`` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _composite_on_black(image: Image.Image) -> Image.Image:
    """Drops the alpha channel of an image with alpha, compositing it onto black."""
    has_color = image.mode in {"RGBA", "PA", "RGBa"}
    image = image.convert("RGBA" if has_color else "LA")
    pixels = numpy.asarray(image, dtype=numpy.uint16)  # (H, W, 4) or (H, W, 2)
    color, alpha = pixels[..., :-1], pixels[..., -1:]
    # Over black: result = color * alpha / 255, rounded (+127 before the integer division).
    composited = ((color * alpha + 127) // 255).astype(numpy.uint8)
    if has_color:
        return Image.fromarray(composited, mode="RGB")
    return Image.fromarray(composited[..., 0], mode="L")


def _min_max_to_uint8(values: numpy.ndarray) -> numpy.ndarray:
    values = numpy.nan_to_num(values.astype(numpy.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return numpy.zeros(values.shape, dtype=numpy.uint8)
    return numpy.rint((values - low) * (255.0 / (high - low))).astype(numpy.uint8)


def _to_eight_bit(image: Image.Image) -> Image.Image:
    """Converts any Pillow mode to ``L`` or ``RGB`` (see the module docstring)."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "1":
        return image.convert("L")
    if mode == "P":
        # A palette with a transparent entry (GIF, some PNGs) must lose it through compositing.
        if "transparency" in image.info:
            return _composite_on_black(image.convert("RGBA"))
        return image.convert("RGB")
    if mode in _ALPHA_MODES:
        return _composite_on_black(image)
    if mode in _SIXTEEN_BIT_MODES:
        values = numpy.asarray(image).astype(numpy.uint32)  # byte order handled by numpy's dtype
        return Image.fromarray(((values + 128) // 257).astype(numpy.uint8), mode="L")
    if mode == "I":
        values = numpy.asarray(image)
        if values.size and values.min() >= 0 and values.max() <= 65535:
            return Image.fromarray(((values.astype(numpy.int64) + 128) // 257).astype(numpy.uint8), mode="L")
        return Image.fromarray(_min_max_to_uint8(values), mode="L")
    if mode == "F":
        return Image.fromarray(_min_max_to_uint8(numpy.asarray(image)), mode="L")
    # CMYK, YCbCr, HSV and anything else Pillow knows how to turn into RGB.
    return image.convert("RGB")


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        # exif_transpose copies the image even when nothing is to be done: skip it for the usual case.
        if orientation == 1:
            return image
        return ImageOps.exif_transpose(image)
    except Exception as error:  # noqa: BLE001 - a malformed EXIF block should not make the pixels unusable
        logger.debug("ignoring unreadable EXIF orientation of %s: %s", getattr(image, "filename", "image"), error)
        return image


def _decode_pil(image: Image.Image, channels: int, size: tuple[int, int] | None, allow_draft: bool) -> torch.Tensor:
    if allow_draft and size is not None and image.format == "JPEG":
        # Square request of the larger side: valid whether or not EXIF rotation swaps H and W.
        side = max(size) * _DRAFT_MARGIN
        image.draft(None, (side, side))
    image = _apply_exif_orientation(image)
    image = _to_eight_bit(image)
    target_mode = "L" if channels == 1 else "RGB"
    if image.mode != target_mode:
        image = image.convert(target_mode)
    if size is not None:
        height, width = size
        if image.size != (width, height):
            # reducing_gap=3: box-reduce by an integer factor first (fast), then bilinear over at
            # least 3x the target; Pillow documents the result as indistinguishable from a full resize.
            image = image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
    pixels = numpy.array(image, dtype=numpy.uint8)  # (H, W) or (H, W, 3); a writeable copy
    if pixels.ndim == 2:
        return torch.from_numpy(pixels).unsqueeze(0)  # (H, W) -> (1, H, W)
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()  # (H, W, 3) -> (3, H, W)


def decode_image(
    source: str | Path | Image.Image,
    channels: int,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Decodes an image file (or a Pillow image) into a uint8 (C, H, W) tensor.

    Args:
        source: Path of an image file, or an already opened Pillow image (left unchanged).
        channels: 1 for grayscale, 3 for RGB.
        size: (height, width) to resize to with an antialiased bilinear filter; None keeps
            the image's size.

    Returns:
        A contiguous uint8 tensor of shape (channels, H, W).

    Raises:
        DataError: If the file is missing, unreadable, not an image, truncated or corrupt
            (the message names the file), or if channels or size are invalid.
    """
    if channels not in (1, 3):
        raise DataError(f"decode_image: channels must be 1 (grayscale) or 3 (RGB), got {channels}.")
    if size is not None and (len(size) != 2 or min(size) < 1):
        raise DataError(f"decode_image: size must be (height, width) with both >= 1, got {size}.")
    if isinstance(source, Image.Image):
        try:
            # No draft(): it would change the caller's image object.
            return _decode_pil(source, channels, size, allow_draft=False)
        except Exception as error:  # noqa: BLE001 - Pillow raises many types for bad pixel data
            raise DataError(f"cannot decode image {getattr(source, 'filename', '') or '<PIL image>'}: {error}") from None
    path = Path(source)
    try:
        with Image.open(path) as image:
            _check_pixels(image, path)
            return _decode_pil(image, channels, size, allow_draft=True)
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}. Check the path.") from None
    except IsADirectoryError:
        raise DataError(f"cannot read image {path}: it is a directory, not an image file; rename or remove it.") from None
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError, struct.error ...
        reason = str(error) or type(error).__name__
        raise DataError(
            f"cannot read image {path}: {reason}. The file is not an image Pillow can decode, or it is truncated/corrupt; "
            "replace or remove it."
        ) from None


def image_channels(path: str | Path) -> int:
    """1 for single-channel files (L, 16-bit, bilevel), 3 otherwise; from the header only."""
    try:
        with Image.open(path) as image:
            return 1 if image.mode in {"L", "LA", "1", "F", *SIXTEEN_BIT_MODES} else 3
    except Exception as error:  # noqa: BLE001 - Pillow raises many types for bad files
        raise DataError(f"cannot read image {path}: {error}") from None


def decode_image_float(source: str | Path | Image.Image, channels: int) -> torch.Tensor:
    """Decodes an image into float32 (channels, H, W) in [0, 1]; 16-bit files keep their full range.

    8-bit images (any Pillow mode) are decoded by ``decode_image`` and divided by 255. Single-channel
    16-bit images (``SIXTEEN_BIT_MODES``) are mapped from their own minimum and maximum to 0 and 1 (a
    constant image becomes 0), keeping all of their levels, and repeated over ``channels``.

    Raises:
        DataError: If the file is missing or cannot be decoded (the message names it).
    """
    if isinstance(source, Image.Image):
        return _decode_float(source, channels, getattr(source, "filename", "") or "<PIL image>")
    try:
        with Image.open(source) as image:
            _check_pixels(image, source)
            return _decode_float(image, channels, source)
    except FileNotFoundError:
        raise DataError(f"image file not found: {source}") from None
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - Pillow raises OSError, SyntaxError, ValueError ...
        raise DataError(f"cannot read image {source}: {error}; replace or remove the file") from None


def _decode_float(image: Image.Image, channels: int, name) -> torch.Tensor:
    if image.mode in SIXTEEN_BIT_MODES:
        values = torch.from_numpy(numpy.asarray(image).astype(numpy.float32))  # (H, W), any byte order
        low, high = values.min(), values.max()
        scaled = (values - low) / (high - low) if high > low else torch.zeros_like(values)
        return scaled.unsqueeze(0).expand(channels, -1, -1).contiguous()  # (H, W) -> (C, H, W)
    return decode_image(image, channels=channels).float().div_(255)
