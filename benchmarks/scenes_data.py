"""The scenes benchmark's data side: how fast it is made and loaded, and how hard it is.

What it measures, on a scenes set made with the given settings (default: `cnnkit data make-scenes`'s):

  make       seconds to write the set (all splits, all formats), ms per canvas, size on disk
  load       seconds to read the train split's COCO JSON and decode it into memory as uint8
             (DetectionDataset, in_memory=True), and the bytes it takes
  augment    ms per training item through DetectionDataset with each augmentation preset
  ceiling    how well the garments can be told apart when the boxes are perfect: fastnet is trained on
             the ground-truth crops of the train split (resized to 32x32, `cnnkit train` defaults,
             --ceiling-epochs) and scored on the test split's crops, both as accuracy and as mAP@.5 with
             the true boxes and fastnet's 10 class probabilities as scores (what a detector with perfect
             localisation would get). A detector's mAP@.5 is bounded by roughly this number, so it says
             whether the issue's 0.90 target is reachable on this set. The same classifier also gives an
             oracle-mask mIoU: every object's true visible mask painted with fastnet's class for its crop,
             the background exact (what a semantic segmenter with perfect boundaries and crop-classifier
             recognition would get; it bounds the U-Net/DeepLabV3/FCN mIoU of issue 7 in the same way).

    .venv/bin/python benchmarks/scenes_data.py                       # the defaults: 4000/500/500 canvases, ~10 min
    .venv/bin/python benchmarks/scenes_data.py --train 3000 --min-objects 1 --max-objects 4 --max-scale 0.45
    .venv/bin/python benchmarks/scenes_data.py --quick               # smoke test: 40/10/10 canvases, 1 epoch

    .venv/bin/python benchmarks/scenes_data.py --resolution-ceiling data/scenes   # only the stride ceiling, seconds

Writes benchmarks/results/scenes_data.json and .md (scenes_data-quick.* with --quick; scenes_data-resolution.*
with --resolution-ceiling: the mIoU that a head predicting at output stride 4, 8, 16, 32 and upsampled, as FCN's
and DeepLabV3's are, gets at best on the test masks).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy
import torch
from PIL import Image

import _common
import cnnkit
from cnnkit.data.detection import DetectionDataset, read_split
from cnnkit.data.detection.transforms import AUGMENT_PRESETS, detection_transforms
from cnnkit.data.scenes import ScenesConfig, make_scenes
from cnnkit.metrics.detection import DetectionMeter
from cnnkit.metrics.segmentation import SegmentationMeter

NAME = "scenes_data"
CROP_SIZE = 32


def parse_args() -> argparse.Namespace:
    defaults = ScenesConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(ScenesConfig):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(getattr(defaults, field.name)),
                            default=getattr(defaults, field.name))
    parser.add_argument("--ceiling-epochs", type=int, default=10, help="fastnet epochs on the crops (default 10)")
    parser.add_argument("--augment-items", type=int, default=300, help="items timed per augmentation preset")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script")
    parser.add_argument("--resolution-ceiling", metavar="SCENES", default=None,
                        help="only this: the mIoU ceiling of output strides 4-32 on an existing scenes folder's test "
                             "masks (writes scenes_data-resolution.*)")
    parser.add_argument("--results-dir", default=None)
    args = parser.parse_args()
    if args.quick:
        args.train, args.val, args.test, args.ceiling_epochs, args.augment_items = 40, 10, 10, 1, 20
    return args


def squashed_crop(picture: Image.Image, box: list[float]) -> numpy.ndarray:
    """The object's box resized to CROP_SIZE x CROP_SIZE (the crops `write_crops` writes), (H, W, 3) uint8."""
    return numpy.asarray(picture.crop(tuple(int(value) for value in box)).resize((CROP_SIZE, CROP_SIZE),
                                                                                 Image.BILINEAR))


def write_crops(scenes: Path, out: Path, crop=squashed_crop) -> dict[str, int]:
    """The ground-truth crops of train and test as class folders (out/SPLIT/k/N.png): `crop(picture, box)`,
    by default the box squashed to 32x32 RGB."""
    counts = {}
    for split in ("train", "test"):
        count = 0
        for image in read_split(scenes, split).images:
            with Image.open(image.file) as picture:
                picture = picture.convert("RGB")
                for box, label in zip(image.boxes.tolist(), image.labels.tolist()):
                    folder = out / split / f"{label}"
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(crop(picture, box)).save(folder / f"{count}.png")
                    count += 1
        counts[split] = count
    return counts


def oracle_scores(run_dir: Path, scenes: Path, crop=squashed_crop) -> dict:
    """The crop classifier on the test split with the true boxes and masks: accuracy, mAP@.5 and per-class
    AP50 (true boxes), oracle-mask mIoU and per-class IoU (true masks painted with the predicted classes).
    `crop(picture, box)` cuts what the classifier was trained on ((H, W, 3) uint8)."""
    classifier = cnnkit.load(run_dir, device="cpu")
    folder_class = [int(name) for name in classifier.classes]  # class folders are named by label index
    test = read_split(scenes, "test")
    meter = DetectionMeter(test.classes)
    pixels = SegmentationMeter(["background", *test.classes])
    correct = total = 0
    for image in test.images:
        if not len(image.labels):
            continue
        with Image.open(image.file) as picture:
            picture = picture.convert("RGB")
            crops = [crop(picture, box) for box in image.boxes.tolist()]
        batch = torch.from_numpy(numpy.stack(crops)).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W) uint8
        probabilities = classifier.predict_proba(batch).cpu()  # (N, 10), columns in folder order
        labels = torch.tensor(folder_class)
        truth = torch.from_numpy(image.labels)
        correct += int((labels[probabilities.argmax(1)] == truth).sum())
        total += len(truth)
        boxes = torch.from_numpy(image.boxes)
        count = len(truth)
        # Every object predicted once per class, scored by that class's probability.
        meter.update([{"boxes": boxes.repeat_interleave(len(labels), 0), "scores": probabilities.reshape(-1),
                       "labels": labels.repeat(count)}], [{"boxes": boxes, "labels": truth}])
        # Oracle masks: each object's visible pixels (they do not overlap) get its predicted class + 1.
        masks = torch.from_numpy(image.instance_masks()).bool()  # (N, H, W)
        painted = torch.zeros(masks.shape[1:], dtype=torch.long)
        for mask, label in zip(masks, labels[probabilities.argmax(1)]):
            painted[mask] = int(label) + 1
        semantic = Path(image.file).parent.parent / "masks" / f"{Path(image.file).stem}.png"
        with Image.open(semantic) as picture:
            pixels.update(painted[None], torch.from_numpy(numpy.asarray(picture, dtype=numpy.int64))[None])
    result = meter.compute(per_class=True)
    segmentation = pixels.compute(per_class=True)
    return {"accuracy": correct / max(total, 1), "map50": result["map50"],
            "ap50": {name: values["ap50"] for name, values in result["per_class"].items()},
            "miou": segmentation["miou"], "iou": {name: values["iou"] for name, values in segmentation["per_class"].items()}}


def resolution_ceiling(scenes: Path, strides=(4, 8, 16, 32), split: str = "test") -> dict[int, dict]:
    """mIoU of the true semantic masks seen through a stride-s grid: one-hot masks area-averaged over s x s cells,
    upsampled bilinearly to the image and arg-maxed (what a head that predicts at output stride s and is upsampled,
    as FCN's and DeepLabV3's are, gets at best from perfectly recognised, perfectly averaged logits)."""
    import torch.nn.functional as F

    files = sorted((scenes / split / "masks").glob("*.png"))
    masks = torch.from_numpy(numpy.stack([numpy.asarray(Image.open(file), dtype=numpy.int64) for file in files]))
    classes = ["background", *filter(None, (scenes / "classes.txt").read_text().splitlines())]
    onehot = F.one_hot(masks, len(classes)).permute(0, 3, 1, 2).float()  # (N, K, H, W)
    result = {}
    for stride in strides:
        meter = SegmentationMeter(classes)
        for start in range(0, len(masks), 100):
            low = F.avg_pool2d(onehot[start:start + 100], stride)
            seen = F.interpolate(low, size=masks.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
            meter.update(seen, masks[start:start + 100])
        scores = meter.compute(per_class=True)
        result[stride] = {"miou": scores["miou"],
                          "iou": {name: values["iou"] for name, values in scores["per_class"].items()}}
    return result


def resolution_main(args: argparse.Namespace) -> None:
    header = _common.run_header(False)
    ceiling = resolution_ceiling(Path(args.resolution_ceiling))
    rows = [[stride, f"{values['miou']:.4f}", ", ".join(f"{name} {iou:.3f}" for name, iou in values["iou"].items())]
            for stride, values in ceiling.items()]
    body = (f"Scenes: {args.resolution_ceiling}, test split. The true semantic masks, one-hot, area-averaged over "
            "stride x stride cells, upsampled bilinearly and arg-maxed: the best mIoU of a head that predicts at that "
            "output stride and is upsampled to the image (FCN, DeepLabV3).\n\n"
            + _common.markdown_table(["output stride", "mIoU ceiling", "per-class IoU"], rows) + "\n")
    _common.finish(f"{NAME}-resolution", "Scenes benchmark: the mIoU ceiling of each output stride", header,
                   {"ceiling": {str(k): v for k, v in ceiling.items()}}, body, args.results_dir)


def main() -> None:
    args = parse_args()
    _common.set_threads(args.threads)
    if args.resolution_ceiling:
        resolution_main(args)
        return
    header = _common.run_header(args.quick)
    config = ScenesConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(ScenesConfig)})
    with tempfile.TemporaryDirectory(prefix="cnnkit-scenes-") as workdir:
        scenes = Path(workdir) / "scenes"
        started = time.perf_counter()
        counts = make_scenes(scenes, config, progress=False)
        make_seconds = time.perf_counter() - started
        canvases = sum(images for images, _ in counts.values())
        disk_bytes = sum(path.stat().st_size for path in scenes.rglob("*") if path.is_file())
        print(f"make: {make_seconds:.1f} s for {canvases} canvases", flush=True)

        started = time.perf_counter()
        train = read_split(scenes, "train")
        read_seconds = time.perf_counter() - started
        started = time.perf_counter()
        dataset = DetectionDataset(train, in_memory=True)
        decode_seconds = time.perf_counter() - started
        memory_bytes = sum(image.numel() for image in dataset._images)
        print(f"load: read {read_seconds:.2f} s, decode {decode_seconds:.2f} s", flush=True)

        augment_ms = {}
        items = min(args.augment_items, len(train))
        for preset in AUGMENT_PRESETS:
            augmented = DetectionDataset(train, transforms=detection_transforms(preset, size=config.size))
            augmented._images = dataset._images  # reuse the decoded pixels: time the transforms only
            started = time.perf_counter()
            for index in range(items):
                augmented[index]
            augment_ms[preset] = 1000 * (time.perf_counter() - started) / items
        print("augment ms/item: " + ", ".join(f"{name} {value:.2f}" for name, value in augment_ms.items()), flush=True)

        crops = Path(workdir) / "crops"
        crop_counts = write_crops(scenes, crops)
        started = time.perf_counter()
        run = cnnkit.train({"data": str(crops), "model": "fastnet", "epochs": args.ceiling_epochs,
                            "out": str(Path(workdir) / "runs"), "name": "crops", "progress": False})
        ceiling_seconds = time.perf_counter() - started
        oracle = oracle_scores(run.run_dir, scenes)
        accuracy, map50, per_class = oracle["accuracy"], oracle["map50"], oracle["ap50"]
        print(f"ceiling: crop accuracy {accuracy:.4f}, oracle-box mAP@.5 {map50:.4f}, "
              f"oracle-mask mIoU {oracle['miou']:.4f}", flush=True)

    rows = [[split, images, objects, f"{objects / max(images, 1):.2f}"] for split, (images, objects) in counts.items()]
    body = ("Settings: " + ", ".join(f"{key}={value}" for key, value in dataclasses.asdict(config).items()) + "\n\n"
            + _common.markdown_table(["split", "canvases", "objects", "objects/canvas"], rows) + "\n\n"
            + _common.markdown_table(["measure", "value"], [
                ["make-scenes, all splits", f"{make_seconds:.1f} s ({1000 * make_seconds / canvases:.1f} ms per canvas)"],
                ["size on disk", f"{disk_bytes / 1e6:.0f} MB"],
                ["read train COCO JSON", f"{read_seconds:.2f} s"],
                ["decode train into memory (uint8)", f"{decode_seconds:.2f} s, {memory_bytes / 1e6:.0f} MB"],
                *[[f"augment ({preset}) per item", f"{value:.2f} ms"] for preset, value in augment_ms.items()],
                ["crops train / test", f"{crop_counts['train']} / {crop_counts['test']}"],
                [f"fastnet on crops ({args.ceiling_epochs} epochs)", f"{ceiling_seconds:.0f} s"],
                ["crop test accuracy", f"{accuracy:.4f}"],
                ["oracle-box mAP@.5 (test)", f"{map50:.4f}"],
                ["oracle-mask mIoU (test)", f"{oracle['miou']:.4f}"],
            ])
            + "\n\nPer-class AP@.5 with perfect boxes: "
            + ", ".join(f"{name} {value:.3f}" for name, value in per_class.items() if value is not None)
            + "\n\nPer-class IoU with perfect masks: "
            + ", ".join(f"{name} {value:.3f}" for name, value in oracle["iou"].items() if value is not None)
            + (_common.QUICK_NOTE if args.quick else "") + "\n")
    payload = {"settings": {**vars(args)}, "counts": counts, "make_seconds": make_seconds, "disk_bytes": disk_bytes,
               "read_seconds": read_seconds, "decode_seconds": decode_seconds, "memory_bytes": memory_bytes,
               "augment_ms_per_item": augment_ms, "crop_counts": crop_counts, "ceiling_seconds": ceiling_seconds,
               "crop_test_accuracy": accuracy, "oracle_box_map50": map50, "oracle_box_ap50_per_class": per_class,
               "oracle_mask_miou": oracle["miou"], "oracle_mask_iou_per_class": oracle["iou"]}
    _common.finish(NAME, "Scenes benchmark data: generation, loading, augmentation, difficulty", header, payload, body,
                   args.results_dir)


if __name__ == "__main__":
    main()
