"""`cnnkit evaluate` and `cnnkit predict`: commands that run a trained run on data.

Every place the CLI branches on a run's task (classify, detect, segment, instance) is in this module: how an
evaluation is printed and written (run_evaluate and its helpers) and how predictions are made and written
(run_predict and its helpers). It is the one spot to replace with a lookup in the task table.

cnnkit.api (and with it torch) is imported inside the handlers, never at module level: `cnnkit --help`
must start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cnnkit.cli._common import require_images
from cnnkit.errors import CnnkitError


def add_evaluate(commands) -> None:
    parser = commands.add_parser(
        "evaluate", help="measure a trained run on its test (or validation) split",
        description="Evaluate the best checkpoint of a run on the split it was never tuned on. The data and\n"
                    "preprocessing come from the run directory. Prints accuracy, loss, balanced accuracy (the mean\n"
                    "recall over classes, fair to rare classes) and per-class precision, recall, F1 and support;\n"
                    "writes those and the confusion matrix (rows: true class, columns: predicted class) to\n"
                    "RUN_DIR/evaluation-SPLIT.json. Segmentation runs: mIoU, pixel accuracy, mean Dice and IoU/Dice\n"
                    "per class (from the pixel confusion matrix); instance runs: COCO mask mAP@.5 and mAP@[.5:.95]\n"
                    "(pycocotools), box mAP and per-class AP; detection runs: COCO box mAP@[.5:.95], mAP@.5,\n"
                    "mAP@.75, recall@100 and per-class AP (pycocotools), and the detector's images/s.",
        epilog="examples:\n  cnnkit evaluate runs/fastnet-fashion-mnist-20261125-101500\n"
               "  cnnkit evaluate RUN_DIR --split val --json > val.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--split", choices=["test", "val"], default="test")
    parser.add_argument("--json", action="store_true", help="print JSON (accuracy, loss, per_class, confusion_matrix ...) "
                        "instead of the table; the same JSON is always written to RUN_DIR/evaluation-SPLIT.json")
    parser.add_argument("--device", default="auto")


def run_evaluate(args) -> int:
    from cnnkit.api import load
    from cnnkit.metrics.classification import per_class_table

    classifier = load(args.run_dir, device=args.device)
    if classifier.record.get("task") == "detect":
        return run_evaluate_detection(args, classifier)
    if classifier.record.get("task") in ("segment", "instance"):
        return run_evaluate_segmentation(args, classifier)
    result = classifier.evaluate(args.split)
    text = json.dumps(result, indent=2)
    if args.json:
        print(text)
    else:
        print(f"{args.split} accuracy {result['accuracy']:.4f}  loss {result['loss']:.4f}  "
              f"balanced accuracy {result['balanced_accuracy']:.4f}  ({result['count']} images)")
        print(per_class_table(result))
    return _write_evaluation(classifier.run_dir, args.split, text, "per-class metrics and confusion matrix")


def run_evaluate_detection(args, detector) -> int:
    """`cnnkit evaluate` for a detection run: COCO mAP, mAP@.5 and per-class AP."""
    from cnnkit.metrics.detection import coco_ap_table

    result = detector.evaluate(args.split)
    text = json.dumps(result, indent=2)
    if args.json:
        print(text)
    else:
        print(f"{args.split} mAP@[.5:.95] {result['map']:.4f}  mAP@.5 {result['map50']:.4f}  "
              f"mAP@.75 {result['map75']:.4f}  recall@100 {result['mar100']:.4f}  ({result['count']} images, "
              f"{result['images_per_second']:.1f} images/s)")
        print(coco_ap_table(result))
    return _write_evaluation(detector.run_dir, args.split, text, "per-class AP")


def run_evaluate_segmentation(args, predictor) -> int:
    """`cnnkit evaluate` for segmentation runs (mIoU, per-class IoU and Dice) and instance runs (mask mAP)."""
    result = predictor.evaluate(args.split)
    text = json.dumps(result, indent=2)
    if args.json:
        print(text)
    elif predictor.record["task"] == "segment":
        from cnnkit.metrics.segmentation import per_class_table

        print(f"{args.split} mIoU {result['miou']:.4f}  pixel accuracy {result['pixel_accuracy']:.4f}  "
              f"mean Dice {result['mean_dice']:.4f}  loss {result['loss']:.4f}  ({result['images']} images)")
        print(per_class_table(result))
    else:
        from cnnkit.metrics.detection import coco_ap_table

        print(f"{args.split} mask mAP@.5 {result['mask_map50']:.4f}  mask mAP@[.5:.95] {result['mask_map']:.4f}  "
              f"box mAP@.5 {result['map50']:.4f}  box mAP@[.5:.95] {result['map']:.4f}  ({result['count']} images, "
              f"{result['images_per_second']:.1f} images/s)")
        print(coco_ap_table(result))
    return _write_evaluation(predictor.run_dir, args.split, text, "per-class metrics")


def _write_evaluation(run_dir: Path, split: str, text: str, what: str) -> int:
    """Write RUN_DIR/evaluation-SPLIT.json; a read-only run directory still gets its numbers printed."""
    from cnnkit.engine.checkpoint import atomic_write_text

    path = run_dir / f"evaluation-{split}.json"
    try:
        atomic_write_text(path, text + "\n")
        print(f"{what}: {path}", file=sys.stderr)
    except OSError as error:
        print(f"cnnkit evaluate: could not write {path}: {error}", file=sys.stderr)
    return 0


def add_predict(commands) -> None:
    parser = commands.add_parser(
        "predict", help="classify image files with a trained run (or find boxes, or masks)",
        description="Print the most likely classes of each image. Images of any size and mode (grayscale, RGB, "
                    "RGBA, palette, 16-bit) are converted, resized and normalized exactly as in training. "
                    "Detection, segmentation and instance runs write their results to --out instead (see --out).",
        epilog="backends (--backend):\n"
               "  torch        the PyTorch model from the checkpoint (fp32; the only one for --device cuda)\n"
               "  onnxruntime  ONNX Runtime on the CPU; openvino: OpenVINO on the CPU (fp32). Both run the run\n"
               "               exported to ONNX once, checked against PyTorch (max abs difference <= 1e-4) and\n"
               "               cached in RUN_DIR/export/cache/ until the checkpoint changes\n"
               "  auto         (default) the fastest correct one measured on this CPU: openvino, else\n"
               "               onnxruntime, else torch (benchmarks/results/inference.md)\n\n"
               "examples:\n  cnnkit predict RUN_DIR shoe.png bag.jpg --top-k 3\n  cnnkit predict RUN_DIR *.png --json\n"
               "  cnnkit predict RUN_DIR shoe.png --backend onnxruntime\n"
               "  cnnkit predict RUN_DIR/export/best.onnx shoe.png     # an exported file, with its own metadata\n"
               "  cnnkit predict DETECTION_RUN scene.png --out boxes/  # boxes/scene.json + boxes/scene.png",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory, checkpoint, or exported .onnx / .pt2 / "
                        ".torchscript.pt file")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--top-k", type=int, default=3, metavar="K")
    parser.add_argument("--json", action="store_true", help="print JSON: one entry per image with its top-k classes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "openvino"), default="auto",
                        help="inference engine (default auto; see below)")
    # Detection runs (record task "detect"): boxes instead of top-k classes.
    parser.add_argument("--out", metavar="DIR", help="detection runs: folder for IMAGE.json (boxes, scores, class "
                        "names) and IMAGE.png (the boxes drawn); segmentation runs: IMAGE-mask.png (class index per "
                        "pixel, VOC-style palette PNG) and IMAGE-overlay.png; instance runs: IMAGE.json (boxes, "
                        "scores, RLE masks), IMAGE-mask.png (instance ids) and IMAGE-overlay.png; default "
                        "RUN_DIR/predictions/")
    parser.add_argument("--score-threshold", type=float, default=0.25, metavar="S",
                        help="detection and instance runs: leave out objects scored below S (default 0.25)")


def run_predict(args) -> int:
    from cnnkit.export import load_predictor

    if _run_task(args.run_dir) == "detect":
        return run_predict_detection(args)
    if _run_task(args.run_dir) in ("segment", "instance"):
        return run_predict_segmentation(args)

    if args.top_k < 1:
        raise CnnkitError(f"--top-k must be 1 or more, got {args.top_k}")
    classifier = load_predictor(args.run_dir, backend=args.backend, device=args.device)
    results = []
    for path in args.images:
        top = classifier.predict([path], top_k=args.top_k)[0]
        results.append({"image": path, "predictions": [{"class": c, "probability": p} for c, p in top]})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            shown = ", ".join(f"{p['class']} {p['probability']:.3f}" for p in result["predictions"])
            print(f"{result['image']}: {shown}")
    return 0


def _run_task(path: str) -> str:
    """The task recorded in a run directory's or checkpoint's record ("classify" for anything else)."""
    from cnnkit.engine.checkpoint import read_record

    file = Path(path) / "best.safetensors" if Path(path).is_dir() else Path(path)
    if file.suffix != ".safetensors" or not file.is_file():
        return "classify"
    return read_record(file).get("task", "classify")


def run_predict_detection(args) -> int:
    """`cnnkit predict` for a detection run: JSON and a drawing per image."""
    from cnnkit.api import load
    from cnnkit.tasks.detection import write_predictions

    if not 0 <= args.score_threshold <= 1:
        raise CnnkitError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    require_images(args.images)
    detector = load(args.run_dir, device=args.device)
    out = Path(args.out) if args.out else detector.run_dir / "predictions"
    results = write_predictions(detector, args.images, out, args.score_threshold)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            shown = ", ".join(f"{d['class']} {d['score']:.2f}" for d in result["detections"]) or "nothing"
            print(f"{result['image']}: {shown} -> {result['drawing']}")
    return 0


def run_predict_segmentation(args) -> int:
    """`cnnkit predict` for segmentation and instance runs: mask PNG and overlay per image (instance: + JSON)."""
    from cnnkit.api import load

    require_images(args.images)
    predictor = load(args.run_dir, device=args.device)
    out = Path(args.out) if args.out else predictor.run_dir / "predictions"
    if predictor.record["task"] == "segment":
        from cnnkit.tasks.segmentation import write_predictions

        results = write_predictions(predictor, args.images, out)
        shown = [", ".join(f"{name} {share:.0%}" for name, share in r["classes"].items()) for r in results]
    else:
        from cnnkit.tasks.instance import write_predictions

        if not 0 <= args.score_threshold <= 1:
            raise CnnkitError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
        results = write_predictions(predictor, args.images, out, args.score_threshold)
        shown = [", ".join(f"{o['class']} {o['score']:.2f}" for o in r["objects"]) or "nothing" for r in results]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result, summary in zip(results, shown):
            print(f"{result['image']}: {summary} -> {result['mask']}, {result['overlay']}")
    return 0
