"""What segmentation runs write and print: a palette mask PNG and an overlay per image, the mIoU table."""

from __future__ import annotations

from pathlib import Path

import numpy
import torch

from cnnkit.errors import ConfigError
from cnnkit.files import require_files
from cnnkit.tasks.base import PredictOptions, unique_stems


def palette(num_classes: int) -> numpy.ndarray:
    """(K, 3) uint8 colours: Pascal VOC's palette (class 0 black, then well-separated colours).

    Class c's colour takes its bits three at a time: bit 0 -> red, bit 1 -> green, bit 2 -> blue, each
    placed from the colour's top bit downwards, which is how the VOC masks are coloured.
    """
    colours = numpy.zeros((max(num_classes, 1), 3), dtype=numpy.uint8)
    for index in range(num_classes):
        value, shift = index, 7
        while value:
            for channel in range(3):
                colours[index, channel] |= ((value >> channel) & 1) << shift
            value, shift = value >> 3, shift - 1
    return colours


def overlay(image: torch.Tensor, mask: torch.Tensor, colours: numpy.ndarray, alpha: float = 0.5) -> torch.Tensor:
    """uint8 (3, H, W): the image with every non-background class tinted in its palette colour."""
    from torchvision.utils import draw_segmentation_masks

    present = [int(c) for c in mask.unique() if int(c) != 0]
    if not present:
        return image
    masks = torch.stack([mask == c for c in present])  # (N, H, W) bool, one per class present
    return draw_segmentation_masks(image, masks, alpha=alpha, colors=[tuple(int(v) for v in colours[c]) for c in present])


def write_predictions(segmenter, images: list[str], out: Path) -> list[dict]:
    """For each image: OUT/NAME-mask.png (class indices, a palette PNG like Pascal VOC's: its pixel values
    are the classes, its colours the palette) and OUT/NAME-overlay.png (the image with the classes tinted).

    Returns one {"image", "mask", "overlay", "classes": {name: fraction of pixels}} entry per image.
    """
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    colours = palette(len(segmenter.classes))
    results = []
    for path, name in zip(images, unique_stems(images)):
        image = segmenter.read(path)  # the picture for the overlay: as the model sees it (DICOM: windowed)
        image = image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
        mask = segmenter.predict([path])[0]  # (H, W) int64
        if mask.max() > 255:
            raise ConfigError(f"{len(segmenter.classes)} classes do not fit an 8-bit mask PNG")
        picture = Image.fromarray(mask.numpy().astype(numpy.uint8), mode="P")
        picture.putpalette(colours.flatten().tolist())
        files = {"mask": out / f"{name}-mask.png", "overlay": out / f"{name}-overlay.png"}
        picture.save(files["mask"])
        tinted = overlay((image * 255).round().to(torch.uint8), mask, colours)
        Image.fromarray(tinted.permute(1, 2, 0).numpy()).save(files["overlay"])
        counts = torch.bincount(mask.flatten(), minlength=len(segmenter.classes))
        fractions = {segmenter.classes[c]: round(float(n) / mask.numel(), 4) for c, n in enumerate(counts.tolist()) if n}
        results.append({"image": str(path), **{k: str(v) for k, v in files.items()}, "classes": fractions})
    return results


def evaluation_text(result: dict, split: str) -> str:
    """`cnnkit evaluate`: mIoU, pixel accuracy, mean Dice and loss on one line, then the per-class table."""
    from cnnkit.metrics.segmentation import per_class_table

    volumes = ""
    if result.get("volumes"):  # runs trained on studies: each volume in 3-D
        from cnnkit.tasks.segmentation.volume import volume_metrics_text

        volumes = "".join(f"\n\nvolume {v['patient']} slices {v['slices'][0]}:{v['slices'][1]} (3-D, mm)\n"
                          + volume_metrics_text(v) for v in result["volumes"])
    return (f"{split} mIoU {result['miou']:.4f}  pixel accuracy {result['pixel_accuracy']:.4f}  "
            f"mean Dice {result['mean_dice']:.4f}  loss {result['loss']:.4f}  ({result['images']} images)\n"
            + per_class_table(result) + volumes)


def predict_images(segmenter, images: list[str], options: PredictOptions) -> list[dict]:
    """`cnnkit predict`: mask PNG and overlay per image in options.out (default RUN_DIR/predictions)."""
    require_files(images)
    return write_predictions(segmenter, images, Path(options.out or segmenter.run_dir / "predictions"))


def prediction_text(result: dict) -> str:
    shown = ", ".join(f"{name} {share:.0%}" for name, share in result["classes"].items())
    return f"{result['image']}: {shown} -> {result['mask']}, {result['overlay']}"
