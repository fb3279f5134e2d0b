"""Segmentation on the scenes benchmark: U-Net, DeepLabV3, FCN (mIoU), Mask R-CNN and the YOLO-style one-stage
instance segmenter (mask mAP@.5).

What it measures, per model: train within a CPU time budget (`--minutes`, default 30) on the scenes
benchmark's train split (validated on val after every epoch, best checkpoint by the task's monitor), then
on the 500 test canvases:

  segment   mIoU over the 11 classes (background + 10 garments), pixel accuracy, mean Dice, per-class IoU
  instance  COCO mask mAP@.5 and mAP@[.5:.95] (pycocotools, iouType segm), and box mAP@.5

and inference speed: test images per second through the model alone (batches of 16, preprocessed,
eval mode, the run's precision). Goals (issue 7): U-Net and DeepLabV3 >= 0.80 mIoU, FCN >= 0.75 mIoU,
Mask R-CNN >= 0.75 mask mAP@.5; issue 25 (from a garment-trained encoder): U-Net >= 0.72, DeepLabV3 >= 0.70,
FCN >= 0.68 mIoU, Mask R-CNN >= 0.78 mask mAP@.5, and yolo_seg_fastnet >= 0.69 mask mAP@.5 in 15 minutes on 1 thread (1.1x
ultralytics YOLO11n-seg's 0.625 under those conditions).

The budget: `cnnkit.train` with `budget=` the minutes (cnnkit.engine.budget): the Trainer plans the epochs and
the LR schedule from its measured step, validation and checkpoint times, re-plans as it goes (a machine that
gets busier shortens the plan) and ends inside the budget, the last epoch possibly partial. Rows measured
before 2026-12-06 22:30 UTC used this script's own calibration (10 timed steps) and a guard between epochs
instead; their "epochs" read run/planned.

    .venv/bin/python benchmarks/segmentation.py --data data/scenes            # all four, 30 min each
    .venv/bin/python benchmarks/segmentation.py --data data/scenes --models unet deeplabv3 --minutes 10
    .venv/bin/python benchmarks/segmentation.py --quick                       # smoke test: tiny data, seconds
    .venv/bin/python benchmarks/segmentation.py --models unet --encoder garments   # encoder from a garment classifier
    .venv/bin/python benchmarks/segmentation.py --models unet --encoder scene-crops  # ... trained on the scenes' garments
    .venv/bin/python benchmarks/segmentation.py --models unet_fastnet --encoder garments --encoder-minutes 6
    .venv/bin/python benchmarks/segmentation.py --models unet_fastnet --encoder garments --seed 1 \
        --encoder-run fastnet=RUNS/encoder-garments-fastnet      # another seed, the same encoder
    .venv/bin/python benchmarks/segmentation.py --models deeplabv3_fastnet fcn_fastnet --encoder garments \
        --encoder-minutes 6                                      # DeepLabV3 / FCN on the same fastnet encoder
    .venv/bin/python benchmarks/segmentation.py --models deeplabv3_fastnet --encoder garments --encoder-minutes 12 \
        --tag enc12 --seed 2                                     # a variant's rows beside the earlier ones

The scenes data is made with `cnnkit data make-scenes DATA --seed 0` when DATA does not exist yet.
Writes benchmarks/results/segmentation.json and .md (segmentation-quick.* for --quick).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

NAME = "segmentation"
# Settings shared by the semantic-segmentation runs. AdamW with a one-cycle schedule; flips and scale jitter;
# no colour jitter (the scenes already tint every garment at random). Loss ce+dice: in 4-epoch runs of
# unet_resnet18 (1 thread, busy machine) val mIoU 0.364 against 0.327 with ce alone.
SEGMENT_COMMON = {"task": "segment", "batch_size": 16, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 1e-4,
                  "schedule": "onecycle", "hflip": True, "translate": 0, "scale": 0.25, "seg_loss": "ce+dice"}
MODELS = {
    # A lighter decoder than segmentation_models_pytorch's (256 ... 16): 0.85 against 1.35 GMACs per 128-px image,
    # 50 against 35 training images/s (batch 16, 2 threads, bf16), so ~40% more epochs fit the budget.
    "unet": {**SEGMENT_COMMON, "model": "unet_resnet18", "model_args": {"decoder_channels": [128, 64, 32, 16, 8]},
             "goal": ("test_miou", 0.80)},
    # U-Net on fastnet (cnnkit.models.fastnet, the Fashion-MNIST classifier of `make demo`): its pyramid at strides
    # 1, 2, 4, 8 and a receptive field of ~52 px at the deepest level, the size of the scenes' garments (28-54 px);
    # decoder 64-32-16-8, so a training step costs what unet_resnet18's does (48 against 47 images/s, batch 16,
    # 2 threads, bf16; with unet's 128-64-32-16 decoder 24 images/s: its widest blocks run at full resolution).
    # Flip TTA (tta=true: logits of the image and its mirror averaged, twice the inference cost): the seed-0 run's
    # best checkpoint scored test mIoU 0.7055 without and 0.7300 with it (2026-12-07, AMD EPYC family 25 model 17).
    "unet_fastnet": {**SEGMENT_COMMON, "model": "unet", "model_args": {"encoder": "fastnet",
                                                                       "decoder_channels": [64, 32, 16, 8]},
                     "tta": True, "goal": ("test_miou", 0.80)},
    # DeepLabV3 and FCN on the same fastnet encoder (cnnkit.models.segmentation.fastnet_backbone) at output stride 4:
    # the scenes' masks, area-averaged to a stride-s grid and upsampled bilinearly, score mIoU 0.94 / 0.85 / 0.64 at
    # s = 4 / 8 / 16 (test split), a ceiling on any head that predicts at stride s. ASPP at 64 channels: training
    # images/s (batch 16, fp32, 2 threads, Intel Xeon family 6 model 207) 33 at stride 4, against 22 with 128
    # channels and 12 with torchvision's 256; FCN at stride 4: 51. Flip TTA as above.
    "deeplabv3_fastnet": {**SEGMENT_COMMON, "model": "deeplabv3_fastnet", "tta": True,
                          "model_args": {"output_stride": 4, "aspp_channels": 64}, "goal": ("test_miou", 0.80)},
    "fcn_fastnet": {**SEGMENT_COMMON, "model": "fcn_fastnet", "tta": True, "model_args": {"output_stride": 4},
                    "goal": ("test_miou", 0.75)},
    "deeplabv3": {**SEGMENT_COMMON, "model": "deeplabv3_resnet18", "model_args": {"output_stride": 16},
                  "goal": ("test_miou", 0.80)},
    "fcn": {**SEGMENT_COMMON, "model": "fcn_resnet18", "model_args": {"output_stride": 16},
            "goal": ("test_miou", 0.75)},
    # As the detection benchmark's Faster R-CNN (resnet18 FPN, box mAP@.5 0.80 in 30 min with 2 threads): batch 16,
    # peak LR 2e-3, a short ramp, gradient clipping and the default box-aware augmentation (masks move along).
    # The pyramid starts at stride 8 (as Faster R-CNN's): RoIs pooled from the 16x16 map, a training step 0.57 s
    # against 0.69 s from stride 4 (batch 16, 2 threads, bf16), so more epochs fit; masks are 14x14 RoIs either way.
    "maskrcnn": {"task": "instance", "model": "maskrcnn_resnet18_fpn", "batch_size": 16, "optimizer": "adamw",
                 "lr": 2e-3, "weight_decay": 5e-4, "schedule": "onecycle", "onecycle_pct": 0.15,
                 "grad_clip_norm": 10.0, "detect_augment": "default",
                 "model_args": {"fpn_strides": [8, 16, 32], "anchor_sizes": [16, 32, 64, 128]},
                 "goal": ("test_mask_map50", 0.75)},
    # The one-stage segmenter (cnnkit.models.yolo_seg): yolo_fastnet's detection recipe (benchmarks/detection.py:
    # batch 32, AdamW at 3e-3, a short ramp, clipped gradients, the default box-aware augmentation, flip_test for
    # boxes and scores: +0.9 points of box mAP@.5 there) with masks.
    "yolo_seg": {"task": "instance", "model": "yolo_seg_fastnet", "batch_size": 32, "optimizer": "adamw",
                 "lr": 3e-3, "weight_decay": 5e-4, "schedule": "onecycle", "onecycle_pct": 0.15,
                 "grad_clip_norm": 10.0, "detect_augment": "default", "model_args": {"flip_test": True},
                 "goal": ("test_mask_map50", 0.69)},
}
BENCHMARK_KEYS = ("goal",)  # keys of MODELS entries that are not training settings
# Issue 25 §3, `--encoder garments`: the encoder starts from a classifier of the same backbone trained on the
# garments themselves (Fashion-MNIST), as practitioners start from ImageNet. 64 px, so resnet18 keeps the
# ImageNet stem (stride 4) that the 128-px segmenters use and its layers fit them tensor for tensor
# (cnnkit.transfer.load_matching; the gray stem kernels spread over RGB); garments on the scenes' canvases are
# 28-54 px, so the zoom augmentation covers their scales. Its minutes are reported apart and in the total.
ENCODER = {"task": "classify", "model": "resnet18", "data": "fashion-mnist", "image_size": 64, "channels": 1,
           "batch_size": 128, "optimizer": "adamw", "lr": 3e-3, "weight_decay": 5e-4, "schedule": "onecycle",
           "hflip": True, "translate": 6, "scale": 0.3, "label_smoothing": 0.1}
# `--encoder scene-crops`: the same classifier trained on the garments as the scenes show them: 64x64 windows of
# the train split's canvases around each object at its own scale (28-54 px, with its tint, clutter and
# neighbours), labelled with its class; RGB, so the encoder's stem fits the segmenters' as it is.
SCENE_ENCODER = {**ENCODER, "channels": 3, "translate": 4, "scale": 0.1}
# unet_fastnet's encoder: fastnet with the fast recipe's optimizer (one-cycle SGD, label smoothing), at 40 px with
# zoom 0.7-1.3 so the garments it learns span the scenes' 28-54 px.
FASTNET_ENCODER = {"task": "classify", "model": "fastnet", "data": "fashion-mnist", "image_size": 40, "channels": 1,
                   "batch_size": 256, "optimizer": "sgd", "schedule": "onecycle", "label_smoothing": 0.1,
                   "hflip": True, "translate": 4, "scale": 0.3, "channels_last": True}
ENCODER_RECIPES = {"resnet18": ENCODER, "fastnet": FASTNET_ENCODER}
WINDOW = 64
ENCODER_MODELS = {"unet": "resnet18", "deeplabv3": "resnet18", "fcn": "resnet18", "maskrcnn": "resnet18",
                  "unet_fastnet": "fastnet", "deeplabv3_fastnet": "fastnet", "fcn_fastnet": "fastnet"}
# ^ the segmenters with a zoo encoder, and its backbone
ORACLE_NOTE = ("true masks painted with the classifier's class for each object; with benchmarks/scenes_data.py's "
               "fastnet on 32-px squashed crops: 0.7995")
# within 30 minutes of segmentation
GARMENT_GOALS = {"unet": 0.72, "unet_fastnet": 0.72, "deeplabv3": 0.70, "deeplabv3_fastnet": 0.70, "fcn": 0.68,
                 "fcn_fastnet": 0.68, "maskrcnn": 0.78}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/scenes", help="scenes benchmark folder (made if missing)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget per model (default 30)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: one per core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="parent of the run directories (default: a temporary folder)")
    parser.add_argument("--results-dir", default=None, help="where the .json/.md go (default benchmarks/results)")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny scenes, a few seconds per model")
    parser.add_argument("--note", default=None,
                        help="conditions of this run worth knowing (e.g. other work on the machine), kept with its rows")
    parser.add_argument("--encoder", choices=("scratch", "garments", "scene-crops"), default="scratch",
                        help="garments: start the encoders (resnet18: unet, deeplabv3, fcn, maskrcnn; fastnet: "
                             "unet_fastnet, deeplabv3_fastnet, fcn_fastnet) from a Fashion-MNIST classifier of the same backbone trained first "
                             "(rows named MODEL+garments); scene-crops: from "
                             "a classifier of 64x64 windows around the train split's objects (MODEL+scene-crops); "
                             "default scratch")
    parser.add_argument("--encoder-minutes", type=float, default=10.0,
                        help="the garment classifier's training budget (default 10), counted in each row's total")
    parser.add_argument("--encoder-run", nargs="+", default=[], metavar="[BACKBONE=]RUN",
                        help="reuse this garment classifier run instead of training one (its recorded minutes count); "
                             "BACKBONE=RUN (resnet18=..., fastnet=...) when the models need several backbones")
    parser.add_argument("--encoder-only", action="store_true",
                        help="train the --encoder classifier (and, for scene-crops, score the scenes' oracle with it), "
                             "no segmenter; writes segmentation-encoder.json and .md")
    parser.add_argument("--tag", default=None,
                        help="appended to the rows' names (MODEL+garments-TAG-seedN), so a variant (another encoder, "
                             "another setting) stands beside the earlier rows instead of replacing them")
    parser.add_argument("--fresh", action="store_true",
                        help="drop the rows of models not run this time (default: keep them from segmentation.json)")
    return parser.parse_args()


def make_scenes(folder: Path, quick: bool) -> None:
    if folder.exists():
        return
    sizes = ["--train", "24", "--val", "8", "--test", "8", "--size", "64"] if quick else []
    print(f"making the scenes benchmark in {folder} ...", flush=True)
    subprocess.run([sys.executable, "-m", "cnnkit", "data", "make-scenes", str(folder), "--seed", "0", "--quiet",
                    *sizes], check=True)


def settings_for(name: str, args, out: Path, encoder: dict | None = None) -> dict:
    settings = {key: value for key, value in MODELS[name].items() if key not in BENCHMARK_KEYS}
    settings.update(data=str(args.data), seed=args.seed, out=str(out), name=name, progress=False, report=False,
                    num_threads=args.threads or 0)
    if encoder is not None:
        settings["pretrained"] = encoder["run"]
    if args.quick:  # two tiny epochs instead of a budget
        settings.update(batch_size=4, val_every=1, epochs=2,
                        model_args={**settings.get("model_args", {}), **quick_model_args(name)})
    else:  # the Trainer plans the epochs and the LR schedule for the budget
        settings.update(budget=f"{args.minutes:g}m")
    return settings


def quick_model_args(name: str) -> dict:
    return {"maskrcnn": {"fpn_channels": 32, "representation_size": 64},
            "yolo_seg": {"neck_width": 32, "proto_width": 16}}.get(name, {})


def count_images(data: Path, split: str) -> int:
    return sum(1 for _ in (data / split / "images").iterdir())


def inference_speed(predictor, settings: dict, task: str) -> float:
    """Test images per second through the model alone (batches of 16, eval mode)."""
    import torch

    from cnnkit.config import TrainConfig

    config = TrainConfig(**{**settings, "batch_size": 16})
    if task == "segment":
        from cnnkit.tasks.segmentation import make_loader, prepare_data

        data = prepare_data(config, predictor.preprocessing, check=False)
        loader = make_loader(data.test, predictor.preprocessing, config, train=False)
    else:
        from cnnkit.tasks.instance import make_instance_loader, read_instance_data

        loader = make_instance_loader(read_instance_data(config, verbose=False, splits=("train", "test")).test,
                                      config, train=False)
    from cnnkit.device import resolve_precision

    dtype = resolve_precision(config.precision, predictor.device)
    count, started = 0, time.perf_counter()
    with torch.no_grad(), torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        for images, _ in loader:
            if task == "segment":
                predictor.model(images)
            else:
                predictor.model([image.float().div(255) for image in images])
            count += len(images)
    return count / (time.perf_counter() - started)


def window(picture, box: list[float], size: int = WINDOW):
    """The SIZE x SIZE window of `picture` centred on `box`, shifted to stay inside the picture."""
    left = min(max(0, round((box[0] + box[2]) / 2 - size / 2)), max(0, picture.width - size))
    top = min(max(0, round((box[1] + box[3]) / 2 - size / 2)), max(0, picture.height - size))
    return picture.crop((left, top, left + size, top + size))


def write_windows(scenes: Path, out: Path, size: int = WINDOW) -> dict[str, int]:
    """SIZE x SIZE windows of the train and test canvases, one around each object at its own scale (shifted to
    stay inside the canvas), as class folders out/SPLIT/CLASS/N.png: what the segmenters' encoders must see."""
    import numpy

    from scenes_data import write_crops

    counts = write_crops(scenes, out, crop=lambda picture, box: numpy.asarray(window(picture, box, size)))
    out.with_name(out.name + ".json").write_text(json.dumps(counts))  # beside, not in, the class folders: done
    return counts


def reused_encoder_run(args, backbone: str) -> str | None:
    """The `--encoder-run` given for `backbone` (BACKBONE=RUN, or a bare RUN for any), or None."""
    for value in args.encoder_run:
        name, separator, run = value.partition("=")
        if not separator:
            return value
        if name == backbone:
            return run
    return None


def train_encoder(args, out: Path, backbone: str = "resnet18") -> dict:
    """The classifier the encoders start from (`--encoder garments` or `scene-crops`): its run, minutes and test
    accuracy (Fashion-MNIST's test split, or the windows of the scenes' test split)."""
    import cnnkit

    recipe, name = (ENCODER_RECIPES[backbone], f"encoder-garments-{backbone}") if args.encoder == "garments" \
        else (SCENE_ENCODER, "encoder-scene-crops")
    if args.encoder == "scene-crops":
        windows = out / "scene-windows"
        if not windows.with_name(windows.name + ".json").is_file():
            counts = write_windows(Path(args.data), windows)
            print(f"encoder data: {counts['train']} train / {counts['test']} test windows of {WINDOW} px in {windows}",
                  flush=True)
        recipe = {**recipe, "data": str(windows)}

    reused = reused_encoder_run(args, backbone)
    if reused:
        run_dir = Path(reused)
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        seconds = sum(json.loads(line)["epoch_seconds"] for line in lines)
    else:
        settings = {**recipe, "out": str(out), "name": name, "seed": args.seed, "progress": False,
                    "report": False, "num_threads": args.threads or 0,
                    "budget": f"{0.1 if args.quick else args.encoder_minutes:g}m"}
        print(f"encoder: {backbone} on {settings['data']} at {recipe['image_size']} px, budget {settings['budget']}",
              flush=True)
        started = time.perf_counter()
        run_dir = cnnkit.train(settings).run_dir
        seconds = time.perf_counter() - started
    accuracy = cnnkit.load(run_dir, device="cpu").evaluate("test")["accuracy"]
    print(f"encoder: {run_dir}, {seconds / 60:.1f} min, test accuracy {accuracy:.4f}", flush=True)
    result = {"run": str(run_dir), "seconds": seconds, "test_accuracy": accuracy, "settings": dict(recipe),
              "kind": args.encoder}
    if args.encoder == "scene-crops":  # issue 25 §3: the scenes' oracle with this (stronger) crop classifier
        import numpy

        from scenes_data import oracle_scores

        oracle = oracle_scores(run_dir, Path(args.data), crop=lambda picture, box: numpy.asarray(window(picture, box)))
        result["oracle"] = {key: oracle[key] for key in ("accuracy", "map50", "miou", "iou")}
        print(f"oracle with this classifier: crop accuracy {oracle['accuracy']:.4f}, oracle-box mAP@.5 "
              f"{oracle['map50']:.4f}, oracle-mask mIoU {oracle['miou']:.4f}", flush=True)
    return result


def row_name(name: str, tag: str | None, seed: int) -> str:
    """A row's name in segmentation.json: a --tag and a seed other than 0 stand beside the earlier rows, not over them."""
    return name + (f"-{tag}" if tag else "") + (f"-seed{seed}" if seed else "")


def run_model(name: str, args, out: Path, encoder: dict | None = None) -> dict:
    import cnnkit

    settings = settings_for(name, args, out, encoder)
    task = settings["task"]
    print(f"{name}: {settings['model']}, " + (f"budget {args.minutes:g} min" if "budget" in settings else "quick")
          + (f", encoder from {encoder['run']}" if encoder else ""), flush=True)
    started = time.perf_counter()
    run_dir = cnnkit.train(settings).run_dir
    train_seconds = time.perf_counter() - started
    plan = json.loads((run_dir / "budget.json").read_text()) if "budget" in settings else {}
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    predictor = cnnkit.load(run_dir, device="cpu")
    test = predictor.evaluate("test")
    speed = inference_speed(predictor, settings, task)
    key, goal = MODELS[name]["goal"]
    row = {"name": name, "model": settings["model"], "task": task, "settings": settings, "epochs": len(metrics),
           "epochs_run": len(metrics), "stopped_by_budget": False, "budget_minutes": args.minutes,
           "budget_seconds_used": plan.get("used"), "train_seconds": train_seconds,
           "epoch_seconds": sum(m["epoch_seconds"] for m in metrics), "best_epoch": predictor.record.get("epoch"),
           "val_history": [{k: v for k, v in m.items() if k.startswith("val_") or k == "epoch"} for m in metrics],
           "inference_images_per_second": speed, "goal": {"metric": key, "value": goal},
           "params": sum(parameter.numel() for parameter in predictor.model.parameters())}
    if task == "segment":
        row.update(test_miou=test["miou"], test_pixel_accuracy=test["pixel_accuracy"], test_mean_dice=test["mean_dice"],
                   test_per_class_iou={k: v["iou"] for k, v in test["per_class"].items()})
    else:
        row.update(test_mask_map50=test["mask_map50"], test_mask_map=test["mask_map"], test_box_map50=test["map50"],
                   test_per_class_mask_ap50={k: v.get("mask_ap50") for k, v in test["per_class"].items()},
                   # the same masks painted as a semantic map, comparable with the segment rows' mIoU
                   test_semantic_miou=test.get("semantic_miou"),
                   test_per_class_semantic_iou={"background": test.get("semantic_background_iou"),
                                                **{k: v.get("sem_iou") for k, v in test["per_class"].items()}})
    row["goal_met"] = row[key] >= goal
    if encoder is not None:  # issue 25 §3's goals for segmenters from a garment-trained encoder
        row["name"] = f"{name}+{encoder.get('kind', 'garments')}"
        row["encoder"] = encoder
        row["total_seconds"] = encoder["seconds"] + train_seconds
        goal = GARMENT_GOALS[name]
        row["goal"] = {"metric": key, "value": goal}
        row["goal_met"] = row[key] >= goal
    row["name"] = row_name(row["name"], args.tag, args.seed)
    if args.note:
        row["note"] = args.note
    print(f"{name}: {key} {row[key]:.4f} (goal {goal}), {train_seconds / 60:.1f} min, "
          f"{speed:.1f} test images/s", flush=True)
    return row


def markdown(rows: list[dict], args) -> str:
    headers = ["model", "task", "params", "epochs", "budget min", "train min", "test metric", "value", "goal", "met",
               "infer img/s"]
    table = []
    for row in rows:
        key, goal = row["goal"]["metric"], row["goal"]["value"]
        epochs = f"{row['epochs_run']}/{row['epochs']}" + (" (budget)" if row["stopped_by_budget"] else "")
        if "budget_seconds_used" in row:  # planned by the Trainer's budget=: the epochs it ran (the last may be partial)
            epochs = f"{row['epochs_run']}"
        params = f"{row['params'] / 1e6:.2f}M" if "params" in row else "-"
        table.append([f"{row['name']} ({row['model']})", row["task"], params, epochs, f"{row.get('budget_minutes', args.minutes):g}",
                      f"{row['train_seconds'] / 60:.1f}",
                      key.removeprefix("test_"), f"{row[key]:.4f}", goal, "yes" if row["goal_met"] else "NO",
                      f"{row['inference_images_per_second']:.1f}"])
    lines = ["Each model trained within its budget (train + per-epoch validation; epochs planned by the Trainer's "
             "budget=, or for older rows calibrated first), its best validation checkpoint evaluated on the test split.", "", _common.markdown_table(headers, table), ""]
    for row in rows:
        if row["task"] == "segment":
            per_class = ", ".join(f"{k} {v:.3f}" for k, v in row["test_per_class_iou"].items() if v is not None)
            lines += [f"- {row['name']}: pixel accuracy {row['test_pixel_accuracy']:.4f}, mean Dice "
                      f"{row['test_mean_dice']:.4f}; per-class IoU: {per_class}"]
        else:
            lines += [f"- {row['name']}: mask mAP@[.5:.95] {row['test_mask_map']:.4f}, box mAP@.5 "
                      f"{row['test_box_map50']:.4f}"]
            if row.get("test_semantic_miou") is not None:  # rows from before the instance task scored it lack it
                per_class = ", ".join(f"{k} {v:.3f}" for k, v in row["test_per_class_semantic_iou"].items()
                                      if v is not None)
                lines[-1] += (f"; its masks painted as a semantic map (score >= 0.25): mIoU "
                              f"**{row['test_semantic_miou']:.4f}** ({per_class})")
        if row.get("encoder"):
            encoder = row["encoder"]
            source = ("64x64 windows around the scenes' train objects" if encoder.get("kind") == "scene-crops"
                      else "Fashion-MNIST")
            lines[-1] += (f". Encoder: {encoder['settings'].get('model', 'resnet18')} trained on {source} first "
                          f"({encoder['seconds'] / 60:.1f} min, test accuracy {encoder['test_accuracy']:.4f}); "
                          f"total {row['total_seconds'] / 60:.1f} min")
            if encoder.get("oracle"):
                lines[-1] += (f". The scenes' oracle with this classifier: oracle-mask mIoU "
                              f"{encoder['oracle']['miou']:.4f} ({ORACLE_NOTE})")
        if row.get("note"):
            lines[-1] += f". Conditions: {row['note']}"
    lines += ["", "Settings per model (cnnkit train key=value):", ""]
    for row in rows:
        shown = {k: v for k, v in row["settings"].items() if k not in ("data", "out", "name", "progress", "report")}
        lines.append(f"- {row['name']}: `{' '.join(f'{k}={json.dumps(v) if isinstance(v, dict) else v}' for k, v in shown.items())}`"
                     + ("" if "budget" in row["settings"] else f" epochs={row['epochs']}"))
    return "\n".join(lines) + "\n\n" + _common.runs_markdown(rows, "name")


def write_encoder_result(encoder: dict | None, header: dict, args) -> None:
    if encoder is None:
        raise SystemExit("--encoder-only needs --encoder garments or scene-crops")
    lines = [f"Encoder `--encoder {encoder['kind']}`: {encoder['settings'].get('model', 'resnet18')}, "
             f"{encoder['seconds'] / 60:.1f} min, test accuracy {encoder['test_accuracy']:.4f}.", ""]
    if encoder.get("oracle"):
        oracle = encoder["oracle"]
        lines += [f"The scenes' oracle with this classifier (test split, true boxes and masks): crop accuracy "
                  f"{oracle['accuracy']:.4f}, oracle-box mAP@.5 {oracle['map50']:.4f}, oracle-mask mIoU "
                  f"**{oracle['miou']:.4f}** ({ORACLE_NOTE}).", "",
                  "Per-class oracle IoU: " + ", ".join(f"{name} {value:.3f}" for name, value in oracle["iou"].items()
                                                       if value is not None), ""]
    lines.append(f"Settings: `{' '.join(f'{k}={v}' for k, v in encoder['settings'].items())}`")
    _common.finish("segmentation-encoder", "The segmenters' encoder on its own (issue 25 §3)", header,
                   {"encoder": encoder}, "\n".join(lines) + "\n", args.results_dir)


def main() -> None:
    args = parse_args()
    _common.set_threads(args.threads)  # before the header, which records torch's thread count
    header = _common.run_header(args.quick)
    with tempfile.TemporaryDirectory() as temporary:
        if args.quick:
            args.data = str(Path(temporary) / "scenes")
            args.minutes = min(args.minutes, 0.05)
        make_scenes(Path(args.data), args.quick)
        out = Path(args.out) if args.out else Path(temporary) / "runs"
        encoders: dict[str, dict] = {}  # backbone -> its garment classifier
        if args.encoder != "scratch":
            unfit = [name for name in args.models if name not in ENCODER_MODELS
                     or (args.encoder == "scene-crops" and ENCODER_MODELS[name] != "resnet18")]
            if unfit:
                raise SystemExit(f"--encoder {args.encoder}: {', '.join(unfit)} has no encoder for it; choose among "
                                 f"{', '.join(ENCODER_MODELS)} (scene-crops: the resnet18 ones)")
            for backbone in dict.fromkeys(ENCODER_MODELS[name] for name in args.models):
                encoders[backbone] = train_encoder(args, out, backbone)
        if args.encoder_only:
            write_encoder_result(next(iter(encoders.values()), None), header, args)
            return
        rows = [run_model(name, args, out, encoders.get(ENCODER_MODELS.get(name))) for name in args.models]
    order = [*MODELS, *(f"{name}+{kind}" for kind in ("garments", "scene-crops") for name in ENCODER_MODELS)]
    rows = _common.merge_previous(NAME, header, rows, "name", order, args.results_dir, args.fresh)
    title = "Segmentation on the scenes benchmark (U-Net, DeepLabV3, FCN, Mask R-CNN, YOLO-seg)"
    _common.finish(NAME, title, header, {"minutes": args.minutes, "results": rows}, markdown(rows, args),
                   args.results_dir)


if __name__ == "__main__":
    main()
