"""Finding the face in a photo and cropping to it, before embedding (`--face-crop`, issue 19).

Hand-written glue over OpenCV's frontal-face detector: OpenCV does the detecting, this module decodes the image
the way the rest of cnnkit does (``decode_image``: EXIF orientation, pixel limits, any mode), chooses the
detector's settings and turns "no face" or "several faces" into one clear error naming the file.

Why a Haar cascade (Viola-Jones, ``haarcascade_frontalface_default.xml``) and not a CNN detector: the cascade
ships inside the ``opencv-python-headless`` wheel (``cv2.data.haarcascades``), so there is no model file to
download and nothing to go stale; it runs on the CPU in milliseconds; and it is one well-kept package from PyPI
(``pip install 'cnnkit[faces]'``). It finds upright, roughly frontal faces, which is what a verification photo
is; profiles and strongly tilted heads are missed (then crop the photo by hand). OpenCV 5 no longer bundles the
cascades, hence the extra's ``<5``.

Settings, with their evidence (scikit-image's ``lfw_subset``: 100 LFW faces and 100 non-faces, 25x25, upscaled
to 100x100; tests/test_faces.py measures it):

- the image gets a border of 10% of its shorter side (edge pixels repeated) before detection: the cascade's
  window needs a little context around a face, so a photo already cropped to the face was often missed
  without it (faces found 0.85 -> 0.95; non-faces with a "face" 0.00 either way);
- ``minNeighbors=5`` (overlapping detections a face needs), OpenCV's usual setting: 3 finds 0.97 of these
  faces, but is the looser one on cluttered photos (more false faces, which crop_face reports as "2 faces");
- faces smaller than a tenth of the shorter side (at least the cascade's 24 pixels) are ignored: a face in the
  background of a portrait is not the subject, and should not make the photo "ambiguous";
- images are searched at most ``MAX_SIDE`` pixels on their longer side (a 3000x3000 photo is searched in ~60 ms
  this way; faces a tenth of its side wide are still far above the cascade's 24 pixels), boxes scaled back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy
from PIL import Image

from cnnkit.errors import CnnkitError, DataError

__all__ = ["MAX_SIDE", "crop_face", "find_faces"]

MAX_SIDE = 800  # longer side, in pixels, an image is searched at
BORDER = 0.1  # of the shorter side, added around the image (see the module docstring)
MIN_NEIGHBORS = 5
MIN_FACE = 0.1  # of the shorter side
CASCADE = "haarcascade_frontalface_default.xml"

_detector = None


def _cascade():
    """OpenCV's frontal-face cascade, loaded once (imports cv2 on first use: it is an optional extra)."""
    global _detector
    if _detector is None:
        try:
            import cv2
        except ImportError:
            raise CnnkitError("face cropping needs OpenCV: pip install 'cnnkit[faces]' "
                              "(opencv-python-headless)") from None
        path = Path(getattr(getattr(cv2, "data", None), "haarcascades", "")) / CASCADE
        if not hasattr(cv2, "CascadeClassifier") or not path.is_file():
            raise CnnkitError(f"OpenCV {cv2.__version__} has no bundled {CASCADE} (OpenCV 5 dropped the Haar "
                              "cascades): pip install 'opencv-python-headless>=4.8,<5'")
        detector = cv2.CascadeClassifier(str(path))
        if detector.empty():
            raise CnnkitError(f"OpenCV could not load its face detector {path}")
        _detector = detector
    return _detector


def _rgb(image: Any) -> tuple[numpy.ndarray, str]:
    """(H, W, 3) uint8 pixels of a file, PIL image or array, and a name for messages."""
    if isinstance(image, numpy.ndarray):
        array = image
        if array.dtype != numpy.uint8:  # floats in [0, 1], as scikit-image gives them
            array = numpy.clip(numpy.asarray(array, dtype=numpy.float64) * (255 if array.max() <= 1 else 1), 0, 255)
            array = array.round().astype(numpy.uint8)
        if array.ndim == 2:
            array = numpy.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
            raise DataError(f"find_faces: expected an (H, W) or (H, W, C) image array, got shape {array.shape}")
        array = numpy.repeat(array, 3, axis=2) if array.shape[2] == 1 else array[:, :, :3]
        return numpy.ascontiguousarray(array), "<array>"
    from cnnkit.data.images import decode_image

    name = str(image) if not isinstance(image, Image.Image) else (getattr(image, "filename", "") or "<PIL image>")
    pixels = decode_image(image, channels=3)  # (3, H, W) uint8: EXIF orientation applied, pixel limit checked
    return pixels.permute(1, 2, 0).contiguous().numpy(), name


def _detect(rgb: numpy.ndarray) -> list[tuple[int, int, int, int]]:
    detector = _cascade()  # first: it turns a missing OpenCV into the message naming the extra
    import cv2

    height, width = rgb.shape[:2]
    scale = min(1.0, MAX_SIDE / max(height, width))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if scale < 1:
        gray = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))),
                          interpolation=cv2.INTER_AREA)
    border = max(1, round(BORDER * min(gray.shape)))
    padded = cv2.copyMakeBorder(gray, border, border, border, border, cv2.BORDER_REPLICATE)
    smallest = max(24, round(MIN_FACE * min(gray.shape)))
    found = detector.detectMultiScale(padded, scaleFactor=1.1, minNeighbors=MIN_NEIGHBORS,
                                      minSize=(smallest, smallest))
    boxes = []
    for x, y, w, h in (found if len(found) else []):
        # back to the unpadded, unscaled image; clipped to it (a box may reach into the border)
        left, top = max(0.0, (x - border) / scale), max(0.0, (y - border) / scale)
        right, bottom = min(width, (x - border + w) / scale), min(height, (y - border + h) / scale)
        if right - left >= 1 and bottom - top >= 1:
            boxes.append((round(left), round(top), round(right - left), round(bottom - top)))
    return sorted(boxes, key=lambda box: box[2] * box[3], reverse=True)


def find_faces(image: Any) -> list[tuple[int, int, int, int]]:
    """The faces in an image file, PIL image or (H, W[, C]) array: (x, y, width, height) boxes in its pixels,
    largest first; empty when there is none."""
    return _detect(_rgb(image)[0])


def crop_face(image: Any, margin: float = 0.2) -> Image.Image:
    """The one face in `image`, with `margin` of its width/height added on each side (clipped to the image), as
    an RGB PIL image; the run's own preprocessing resizes it as usual.

    Raises:
        DataError: naming the file, when no face or more than one face is found.
    """
    if margin < 0:
        raise DataError(f"crop_face: margin must be 0 or more, got {margin}")
    rgb, name = _rgb(image)
    boxes = _detect(rgb)
    if len(boxes) != 1:
        found = "no face" if not boxes else f"{len(boxes)} faces"
        raise DataError(f"{name}: {found} found by the face detector (--face-crop needs exactly one upright, "
                        "frontal face); use a photo cropped to the one face, or leave out --face-crop")
    x, y, w, h = boxes[0]
    height, width = rgb.shape[:2]
    left, top = max(0, round(x - margin * w)), max(0, round(y - margin * h))
    right, bottom = min(width, round(x + w + margin * w)), min(height, round(y + h + margin * h))
    return Image.fromarray(rgb[top:bottom, left:right])
