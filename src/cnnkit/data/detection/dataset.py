"""A torch Dataset over any detection split: (uint8 image (3, H, W), target dict) pairs.

    target = {"boxes": float32 (N, 4) xyxy pixels, "labels": int64 (N,) 0-based,
              "image_id": int, "masks": uint8 (N, H, W) 0/1 (only with masks=True)}

Small datasets are decoded into memory once, as uint8 (the scenes benchmark's 4 000 training canvases
of 128x128 are 197 MB and decode in ~2 s, after ~0.5 s to read their COCO JSON: measured on the 2-core
development machine under load); larger ones are decoded per item. Masks are held as COCO RLE (a few
hundred bytes an object) and decoded per item with pycocotools (~10 us a mask).
Detection batches are lists, because images hold different numbers of objects: `collate_detection`.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from cnnkit.data.detection.annotations import AnnotationSet, mask_to_rle, segmentation_to_rle
from cnnkit.data.images import decode_image
from cnnkit.errors import DataError

__all__ = ["DetectionDataset", "collate_detection"]

# Decode into memory when the split's pixels take at most this much (uint8): a few scenes benchmarks' worth.
MEMORY_BUDGET_BYTES = 2 * 1024**3


class DetectionDataset(Dataset):
    """Images and their targets, optionally transformed (see `detection_transforms`).

    Args:
        annotations: One split (ideally validated first with `validate_annotations`).
        transforms: A callable ``(image, target) -> (image, target)`` on torchvision tv_tensors
            (image: tv_tensors.Image, target["boxes"]: BoundingBoxes, target["masks"]: Mask), or None.
        masks: Also yield instance masks (the split must have them).
        in_memory: Decode every image up front (True), per item (False), or when they fit in
            MEMORY_BUDGET_BYTES (None).

    Raises:
        DataError: If masks are asked for and an image has none, or an image's size differs from
            its annotation's.
    """

    def __init__(self, annotations: AnnotationSet, transforms=None, masks: bool = False, in_memory: bool | None = None):
        self.annotations = annotations
        self.classes = list(annotations.classes)
        self.transforms = transforms
        self.masks = masks
        if masks:
            missing = [image.file for image in annotations.images if not image.has_masks]
            if missing:
                raise DataError(f"{missing[0]} has no instance masks ({len(missing)} images without); instance "
                                "segmentation needs COCO segmentations or instance PNGs (as in the scenes benchmark).")
            # Compact per-object RLE, decoded per item.
            self._rles = [[segmentation_to_rle(segmentation, image.height, image.width)
                           for segmentation in (image.segmentations if image.segmentations is not None
                                                else [mask_to_rle(mask) for mask in image.instance_masks()])]
                          for image in annotations.images]
        pixels = sum(3 * image.width * image.height for image in annotations.images)
        self.in_memory = pixels <= MEMORY_BUDGET_BYTES if in_memory is None else in_memory
        self._images = [self._decode(index) for index in range(len(annotations))] if self.in_memory else None

    def __len__(self) -> int:
        return len(self.annotations.images)

    def _decode(self, index: int) -> torch.Tensor:
        image = self.annotations.images[index]
        pixels = decode_image(image.file, channels=3)  # (3, H, W) uint8
        if tuple(pixels.shape[1:]) != (image.height, image.width):
            raise DataError(f"{image.file} is {pixels.shape[2]}x{pixels.shape[1]} pixels but its annotation "
                            f"({self.annotations.source}) says {image.width}x{image.height}; fix the annotation's size.")
        return pixels

    def target(self, index: int) -> dict:
        """The untransformed target of item `index` (plain tensors)."""
        from pycocotools import mask as mask_utils

        image = self.annotations.images[index]
        target = {"boxes": torch.from_numpy(image.boxes.copy()), "labels": torch.from_numpy(image.labels.copy()),
                  "image_id": int(image.image_id)}
        if self.masks:
            rles = self._rles[index]
            if rles:  # decode gives (H, W, N) Fortran order -> (N, H, W)
                target["masks"] = torch.from_numpy(mask_utils.decode(rles).transpose(2, 0, 1).copy())
            else:
                target["masks"] = torch.zeros((0, image.height, image.width), dtype=torch.uint8)
        return target

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        image = self._images[index] if self._images is not None else self._decode(index)
        target = self.target(index)
        if self.transforms is None:
            return image, target
        from torchvision import tv_tensors

        height, width = image.shape[1:]
        wrapped = {"boxes": tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(height, width)),
                   "labels": target["labels"]}
        if "masks" in target:
            wrapped["masks"] = tv_tensors.Mask(target["masks"])
        image, wrapped = self.transforms(tv_tensors.Image(image), wrapped)
        # Back to plain tensors: models and losses should not see tv_tensor subclasses.
        result = {key: value.as_subclass(torch.Tensor) for key, value in wrapped.items()}
        result["boxes"] = result["boxes"].float()
        result["image_id"] = target["image_id"]
        return image.as_subclass(torch.Tensor), result


def collate_detection(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """A DataLoader collate_fn: a list of images and a list of targets (objects per image differ)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)
