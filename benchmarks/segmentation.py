"""Segmentation on the scenes benchmark: U-Net, DeepLabV3, FCN (mIoU) and Mask R-CNN (mask mAP@.5).

What it measures, per model: train within a CPU time budget (`--minutes`, default 30) on the scenes
benchmark's train split (validated on val after every epoch, best checkpoint by the task's monitor), then
on the 500 test canvases:

  segment   mIoU over the 11 classes (background + 10 garments), pixel accuracy, mean Dice, per-class IoU
  instance  COCO mask mAP@.5 and mAP@[.5:.95] (pycocotools, iouType segm), and box mAP@.5

and inference speed: test images per second through the model alone (batches of 16, preprocessed,
eval mode, the run's precision). Goals (issue 7): U-Net and DeepLabV3 >= 0.80 mIoU, FCN >= 0.75 mIoU,
Mask R-CNN >= 0.75 mask mAP@.5.

The budget: a short calibration (a few training steps through the real data pipeline) measures
images per second, and the number of epochs is chosen so that training and validation fit in the
budget (the LR schedule needs the length in advance). The measured training time is reported beside
the budget, so an overrun is visible.

    .venv/bin/python benchmarks/segmentation.py --data data/scenes            # all four, 30 min each
    .venv/bin/python benchmarks/segmentation.py --data data/scenes --models unet deeplabv3 --minutes 10
    .venv/bin/python benchmarks/segmentation.py --quick                       # smoke test: tiny data, seconds

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
    "unet": {**SEGMENT_COMMON, "model": "unet_resnet18", "goal": ("test_miou", 0.80)},
    "deeplabv3": {**SEGMENT_COMMON, "model": "deeplabv3_resnet18", "model_args": {"output_stride": 16},
                  "goal": ("test_miou", 0.80)},
    "fcn": {**SEGMENT_COMMON, "model": "fcn_resnet18", "model_args": {"output_stride": 16},
            "goal": ("test_miou", 0.75)},
    "maskrcnn": {"task": "instance", "model": "maskrcnn_resnet18_fpn", "batch_size": 8, "optimizer": "adamw",
                 "lr": 1e-3, "weight_decay": 1e-4, "schedule": "onecycle", "goal": ("test_mask_map50", 0.75)},
}
CALIBRATION_STEPS = 6  # timed training steps (after 2 warm-up steps) that set the number of epochs


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
    return parser.parse_args()


def make_scenes(folder: Path, quick: bool) -> None:
    if folder.exists():
        return
    sizes = ["--train", "24", "--val", "8", "--test", "8", "--size", "64"] if quick else []
    print(f"making the scenes benchmark in {folder} ...", flush=True)
    subprocess.run([sys.executable, "-m", "cnnkit", "data", "make-scenes", str(folder), "--seed", "0", "--quiet",
                    *sizes], check=True)


def settings_for(name: str, args, out: Path) -> dict:
    settings = {key: value for key, value in MODELS[name].items() if key != "goal"}
    settings.update(data=str(args.data), seed=args.seed, out=str(out), name=name, progress=False, report=False,
                    num_threads=args.threads or 0)
    if args.quick:
        settings.update(batch_size=4, model_args={**settings.get("model_args", {}), **quick_model_args(name)})
    return settings


def quick_model_args(name: str) -> dict:
    return {"maskrcnn": {"fpn_channels": 32, "representation_size": 64}}.get(name, {})


def calibrate(settings: dict) -> float:
    """Training images per second through the task's real loader, model, loss and optimizer."""
    import torch

    from cnnkit.config import TrainConfig
    from cnnkit.engine.distributed import DistInfo
    from cnnkit.engine.optim import make_optimizer
    from cnnkit.engine.trainer import resolve_precision
    from cnnkit.tasks.base import task_module

    config = TrainConfig(**settings)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = torch.device("cpu")
    setup = task_module(config.task).setup(config, device, DistInfo(), None)
    model, task = setup.task.model.to(device), setup.task
    model.train()
    optimizer = make_optimizer(model, config)
    dtype = resolve_precision(config.precision, device)
    seen, started = 0, None
    for step, (images, targets) in enumerate(setup.train_loader):
        if step == 2:
            seen, started = 0, time.perf_counter()
        images, targets = task.to_device(images, targets, device)
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            result = task.training_step(model, images, targets)
        result["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seen += result["batch_size"]
        if step + 1 >= 2 + CALIBRATION_STEPS:
            break
    if started is None:
        return float("nan")
    return seen / (time.perf_counter() - started)


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
    from cnnkit.engine.trainer import resolve_precision

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


def run_model(name: str, args, out: Path) -> dict:
    import cnnkit

    settings = settings_for(name, args, out)
    task = settings["task"]
    rate = calibrate(settings)
    train_images = count_images(Path(args.data), "train")
    # Each epoch also validates (~1/3 of a training image's cost per val image: no backward).
    val_images = count_images(Path(args.data), "val")
    epoch_seconds = (train_images + val_images / 3) / rate
    epochs = max(1, int(args.minutes * 60 / epoch_seconds))
    print(f"{name}: {settings['model']} trains at {rate:.1f} images/s -> {epochs} epochs in {args.minutes:g} min",
          flush=True)
    started = time.perf_counter()
    run = cnnkit.train(settings, epochs=epochs)
    train_seconds = time.perf_counter() - started
    metrics = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    predictor = cnnkit.load(run.run_dir, device="cpu")
    test = predictor.evaluate("test")
    speed = inference_speed(predictor, settings, task)
    key, goal = MODELS[name]["goal"]
    row = {"name": name, "model": settings["model"], "task": task, "settings": settings, "epochs": epochs,
           "calibrated_images_per_second": rate, "train_seconds": train_seconds,
           "epoch_seconds": sum(m["epoch_seconds"] for m in metrics), "best_epoch": run.best.get("epoch"),
           "val_history": [{k: v for k, v in m.items() if k.startswith("val_") or k == "epoch"} for m in metrics],
           "inference_images_per_second": speed, "goal": {"metric": key, "value": goal}}
    if task == "segment":
        row.update(test_miou=test["miou"], test_pixel_accuracy=test["pixel_accuracy"], test_mean_dice=test["mean_dice"],
                   test_per_class_iou={k: v["iou"] for k, v in test["per_class"].items()})
    else:
        row.update(test_mask_map50=test["mask_map50"], test_mask_map=test["mask_map"], test_box_map50=test["map50"],
                   test_per_class_mask_ap50={k: v.get("mask_ap50") for k, v in test["per_class"].items()})
    row["goal_met"] = row[key] >= goal
    print(f"{name}: {key} {row[key]:.4f} (goal {goal}), {train_seconds / 60:.1f} min, "
          f"{speed:.1f} test images/s", flush=True)
    return row


def markdown(rows: list[dict], args) -> str:
    headers = ["model", "task", "epochs", "train min", "test metric", "value", "goal", "met", "infer img/s"]
    table = []
    for row in rows:
        key, goal = row["goal"]["metric"], row["goal"]["value"]
        table.append([f"{row['name']} ({row['model']})", row["task"], row["epochs"], f"{row['train_seconds'] / 60:.1f}",
                      key.removeprefix("test_"), f"{row[key]:.4f}", goal, "yes" if row["goal_met"] else "NO",
                      f"{row['inference_images_per_second']:.1f}"])
    lines = [f"Budget: {args.minutes:g} minutes of training per model (train + per-epoch validation), "
             "evaluated on the test split.", "", _common.markdown_table(headers, table), ""]
    for row in rows:
        if row["task"] == "segment":
            per_class = ", ".join(f"{k} {v:.3f}" for k, v in row["test_per_class_iou"].items() if v is not None)
            lines += [f"- {row['name']}: pixel accuracy {row['test_pixel_accuracy']:.4f}, mean Dice "
                      f"{row['test_mean_dice']:.4f}; per-class IoU: {per_class}"]
        else:
            lines += [f"- {row['name']}: mask mAP@[.5:.95] {row['test_mask_map']:.4f}, box mAP@.5 "
                      f"{row['test_box_map50']:.4f}"]
    lines += ["", "Settings per model (cnnkit train key=value):", ""]
    for row in rows:
        shown = {k: v for k, v in row["settings"].items() if k not in ("data", "out", "name", "progress", "report")}
        lines.append(f"- {row['name']}: `{' '.join(f'{k}={json.dumps(v) if isinstance(v, dict) else v}' for k, v in shown.items())}`"
                     f" epochs={row['epochs']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    header = _common.run_header(args.quick)
    _common.set_threads(args.threads)
    with tempfile.TemporaryDirectory() as temporary:
        if args.quick:
            args.data = str(Path(temporary) / "scenes")
            args.minutes = min(args.minutes, 0.05)
        make_scenes(Path(args.data), args.quick)
        out = Path(args.out) if args.out else Path(temporary) / "runs"
        rows = [run_model(name, args, out) for name in args.models]
    title = "Segmentation on the scenes benchmark (U-Net, DeepLabV3, FCN, Mask R-CNN)"
    _common.finish(NAME, title, header, {"minutes": args.minutes, "results": rows}, markdown(rows, args),
                   args.results_dir)


if __name__ == "__main__":
    main()
