"""`cnnkit evaluate` and `cnnkit predict`: commands that run a trained run on data.

Neither branches on a task name: the run's recorded task names its TaskInfo (cnnkit.tasks.task_info), which
says how its evaluation is printed, what its predictions are and whether the export backends can run it.

cnnkit.api (and with it torch) is imported inside the handlers, never at module level: `cnnkit --help`
must start fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
               "  cnnkit evaluate RUN_DIR --split val --json > val.json\n"
               "  cnnkit evaluate SEGMENT_RUN --tta on    # with flip TTA, whatever the run was trained with",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--split", choices=["test", "val"], default="test")
    parser.add_argument("--json", action="store_true", help="print JSON (accuracy, loss, per_class, confusion_matrix ...) "
                        "instead of the table; the same JSON is always written to RUN_DIR/evaluation-SPLIT.json")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tta", choices=("on", "off"), default=None,
                        help="classification and segmentation runs: evaluate with (on) or without (off) flip "
                             "test-time augmentation, the logits of each image and its mirror image averaged "
                             "(twice the inference cost); default: as the run was trained (its tta setting). "
                             "Written to evaluation-SPLIT-tta-on.json (or -off), beside the run's own")


def run_evaluate(args) -> int:
    from cnnkit.api import load
    from cnnkit.tasks import task_info

    predictor = load(args.run_dir, device=args.device)
    info = task_info(predictor.record["task"])
    suffix = ""
    if args.tta is not None:
        if not hasattr(predictor, "tta"):
            raise CnnkitError(f"{args.run_dir}: --tta applies to classification and segmentation runs; this is a "
                              f"{predictor.record['task']} run: leave --tta out")
        predictor.tta, suffix = args.tta == "on", f"-tta-{args.tta}"
    result = predictor.evaluate(args.split)
    if args.tta is not None:
        result["tta"] = predictor.tta
    text = json.dumps(result, indent=2)
    print(text if args.json else info.evaluation_text(result, args.split))
    return _write_evaluation(predictor.run_dir, args.split + suffix, text, info.evaluation_saved)


def _write_evaluation(run_dir: Path, split: str, text: str, what: str) -> int:
    """Write RUN_DIR/evaluation-SPLIT.json; a read-only run directory still gets its numbers printed."""
    from cnnkit.files import atomic_write_text

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
    parser.add_argument("--trust-code", action="store_true", help="allow an exported .pt2 or .torchscript.pt file: "
                        "loading one runs code its author wrote (its SHA-256 is printed); ONNX files need no flag")


def run_predict(args) -> int:
    if args.top_k < 1:
        raise CnnkitError(f"--top-k must be 1 or more, got {args.top_k}")
    if not Path(args.run_dir).exists():
        raise CnnkitError(f"{args.run_dir}: no such run directory or model file")
    _check_checkpoint_bytes(Path(args.run_dir))
    missing = [path for path in args.images if not Path(path).exists()]
    if len(missing) == len(args.images):  # checked before torch is imported: the mistake answers at once
        raise CnnkitError(_not_found(missing[0]) if len(missing) == 1
                          else f"none of the {len(missing)} images exist (first: {missing[0]})")
    from cnnkit.api import load
    from cnnkit.data.images import is_image_file
    from cnnkit.export import load_predictor, recorded_task
    from cnnkit.errors import DataError
    from cnnkit.tasks import PredictOptions, task_info

    info = task_info(recorded_task(args.run_dir))
    if info.exportable:  # the backends run exported graphs: --backend picks one
        predictor = load_predictor(args.run_dir, backend=args.backend, device=args.device,
                                   trust_code=args.trust_code)
    else:
        predictor = load(args.run_dir, device=args.device)
    options = PredictOptions(top_k=args.top_k, score_threshold=args.score_threshold,
                             out=Path(args.out) if args.out else None)
    images, failed = _expand_images(args.images, is_image_file)
    try:
        results = info.predict(predictor, images, options) if images else []
    except DataError:
        # One unreadable file (a multi-page TIFF, a truncated JPEG ...) costs its own line, not the others'.
        results = []
        for image in images:
            try:
                results.extend(info.predict(predictor, [image], options))
            except DataError as error:
                failed.append((image, str(error)))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(info.prediction_text(result))
    if failed and not results:  # nothing to show: an error, as for any other mistake
        if len(failed) == 1:
            raise CnnkitError(failed[0][1] if failed[0][1] != "not found" else _not_found(failed[0][0]))
        raise CnnkitError(f"none of the {len(failed)} inputs could be predicted: "
                          + "; ".join(f"{image} ({reason})" for image, reason in failed[:10]))
    if failed:
        print(f"cnnkit predict: {len(failed)} of {len(failed) + len(results)} inputs could not be predicted:",
              file=sys.stderr)
        for image, reason in failed:
            print(f"  {image}: {reason}", file=sys.stderr)
        return 1
    return 0


def _not_found(path: str) -> str:
    return f"image file not found: {path}. Check the path ({Path(path).name} not found in {Path(path).parent})"


def _check_checkpoint_bytes(path: Path) -> None:
    """A truncated .safetensors checkpoint is reported before torch is imported (its header is JSON)."""
    if path.is_dir():
        path = path / "best.safetensors"
    if path.suffix != ".safetensors" or not path.is_file():
        return  # the full load says what is wrong
    problem = f"{path} is not a readable safetensors checkpoint (it may be truncated: retrain or restore it from a copy)"
    size = path.stat().st_size
    with open(path, "rb") as file:
        head = file.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < length <= size - 8:
            raise CnnkitError(problem)
        try:
            header = json.loads(file.read(length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise CnnkitError(problem) from None
    if 8 + length + end > size:
        raise CnnkitError(problem)


def _expand_images(paths: list[str], is_image_file) -> tuple[list[str], list[tuple[str, str]]]:
    """Files as given, directories as their image files (sorted, not recursive); missing paths as failures."""
    images, failed = [], []
    for path in paths:
        folder = Path(path)
        if folder.is_dir():
            found = sorted(str(child) for child in folder.iterdir() if child.is_file() and is_image_file(child))
            if not found:
                failed.append((path, "a directory with no image files"))
            images.extend(found)
        elif not folder.exists():
            failed.append((path, "not found"))
        else:
            images.append(path)
    return images, failed
