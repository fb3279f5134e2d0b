"""Box-aware augmentation for detection (and instance segmentation) with torchvision.transforms.v2.

This module holds the settings (`DetectionAugment`, the presets); the pipeline is built by
`cnnkit.data.transforms.box_transform`, beside the other v2 pipelines.

torchvision's v2 transforms move tv_tensors.BoundingBoxes and tv_tensors.Mask with the image, so a
flip flips the boxes and a crop crops the masks; this module only chooses and orders them:

    1. horizontal flip                    (probability `hflip`)
    2. IoU crop (SSD's "sample a patch")  (probability `crop`): a random patch that keeps at least some
       overlap with an object, resized back to `size`. Objects whose centre falls outside are removed.
    3. scale jitter + translation         (`scale`, `translate`): a random zoom about the centre and a
       shift, on a canvas of the same size (grey 114 fills the border, as in YOLO pipelines), so models
       with a fixed input size need no resizing.
    4. colour jitter                      (`colour`, `hue`): brightness, contrast and saturation by up to
       +-colour, hue by up to +-hue (off by default: the scenes already tint every object at random, and
       hue costs ~1.2 ms of the ~2 ms a 128x128 image takes here). Boxes are untouched.
    5. clamp the boxes to the image and drop those smaller than 1 pixel (SanitizeBoundingBoxes), with
       their labels and masks.

Flips and crops of horizontally symmetric garments keep their class, so everything here is
label-preserving on the scenes benchmark. Vertical flips are left out (shoes upside down are not data).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from cnnkit.errors import ConfigError

__all__ = ["AUGMENT_PRESETS", "DetectionAugment", "detection_transforms"]


@dataclass
class DetectionAugment:
    """How strongly to augment detection training images (the "default" preset)."""

    hflip: float = 0.5  # probability of a horizontal flip
    scale: tuple[float, float] = (0.75, 1.25)  # zoom range of the scale jitter; (1, 1) turns it off
    translate: float = 0.1  # largest shift, as a fraction of the width / height
    crop: float = 0.0  # probability of an SSD-style IoU crop (needs `size`); 0 is off
    colour: float = 0.2  # brightness, contrast and saturation jitter strength (0 is off)
    hue: float = 0.0  # hue jitter, a fraction of the colour circle (0..0.5; 0 is off)

    def check(self) -> None:
        problems = []
        for name in ("hflip", "crop"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be a probability 0..1, got {getattr(self, name)}")
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            problems.append(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")
        if not 0 <= self.translate < 0.5:
            problems.append(f"translate must be 0..0.5, got {self.translate}")
        if not 0 <= self.colour <= 1:
            problems.append(f"colour must be 0..1, got {self.colour}")
        if not 0 <= self.hue <= 0.5:
            problems.append(f"hue must be 0..0.5, got {self.hue}")
        if problems:
            raise ConfigError("detection augmentation: " + "; ".join(problems))


AUGMENT_PRESETS = {
    "none": DetectionAugment(hflip=0.0, scale=(1.0, 1.0), translate=0.0, crop=0.0, colour=0.0, hue=0.0),
    "light": DetectionAugment(hflip=0.5, scale=(1.0, 1.0), translate=0.0, crop=0.0, colour=0.1),
    "default": DetectionAugment(),
    "strong": DetectionAugment(hflip=0.5, scale=(0.5, 1.5), translate=0.2, crop=0.3, colour=0.3, hue=0.05),
}


def _resolve(augment) -> DetectionAugment:
    if augment is None or augment is False:
        return AUGMENT_PRESETS["none"]
    if augment is True:
        return AUGMENT_PRESETS["default"]
    if isinstance(augment, DetectionAugment):
        return augment
    if isinstance(augment, str):
        if augment not in AUGMENT_PRESETS:
            raise ConfigError(f"detection augmentation {augment!r} is not one of {', '.join(AUGMENT_PRESETS)}")
        return AUGMENT_PRESETS[augment]
    if isinstance(augment, dict):
        base = AUGMENT_PRESETS[augment.get("preset", "default")] if "preset" in augment else DetectionAugment()
        names = {field.name for field in dataclasses.fields(DetectionAugment)}
        unknown = sorted(set(augment) - names - {"preset"})
        if unknown:
            raise ConfigError(f"detection augmentation: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        settings = {key: value for key, value in augment.items() if key != "preset"}
        if "scale" in settings:
            settings["scale"] = tuple(settings["scale"])
        return dataclasses.replace(base, **settings)
    raise ConfigError(f"detection augmentation must be a preset name ({', '.join(AUGMENT_PRESETS)}), a dict or "
                      f"DetectionAugment, got {augment!r}")


def detection_transforms(augment=None, size: tuple[int, int] | int | None = None):
    """The training transform for `DetectionDataset`, or None when nothing is on.

    Args:
        augment: A preset name ("none", "light", "default", "strong"), a dict of `DetectionAugment` fields
            (optionally with "preset" as the base), a DetectionAugment, True ("default") or None/False ("none").
        size: (height, width) of the images; needed for `crop` (the patch is resized back to it).

    Returns:
        A callable ``(image, target) -> (image, target)`` on tv_tensors, or None.

    Raises:
        ConfigError: For unknown presets or settings, out-of-range values, or crop without size.
    """
    from cnnkit.data.transforms import box_transform  # torchvision only when a pipeline is built

    settings = _resolve(augment)
    settings.check()
    return box_transform(settings, size)
