"""The scenes benchmark: Fashion-MNIST items composed onto cluttered canvases, for detection and segmentation.

`make_scenes(out)` writes OUT/{train,val,test}/ with RGB canvases and, for every canvas, the same objects in
every annotation form cnnkit reads: YOLO txt, Pascal VOC XML, COCO JSON (boxes and RLE masks), a semantic
index mask and an instance-id mask (the layout is in OUT/README.txt and cnnkit.data.detection.formats).

How one canvas is made (numpy on one (H, W, 3) float array; ~3 ms per canvas including the PNG files):

1. Background: a linear gradient between two dark-to-mid colours, two coloured sine gratings (stripes of
   random period, direction and phase), and 3-8 semi-transparent distractors (ellipses, rectangles, lines
   in any colour). The distractors are clutter with edges, so a detector must learn the garments' shapes,
   not "anything bright".
2. Objects: min_objects..max_objects Fashion-MNIST items, each resized (bilinear) to a random size (a fraction
   `min_scale`..`max_scale` of the canvas, aspect ratio jittered by up to 15 %), tinted with a random bright
   colour (brightness follows the item's own grey levels, so its texture stays visible) and pasted at a
   random position inside the canvas. The item's mask is its pixels brighter than 12 (Fashion-MNIST's
   background is exactly 0). Later objects are on top.
3. Occlusion: a placement is kept only if every object already there stays at least `min_visible` visible
   (up to 20 tries, then the object is left out), so no annotated object is less than 50 % visible by
   default and no unannotated garment is ever drawn. Boxes are the tight boxes of the *visible* masks.

Items for the train and val canvases come from Fashion-MNIST's training split (two disjoint pools, 50 000
and 10 000 items, so no garment appears in both); test canvases use the test split. Every canvas has its
own random generator seeded by (seed, split, index): canvas 5 of train is the same whether 8 or 8 000 are
made, and the same seed writes byte-identical files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy
from PIL import Image

from cnnkit.data.detection.annotations import AnnotationSet, ImageAnnotation, mask_to_rle
from cnnkit.data.detection.coco import write_coco
from cnnkit.data.detection.voc import voc_xml
from cnnkit.data.detection.yolo import yolo_text
from cnnkit.data.fashion_mnist import FASHION_MNIST_CLASSES
from cnnkit.errors import DataError
from cnnkit.scenes_config import ScenesConfig

__all__ = ["SPLITS", "ScenesConfig", "compose_scene", "make_scenes"]

SPLITS = ("train", "val", "test")
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
# Fashion-MNIST's training items 0..49 999 (after a seeded shuffle) feed train canvases, the rest val canvases.
_TRAIN_POOL = 50_000
_MASK_THRESHOLD = 12  # grey level above which a resized item pixel belongs to the object
_PLACEMENT_TRIES = 20


def _background(rng: numpy.random.Generator, size: int, grid: tuple[numpy.ndarray, numpy.ndarray]) -> numpy.ndarray:
    """A cluttered (size, size, 3) float32 background in 0..255."""
    y, x = grid  # each (size, size), pixel coordinates
    # Gradient between two dark-to-mid colours along a random direction.
    angle = rng.uniform(0, 2 * numpy.pi)
    ramp = (x * numpy.cos(angle) + y * numpy.sin(angle)) / size  # roughly -1.4..1.4
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6)
    start, end = rng.uniform(15, 110, 3), rng.uniform(15, 110, 3)
    canvas = (start + (end - start) * ramp[..., None]).astype(numpy.float32)  # (size, size, 3)
    # Two sine gratings (stripes), each with its own colour weights.
    for _ in range(2):
        angle, period = rng.uniform(0, numpy.pi), rng.uniform(0.05, 0.4) * size
        phase = rng.uniform(0, 2 * numpy.pi)
        wave = numpy.sin(2 * numpy.pi * (x * numpy.cos(angle) + y * numpy.sin(angle)) / period + phase)
        canvas += wave[..., None] * rng.uniform(-22, 22, 3).astype(numpy.float32)
    # Semi-transparent distractors: ellipses, rectangles and thick lines in any colour, each computed only
    # inside its own bounding window (half the cost of whole-canvas masks).
    for _ in range(rng.integers(3, 9)):
        kind = rng.integers(3)
        center_x, center_y = rng.uniform(0, size, 2)
        radius_x, radius_y = rng.uniform(0.03, 0.2, 2) * size
        reach_x, reach_y = (radius_x, radius_y) if kind < 2 else (2 * radius_x + 2, 2 * radius_x + 2)
        rows = slice(max(0, int(center_y - reach_y)), min(size, int(center_y + reach_y) + 2))
        columns = slice(max(0, int(center_x - reach_x)), min(size, int(center_x + reach_x) + 2))
        window_y, window_x = y[rows, columns], x[rows, columns]
        if kind == 0:
            shape = ((window_x - center_x) / radius_x) ** 2 + ((window_y - center_y) / radius_y) ** 2 <= 1
        elif kind == 1:
            shape = (numpy.abs(window_x - center_x) <= radius_x) & (numpy.abs(window_y - center_y) <= radius_y)
        else:  # a line segment through the centre: distance to it below a width of 1-3 pixels
            angle = rng.uniform(0, numpy.pi)
            distance = numpy.abs((window_x - center_x) * numpy.sin(angle) - (window_y - center_y) * numpy.cos(angle))
            along = numpy.abs((window_x - center_x) * numpy.cos(angle) + (window_y - center_y) * numpy.sin(angle))
            shape = (distance <= rng.uniform(0.5, 1.5)) & (along <= 2 * radius_x)
        opacity = rng.uniform(0.25, 0.6)
        patch = canvas[rows, columns]  # a view
        patch[shape] = patch[shape] * (1 - opacity) + rng.uniform(0, 255, 3) * opacity
    return canvas


def _bright_colour(rng: numpy.random.Generator) -> numpy.ndarray:
    """A random RGB colour whose brightest channel is 180..255 (HSV with a high value)."""
    hue, saturation, value = rng.uniform(0, 1), rng.uniform(0, 0.9), rng.uniform(0.7, 1.0)
    # HSV -> RGB: each channel is value minus a hue-dependent share of the saturation.
    channel = (numpy.array([5.0, 3.0, 1.0]) + hue * 6) % 6
    return 255 * value * (1 - saturation * numpy.clip(numpy.minimum(channel, 4 - channel), 0, 1))


def compose_scene(rng: numpy.random.Generator, items: numpy.ndarray, item_labels: numpy.ndarray,
                  config: ScenesConfig) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    """Makes one canvas.

    Args:
        rng: This canvas's random generator.
        items: (N, 28, 28) uint8 Fashion-MNIST items to draw from; item_labels: their (N,) classes.
        config: Sizes and counts.

    Returns:
        image (H, W, 3) uint8, instance ids (H, W) uint8 (0 background, i for the i-th object), boxes (K, 4)
        float32 xyxy of the visible masks, labels (K,) int64.
    """
    size = config.size
    grid = numpy.mgrid[0:size, 0:size].astype(numpy.float32)
    canvas = _background(rng, size, (grid[0], grid[1]))
    owner = numpy.full((size, size), -1, dtype=numpy.int16)  # which object is on top at each pixel
    areas, labels = [], []
    for _ in range(rng.integers(config.min_objects, config.max_objects + 1)):
        index = rng.integers(len(items))
        side = rng.uniform(config.min_scale, config.max_scale) * size
        aspect = rng.uniform(0.85, 1.15)
        height, width = (min(size, max(8, round(side * stretch))) for stretch in (aspect, 1 / aspect))
        item = numpy.asarray(Image.fromarray(items[index]).resize((width, height), Image.BILINEAR), dtype=numpy.float32)
        mask = item > _MASK_THRESHOLD
        if not mask.any():
            continue
        colour = _bright_colour(rng)
        pixels = colour * (0.3 + 0.7 * item[..., None] / 255)  # (h, w, 3): the item's shading, tinted
        number = len(labels)
        visible = numpy.bincount(owner.ravel() + 1, minlength=number + 1)[1:]  # (number,) pixels each object shows
        for _ in range(_PLACEMENT_TRIES):
            top, left = rng.integers(0, size - height + 1), rng.integers(0, size - width + 1)
            window = owner[top:top + height, left:left + width]  # a view: writing it writes `owner`
            covered = numpy.bincount(window[mask] + 1, minlength=number + 1)[1:]  # pixels the new item would hide
            if numpy.all(visible - covered >= config.min_visible * numpy.array(areas)):
                window[mask] = number
                canvas[top:top + height, left:left + width][mask] = pixels[mask]
                areas.append(int(mask.sum()))
                labels.append(int(item_labels[index]))
                break
    image = numpy.clip(canvas + 0.5, 0, 255).astype(numpy.uint8)
    instances = (owner + 1).astype(numpy.uint8)  # (H, W): 0 background, i = object i - 1
    boxes = numpy.zeros((len(labels), 4), dtype=numpy.float32)
    for number in range(len(labels)):
        rows = numpy.flatnonzero((owner == number).any(axis=1))
        columns = numpy.flatnonzero((owner == number).any(axis=0))
        boxes[number] = (columns[0], rows[0], columns[-1] + 1, rows[-1] + 1)  # pixel edges: max is exclusive
    return image, instances, boxes, numpy.array(labels, dtype=numpy.int64)


def _item_pools(seed: int, root: str | Path | None) -> dict[str, tuple[numpy.ndarray, numpy.ndarray]]:
    """{split: (items (N, 28, 28) uint8, labels (N,))}: disjoint train/val pools, and the test split."""
    from cnnkit.data.fashion_mnist import load_fashion_mnist

    train, test = load_fashion_mnist(root)
    train_items, train_labels = train.images[:, 0].numpy(), train.labels.numpy()
    order = numpy.random.default_rng([seed, 99]).permutation(len(train_items))
    pools = {"train": order[:_TRAIN_POOL], "val": order[_TRAIN_POOL:]}
    result = {split: (train_items[pool], train_labels[pool]) for split, pool in pools.items()}
    result["test"] = (test.images[:, 0].numpy(), test.labels.numpy())
    return result


def _save_png(array: numpy.ndarray, path: Path) -> None:
    # No metadata (no time stamps) and a fixed compression level: same array, same bytes. Level 3 encodes a
    # canvas in ~3 ms against ~8 ms at the default 6, for files ~13 % larger (measured on a 128x128 canvas).
    Image.fromarray(array, mode="RGB" if array.ndim == 3 else "L").save(path, format="PNG", compress_level=3)


def _readme(config: ScenesConfig, counts: dict[str, tuple[int, int]], class_counts: dict[str, list[int]]) -> str:
    lines = [
        "Scenes benchmark: Fashion-MNIST items on cluttered canvases (cnnkit data make-scenes)",
        "",
        f"made with: cnnkit data make-scenes OUT --seed {config.seed} --train {config.train} --val {config.val} "
        f"--test {config.test} --size {config.size} --min-objects {config.min_objects} --max-objects {config.max_objects} "
        f"--min-scale {config.min_scale:g} --max-scale {config.max_scale:g}",
        f"canvas: {config.size}x{config.size} RGB; objects per canvas: {config.min_objects}..{config.max_objects}; "
        f"object size: {config.min_scale:g}..{config.max_scale:g} of the canvas side "
        f"({round(config.min_scale * config.size)}..{round(config.max_scale * config.size)} px), aspect jitter 15%;",
        f"every object at least {config.min_visible:.0%} visible; boxes are the tight boxes of the visible masks.",
        "train and val canvases use disjoint pools of Fashion-MNIST training items; test canvases use its test items.",
        "",
        "split   canvases  objects   objects per class (classes.txt order)",
    ]
    for split, (images, objects) in counts.items():
        lines.append(f"{split:7} {images:8}  {objects:7}   {' '.join(map(str, class_counts[split]))}")
    lines += [
        "",
        "layout:",
        "  classes.txt                      class k = line k (0-based)",
        "  SPLIT/images/NNNNNN.png          RGB canvas",
        "  SPLIT/labels/NNNNNN.txt          YOLO: 'k cx cy w h', normalized to 0..1",
        "  SPLIT/annotations/NNNNNN.xml     Pascal VOC: object name = class name, bndbox in pixels (xmax = xmin + width)",
        "  SPLIT/masks/NNNNNN.png           semantic mask: 0 background, k+1 for class k (255 = ignore; unused here)",
        "  SPLIT/instances/NNNNNN.png       instance ids: 0 background, i for the i-th object in annotation order",
        "  annotations/instances_SPLIT.json COCO: category id k+1, image id = file number + 1, RLE segmentations",
        "",
    ]
    return "\n".join(lines)


def make_scenes(out: str | Path, config: ScenesConfig | None = None, fashion_mnist_root: str | Path | None = None,
                progress: bool = True) -> dict[str, tuple[int, int]]:
    """Writes the scenes benchmark into `out` (which must be empty or not exist).

    Args:
        out: The output folder.
        config: Counts, sizes and seed (defaults: `ScenesConfig()`).
        fashion_mnist_root: Where Fashion-MNIST is (None: the usual places, see cnnkit.data.fashion_mnist).
        progress: Show a progress bar per split.

    Returns:
        {split: (canvases, objects)}.

    Raises:
        DataError: If `out` holds files, the settings are impossible, or Fashion-MNIST is unavailable.
    """
    from tqdm import tqdm

    config = config or ScenesConfig()
    config.check()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} already exists and is not an empty folder; choose a new folder or delete it first.")
    pools = _item_pools(config.seed, fashion_mnist_root)
    classes = list(FASHION_MNIST_CLASSES)
    out.mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")
    counts, class_counts = {}, {}
    for split in SPLITS:
        count = getattr(config, split)
        if count == 0:
            continue
        folders = {name: out / split / name for name in ("images", "labels", "annotations", "masks", "instances")}
        for folder in folders.values():
            folder.mkdir(parents=True)
        items, item_labels = pools[split]
        annotated = []
        for index in tqdm(range(count), desc=f"scenes {split}", unit="canvas", disable=not progress, leave=False):
            rng = numpy.random.default_rng([config.seed, _SPLIT_CODES[split], index])
            image, instances, boxes, labels = compose_scene(rng, items, item_labels, config)
            stem = f"{index:06d}"
            semantic = numpy.zeros_like(instances)
            semantic[instances > 0] = labels[instances[instances > 0] - 1] + 1  # class k -> k + 1
            _save_png(image, folders["images"] / f"{stem}.png")
            _save_png(semantic, folders["masks"] / f"{stem}.png")
            _save_png(instances, folders["instances"] / f"{stem}.png")
            annotation = ImageAnnotation(
                file=folders["images"] / f"{stem}.png", width=config.size, height=config.size, boxes=boxes,
                labels=labels, image_id=index + 1,
                segmentations=[mask_to_rle(instances == number) for number in range(1, len(labels) + 1)])
            (folders["labels"] / f"{stem}.txt").write_text(yolo_text(annotation), encoding="utf-8")
            (folders["annotations"] / f"{stem}.xml").write_text(voc_xml(annotation, classes), encoding="utf-8")
            annotated.append(annotation)
        split_set = AnnotationSet(classes, annotated)
        write_coco(split_set, out / "annotations" / f"instances_{split}.json", image_dir=folders["images"])
        counts[split] = (count, split_set.num_objects)
        all_labels = numpy.concatenate([image.labels for image in annotated]) if annotated else numpy.zeros(0, int)
        class_counts[split] = numpy.bincount(all_labels, minlength=len(classes)).tolist()
    (out / "README.txt").write_text(_readme(config, counts, class_counts), encoding="utf-8")
    return counts


def scenes_config(**settings) -> ScenesConfig:
    """A ScenesConfig from keyword settings, None meaning "the default" (for the CLI)."""
    return dataclasses.replace(ScenesConfig(), **{key: value for key, value in settings.items() if value is not None})
