"""cnnkit beside the peer a practitioner would pick instead (ultralytics), same data, same threads, same minutes.

Per row, cnnkit and the peer train AT THE SAME TIME, each pinned to its own core (`taskset`) with one torch
thread, for the same number of minutes, both from scratch; then both predict the same test images and this
script scores both with the same evaluator: pycocotools (bbox, and segm for masks) on the scenes test split
against its COCO file, plain accuracy on Fashion-MNIST's test split.

Rows (--rows, default all):
- classify: Fashion-MNIST, cnnkit's default (fastnet, `budget=`) vs YOLO11n-cls from `yolo11n-cls.yaml`, imgsz 32.
- detect:   scenes, cnnkit `yolo_fastnet` (benchmarks/detection.py's recipe; --detect-model for Faster R-CNN or
            SSDlite) vs YOLO11n from `yolo11n.yaml`, imgsz 128.
- instance: scenes, cnnkit `yolo_seg_fastnet` (benchmarks/segmentation.py's recipe; --instance-model maskrcnn for
            Mask R-CNN) vs YOLO11n-seg, imgsz 128.
Rows merge into the result file by (task, cnnkit model, minutes): one invocation per row is fine.
cnnkit plans its epochs with `budget=` (cnnkit.engine.budget); ultralytics with its own `time=`.

The peer is ultralytics (AGPL-3.0): never a dependency of cnnkit. Put it in its own environment:

    python3.11 -m venv /work/peer-venv
    /work/peer-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 ultralytics pycocotools

and pass --peer-python /work/peer-venv/bin/python (default: $CNNKIT_PEER_PYTHON, else that path). Without it
the script runs cnnkit's side only and says so in the results.

    .venv/bin/python benchmarks/peers.py --rows detect --minutes 15
    .venv/bin/python benchmarks/peers.py --rows detect --minutes 30 --detect-model fasterrcnn_resnet18_fpn
    .venv/bin/python benchmarks/peers.py --quick              # tiny data, 20 s budgets: a smoke test

Writes benchmarks/results/peers.json and .md (peers-quick.* for --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

NAME = "peers"
ROWS = ("classify", "detect", "instance")
DEFAULT_PEER = "/work/peer-venv/bin/python"
IMAGE_SIZE = {"classify": 32, "detect": 128, "instance": 128}
DETECT_MODELS = ("yolo_fastnet", "fasterrcnn_resnet18_fpn", "ssdlite_mobilenet_v3_large")  # detection.py's recipes
INSTANCE_MODELS = ("yolo_seg", "maskrcnn")  # segmentation.py's MODELS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=list(ROWS))
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget of each side (default 15)")
    parser.add_argument("--detect-model", default="yolo_fastnet", choices=DETECT_MODELS,
                        help="cnnkit's detector in the detect row (default yolo_fastnet)")
    parser.add_argument("--instance-model", default="yolo_seg", choices=INSTANCE_MODELS,
                        help="cnnkit's instance segmenter in the instance row: benchmarks/segmentation.py's "
                             "yolo_seg (yolo_seg_fastnet, default) or maskrcnn (maskrcnn_resnet18_fpn)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each side (default 1)")
    parser.add_argument("--scenes", default="data/scenes", help="the scenes benchmark (made if missing)")
    parser.add_argument("--peer-python", default=os.environ.get("CNNKIT_PEER_PYTHON", DEFAULT_PEER))
    parser.add_argument("--out", default="runs/peers", help="where both sides' runs go")
    parser.add_argument("--quick", action="store_true", help="tiny data and budgets of 20 s (or --minutes if less): a smoke test")
    parser.add_argument("--results-dir", default=None)
    parser.add_argument("--side", choices=("cnnkit",), help=argparse.SUPPRESS)  # internal: one side, in a child
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------- data
def fashion_mnist_folders(root: Path, quick: bool) -> Path:
    """Fashion-MNIST as PNG folders, train/ and test/ (the layout both ultralytics classify and cnnkit read)."""
    from PIL import Image

    from cnnkit.data.fashion_mnist import load_fashion_mnist

    root = root.with_name(root.name + ("-quick" if quick else ""))
    if (root / "done").is_file():
        return root
    for folder, dataset in zip(("train", "test"), load_fashion_mnist(download=False)):
        count = 300 if quick else len(dataset.labels)
        for index in range(count):
            label = int(dataset.labels[index])
            target = root / folder / dataset.classes[label].replace("/", "-")
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(dataset.images[index, 0].numpy()).save(target / f"{index:05d}.png")
    (root / "done").write_text("")
    return root


def scenes_for_peer(scenes: Path, task: str) -> Path:
    """The data YAML ultralytics reads; for instances, polygon labels made from the scenes' instance masks."""
    import numpy
    from PIL import Image

    classes = (scenes / "classes.txt").read_text().split("\n")[:-1]
    root = scenes if task == "detect" else scenes.with_name(scenes.name + "-yolo-seg")
    if task == "instance" and not (root / "done").is_file():
        import cv2

        coco = {split: json.loads((scenes / "annotations" / f"instances_{split}.json").read_text())
                for split in ("train", "val", "test")}
        for split, data in coco.items():
            (root / split / "labels").mkdir(parents=True, exist_ok=True)
            # Real files (hard links where possible): ultralytics resolves a linked folder to its target and would
            # read the scenes' box labels beside it.
            (root / split / "images").mkdir(parents=True, exist_ok=True)
            for image_file in (scenes / split / "images").iterdir():
                target = root / split / "images" / image_file.name
                if not target.exists():
                    try:
                        os.link(image_file, target)
                    except OSError:
                        shutil.copyfile(image_file, target)
            by_image = {}
            for annotation in data["annotations"]:
                by_image.setdefault(annotation["image_id"], []).append(annotation)
            for image in data["images"]:
                lines = []
                instances = numpy.array(Image.open(scenes / split / "instances" / Path(image["file_name"]).name))
                height, width = instances.shape
                for order, annotation in enumerate(by_image.get(image["id"], []), start=1):
                    mask = (instances == order).astype(numpy.uint8)
                    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
                    if not contours:
                        continue
                    contour = max(contours, key=cv2.contourArea).reshape(-1, 2)
                    if len(contour) < 3:
                        continue
                    points = " ".join(f"{x / width:.5f} {y / height:.5f}" for x, y in contour)
                    lines.append(f"{annotation['category_id'] - 1} {points}")
                (root / split / "labels" / (Path(image["file_name"]).stem + ".txt")).write_text("\n".join(lines) + "\n")
        (root / "done").write_text("")
    yaml = root / f"ultralytics-{task}.yaml"
    yaml.write_text(f"path: {root.resolve()}\ntrain: train/images\nval: val/images\ntest: test/images\nnames:\n"
                    + "".join(f"  {index}: {name}\n" for index, name in enumerate(classes)))
    return yaml


# ---------------------------------------------------------------------------- scoring (both sides)
def score_coco(predictions: list[dict], scenes: Path, masks: bool) -> dict[str, float]:
    """pycocotools mAP@.5 and mAP@[.5:.95] of `predictions` ({"file", "label", "score", "box", "mask"?})."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = COCO(str(scenes / "annotations" / "instances_test.json"))
    ids = {Path(image["file_name"]).name: image["id"] for image in truth.dataset["images"]}
    results = []
    for entry in predictions:
        x1, y1, x2, y2 = entry["box"]
        result = {"image_id": ids[Path(entry["file"]).name], "category_id": entry["label"] + 1,
                  "score": entry["score"], "bbox": [x1, y1, x2 - x1, y2 - y1]}
        if masks:
            result["segmentation"] = entry["mask"]
        results.append(result)
    scores = {}
    for kind in (("bbox", "segm") if masks else ("bbox",)):
        if not results:
            scores.update({f"{kind}_map50": 0.0, f"{kind}_map": 0.0})
            continue
        evaluation = COCOeval(truth, truth.loadRes(results), kind)
        evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
        scores.update({f"{kind}_map50": float(evaluation.stats[1]), f"{kind}_map": float(evaluation.stats[0])})
    return scores


# ---------------------------------------------------------------------------- cnnkit's side (a child process)
def cnnkit_settings(task: str, data: str, minutes: float, quick: bool, model: str | None = None) -> dict:
    if task == "classify":
        values = {"task": "classify", "data": data}
    elif task == "detect":
        from detection import COMMON, RECIPES

        model = model or DETECT_MODELS[0]
        values = {**COMMON, **RECIPES[model][1], "model": model, "data": data}
    else:
        from segmentation import BENCHMARK_KEYS, MODELS

        values = {k: v for k, v in MODELS[model or INSTANCE_MODELS[0]].items() if k not in BENCHMARK_KEYS}
        values["data"] = data
    values.update(budget=f"{minutes * 60:g}s", report=False, progress=False)
    if quick:
        values.update(batch_size=8)
    return values


def run_cnnkit_side(settings: dict) -> None:
    """Train with budget=, predict the test images, write cnnkit.json (the same shape as the peer's)."""
    import torch

    import cnnkit
    from cnnkit.config import TrainConfig

    torch.set_num_threads(settings["threads"])
    out = Path(settings["out"])
    values = {**settings["config"], "out": str(out), "name": "train", "num_threads": settings["threads"]}
    started = time.perf_counter()
    run = cnnkit.train(TrainConfig(**values))
    train_seconds = time.perf_counter() - started
    model = cnnkit.load(run.run_dir)
    predictions, extra = [], {}
    if settings["task"] == "classify":
        extra["accuracy"] = float(model.evaluate("test")["accuracy"])
    else:
        files = sorted(Path(settings["test_images"]).glob("*.png"))
        for start in range(0, len(files), 32):
            chunk = files[start:start + 32]
            for file, objects in zip(chunk, model.predict([str(f) for f in chunk], score_threshold=0.001)):
                predictions.extend({"file": file.name, "label": o["label"], "score": o["score"], "box": o["box"],
                                    **({"mask": o["mask"]} if "mask" in o else {})} for o in objects)
    (out / "cnnkit.json").write_text(json.dumps({
        "predictions": predictions, "train_seconds": train_seconds, **extra,
        "epochs": len((run.run_dir / "metrics.jsonl").read_text().splitlines()),
        "parameters": sum(p.numel() for p in model.model.parameters()), "model": values.get("model", "fastnet")}))


# ---------------------------------------------------------------------------- one row
def run_row(task: str, args, scenes: Path) -> dict:
    out = Path(args.out) / (task + ("-quick" if args.quick else "")) / time.strftime("%Y%m%d-%H%M%S")
    minutes = min(args.minutes, 20 / 60) if args.quick else args.minutes
    if task == "classify":
        folders = fashion_mnist_folders(Path("data/fashion-mnist-png"), args.quick)
        cnnkit_data, peer_data, test_images = (str(folders) if args.quick else "fashion-mnist"), str(folders), \
            folders / "test"
    else:
        cnnkit_data, test_images = str(scenes), scenes / "test" / "images"
    base = {"task": task, "threads": args.threads, "test_images": str(test_images), "imgsz": IMAGE_SIZE[task]}
    children = []
    model = {"detect": args.detect_model, "instance": args.instance_model}.get(task)
    ours = {**base, "out": str(out / "cnnkit"), "config": cnnkit_settings(task, cnnkit_data, minutes, args.quick, model)}
    Path(ours["out"]).mkdir(parents=True, exist_ok=True)
    pin = ["taskset", "-c"] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else None
    command = [sys.executable, __file__, "--side", "cnnkit", "--settings", json.dumps(ours)]
    children.append(("cnnkit", subprocess.Popen((pin + ["0"] if pin else []) + command)))
    peer_available = Path(args.peer_python).is_file()
    if peer_available:
        if task != "classify":
            peer_data = str(scenes_for_peer(scenes, task))
        theirs = {**base, "out": str((out / "peer").resolve()), "data": peer_data, "minutes": minutes,
                  "epochs": 1 if args.quick else None}
        script = str(Path(__file__).with_name("_peer_ultralytics.py"))
        children.append(("peer", subprocess.Popen((pin + ["1"] if pin else []) +
                                                  [args.peer_python, script, json.dumps(theirs)],
                                                  stdout=subprocess.DEVNULL)))
    codes = {name: child.wait() for name, child in children}
    row = {"task": task, "minutes": minutes, "threads": args.threads, "concurrent": peer_available,
           "pinned": pin is not None, "out": str(out), "cnnkit_model": ours["config"].get("model", "fastnet")}
    row["row"] = f"{task}/{row['cnnkit_model']}/{minutes:g}min"  # the key under which rows merge across runs
    for name, file in (("cnnkit", out / "cnnkit" / "cnnkit.json"), ("peer", out / "peer" / "peer.json")):
        if name == "peer" and not peer_available:
            row["peer"] = {"missing": f"no peer environment at {args.peer_python} (see this script's docstring)"}
            continue
        if codes.get(name) != 0 or not file.is_file():
            row[name] = {"failed": f"exit code {codes.get(name)}; see {file.parent}"}
            continue
        side = json.loads(file.read_text())
        if task == "classify":
            if "accuracy" not in side:  # the peer: predicted class names of the test folders' images
                side["accuracy"] = sum(Path(p["file"]).parent.name == p["class"] for p in side["predictions"]) / max(
                    1, len(side["predictions"]))
            scores = {"accuracy": side["accuracy"]}
        else:
            scores = score_coco(side["predictions"], scenes, masks=task == "instance")
        row[name] = {**scores, "epochs": side.get("epochs"), "train_seconds": side["train_seconds"],
                     "parameters": side["parameters"], "model": side["model"],
                     **({"ultralytics": side["ultralytics"]} if "ultralytics" in side else {})}
    return row


def _main_metric(task: str) -> str:
    return {"classify": "accuracy", "detect": "bbox_map50", "instance": "segm_map50"}[task]


def main() -> None:
    args = parse_args()
    if args.side == "cnnkit":
        run_cnnkit_side(json.loads(args.settings))
        return
    header = _common.run_header(args.quick)
    scenes = Path(args.scenes)
    if any(row != "classify" for row in args.rows):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from detection import ensure_scenes

        scenes = ensure_scenes(scenes, args.quick)
    results = [run_row(task, args, scenes) for task in args.rows]
    results = _common.merge_previous(NAME, header, results, "row", [], args.results_dir)
    for r in results:  # rows measured before the row key existed
        r.setdefault("cnnkit_model", r.get("cnnkit", {}).get("model", "?"))
        r.setdefault("row", f"{r['task']}/{r['cnnkit_model']}/{r['minutes']:g}min")
    results.sort(key=lambda r: (r["minutes"], ROWS.index(r["task"]), r["row"]))
    rows = []
    for r in results:
        metric = _main_metric(r["task"])
        cells = []
        for side in ("cnnkit", "peer"):
            entry = r.get(side, {})
            if metric in entry:
                cells.append(f"{entry[metric]:.4f} ({entry['model']}, {entry['parameters'] / 1e6:.2f}M, "
                             f"{entry['epochs']} epochs, {entry['train_seconds'] / 60:.1f} min)")
            else:
                cells.append(entry.get("missing") or entry.get("failed") or "-")
        ratio = (f"{r['cnnkit'][metric] / r['peer'][metric]:.2f}x" if metric in r.get("cnnkit", {})
                 and r.get("peer", {}).get(metric) else "-")
        rows.append([r["task"], metric, f"{r['minutes']:.3g}", *cells, ratio])
    body = ("Both sides trained at the same time, each pinned to its own core with "
            f"{args.threads} torch thread(s), from scratch, same minutes; both scored here with the same "
            "evaluator (pycocotools on the scenes test split; plain accuracy on Fashion-MNIST test).\n\n"
            + _common.markdown_table(["task", "metric", "minutes", "cnnkit", "ultralytics", "cnnkit / peer"], rows)
            + "\n\n" + _common.runs_markdown(results, "row"))
    if args.quick:
        body += "\n\n" + _common.QUICK_NOTE + "\n"
    _common.finish(NAME, "cnnkit beside ultralytics: same data, threads, minutes",
                   header, {"results": results}, body, args.results_dir)


if __name__ == "__main__":
    main()
