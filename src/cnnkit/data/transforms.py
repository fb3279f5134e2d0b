"""The per-sample torchvision.transforms.v2 pipelines: image only, image + mask, image + boxes (+ masks).

torchvision's v2 transforms do the work (tv_tensors.Mask and tv_tensors.BoundingBoxes move with the
image: a flip flips the boxes, a crop crops the mask); this module only chooses and orders them, for the
three kinds of target, in one place. The batched in-memory augmentation of classification
(augment.py) is separate: it is the measured fast path for small images.

The three recipes share their steps where the settings mean the same thing (flips, colour jitter), and
keep their own order and meaning where they differ, because the measured figures were trained on
exactly these pipelines and a different order draws different random numbers for the same seed:

    image_transform     classification files (StreamingLoader), AugmentConfig: the same augmentations,
                        in the same order, as augment.build_augmentations (translate = pad-and-crop)
    mask_transform      segmentation, AugmentConfig: resize to the model's size first, translate = an
                        affine shift, scale = resize-and-crop, then normalize; refuses what would change
                        the image without its mask
    box_transform       detection and instance segmentation, DetectionAugment (detection/transforms.py):
                        flip, IoU crop, zoom + shift on a grey canvas, colour; boxes clamped and sanitised
"""

from __future__ import annotations

from typing import Sequence

from torchvision import tv_tensors
from torchvision.transforms import v2

from cnnkit.data.augment import AugmentConfig, RandomTranslate
from cnnkit.data.augment_ops import PolicyAugment
from cnnkit.errors import ConfigError

__all__ = ["UNSUPPORTED_MASK_AUGMENTATIONS", "box_transform", "image_transform", "mask_transform"]

IGNORE_INDEX = 255  # the VOC convention for "no label here" (segmentation.IGNORE_INDEX); `ignore_index` changes it
# Augmentations of AugmentConfig that have no meaning for a mask (or would blend it).
UNSUPPORTED_MASK_AUGMENTATIONS = ("auto_augment", "random_erasing")


def _colour_jitter(brightness: float, contrast: float, saturation: float, hue: float) -> v2.ColorJitter:
    """ColorJitter with 0 meaning "off" (v2 treats 0 and None alike: no draw of that factor)."""
    return v2.ColorJitter(brightness or None, contrast or None, saturation or None, hue or None)


def image_transform(augment: AugmentConfig | None, size: tuple[int, int]) -> v2.Compose | None:
    """The per-sample pipeline of an ``AugmentConfig`` for uint8 images (None: no augmentation).

    The same augmentations, in the same order, as ``augment.build_augmentations`` (the torchvision
    originals of the batched versions: e.g. HSV hue, not the batched YIQ rotation).
    """
    if augment is None:
        return None
    steps: list[v2.Transform] = []
    if augment.hflip:
        steps.append(v2.RandomHorizontalFlip(p=0.5))
    if augment.translate:
        RandomTranslate(augment.translate, augment.translate_padding)  # validates the values
        if augment.translate_padding == "reflect" and min(size) <= augment.translate:
            raise ConfigError(
                f"augment.translate={augment.translate} with reflect padding needs images larger than "
                f"{augment.translate} pixels, got {tuple(size)}. Use a smaller translate or translate_padding='zeros'."
            )
        mode = "reflect" if augment.translate_padding == "reflect" else "constant"
        steps.append(v2.RandomCrop(tuple(size), padding=augment.translate, padding_mode=mode, fill=0))
    if augment.vflip:
        steps.append(v2.RandomVerticalFlip(p=0.5))
    if augment.resized_crop:
        steps.append(v2.RandomResizedCrop(tuple(size), scale=(augment.resized_crop, 1.0), antialias=True))
    if augment.rotate or augment.scale or augment.shear:
        steps.append(v2.RandomAffine(degrees=augment.rotate, scale=(1 - augment.scale, 1 + augment.scale),
                                     shear=(-augment.shear, augment.shear) if augment.shear else None))
    if augment.auto_augment != "none":
        steps.append(PolicyAugment(augment.auto_augment).transform)
    if augment.brightness or augment.contrast or augment.saturation or augment.hue:
        steps.append(_colour_jitter(augment.brightness, augment.contrast, augment.saturation, augment.hue))
    if augment.random_erasing:
        steps.append(v2.RandomErasing(p=augment.random_erasing, value=0))
    return v2.Compose(steps) if steps else None


def mask_transform(size: tuple[int, int], mean: Sequence[float], std: Sequence[float],
                   augment: AugmentConfig | None = None, ignore_index: int = IGNORE_INDEX) -> v2.Compose:
    """The v2 pipeline from (Image float [0, 1], Mask) of any size to the model's size, normalized.

    Evaluation (augment None): resize to `size` (masks: nearest neighbour). Training adds, as the
    AugmentConfig asks (the same settings as classification: hflip, vflip, rotate, translate, shear,
    scale, resized_crop, brightness, contrast, saturation, hue):
    flips; one random affine warp (rotation, translation, shear); scale jitter (resize by a factor in
    [1 - scale, 1 + scale], then crop or pad back to `size` at a random place); a random resized crop;
    colour jitter (image only). Pixels a warp or a pad brings in are 0 in the image and `ignore_index`
    in the mask, so the loss never learns from them.

    Raises:
        ConfigError: For augmentations that cannot move a mask with the image (AutoAugment policies,
            random erasing).
    """
    fill = {tv_tensors.Image: 0.0, tv_tensors.Mask: ignore_index}
    steps: list[v2.Transform] = [v2.Resize(list(size), antialias=True)]
    if augment is not None:
        for name in UNSUPPORTED_MASK_AUGMENTATIONS:
            if getattr(augment, name) not in (0, 0.0, "none"):
                raise ConfigError(f"{name}={getattr(augment, name)!r} is not available for segmentation (it would "
                                  f"change the image without its mask); leave it at its default")
        if augment.hflip:
            steps.append(v2.RandomHorizontalFlip())
        if augment.vflip:
            steps.append(v2.RandomVerticalFlip())
        if augment.rotate or augment.translate or augment.shear:
            translate = (augment.translate / size[1], augment.translate / size[0]) if augment.translate else None
            steps.append(v2.RandomAffine(augment.rotate, translate=translate, shear=augment.shear or None, fill=fill))
        if augment.scale:
            shorter = min(size)
            steps += [v2.RandomResize(round(shorter * (1 - augment.scale)), round(shorter * (1 + augment.scale)) + 1,
                                      antialias=True),
                      v2.RandomCrop(list(size), pad_if_needed=True, fill=fill)]
        if augment.resized_crop:
            steps.append(v2.RandomResizedCrop(list(size), scale=(augment.resized_crop, 1.0), antialias=True))
        if augment.brightness or augment.contrast or augment.saturation or augment.hue:
            steps.append(_colour_jitter(augment.brightness, augment.contrast, augment.saturation, augment.hue))
    steps.append(v2.Normalize(list(mean), list(std)))
    return v2.Compose(steps)


def box_transform(settings, size: tuple[int, int] | int | None = None) -> v2.Compose | None:
    """The training pipeline of checked ``DetectionAugment`` settings, or None when nothing is on.

    Args:
        settings: A ``cnnkit.data.detection.transforms.DetectionAugment`` (already checked).
        size: (height, width) of the images; needed for `crop` (the patch is resized back to it).

    Returns:
        A callable ``(image, target) -> (image, target)`` on tv_tensors (target: "boxes" BoundingBoxes,
        "labels", optionally "masks" Mask), or None.

    Raises:
        ConfigError: For crop without size.
    """
    steps = []
    if settings.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=settings.hflip))
    if settings.crop > 0:
        if size is None:
            raise ConfigError("detection augmentation: crop needs the image size (size=(height, width)).")
        size = (size, size) if isinstance(size, int) else tuple(size)
        steps.append(v2.RandomApply([v2.RandomIoUCrop(), v2.Resize(size, antialias=True)], p=settings.crop))
    if settings.scale != (1.0, 1.0) or settings.translate > 0:
        steps.append(v2.RandomAffine(degrees=0, translate=(settings.translate, settings.translate),
                                     scale=settings.scale, fill={tv_tensors.Image: 114, tv_tensors.Mask: 0}))
    if settings.colour > 0 or settings.hue > 0:
        steps.append(_colour_jitter(settings.colour, settings.colour, settings.colour, settings.hue))
    if not steps:
        return None
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1)]
    return v2.Compose(steps)
