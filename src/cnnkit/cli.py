"""The `cnnkit` command: a thin layer over the Python API (cnnkit.api).

    cnnkit train [--config FILE.yaml] [--data ...] [--model NAME] [--epochs N] [key=value ...]
    cnnkit evaluate RUN_DIR [--split test|val] [--json]
    cnnkit predict RUN_DIR IMAGE... [--top-k K] [--json] [--backend auto|torch|onnxruntime|openvino]
    cnnkit models [--family NAME] [--input CxHxW] [--flops] [--json]
    cnnkit models summary NAME [--input CxHxW] [--num-classes K] [--depth N] [--json]
    cnnkit inspect filters RUN_DIR [--layer NAME] [--out DIR]
    cnnkit inspect features RUN_DIR IMAGE [--layers NAME ...] [--out DIR]
    cnnkit inspect maximize RUN_DIR (--layer NAME [--channels LIST] | --class C) [--steps N] [--out DIR]
    cnnkit explain RUN_DIR IMAGE... [--class C] [--method gradcam|gradcam++] [--layer NAME] [--out DIR]
    cnnkit export RUN_DIR --format onnx|torchscript|torch-export [--dynamic-batch] [--out FILE]
    cnnkit serve RUN_DIR [--host 127.0.0.1] [--port 8000] [--backend auto|torch|onnxruntime|openvino]
    cnnkit report RUN_DIR [--device DEVICE] [--max-seconds S]
    cnnkit data make-scenes OUT [--seed S] [--train N --val N --test N] [--size PX] [--max-objects N]
    cnnkit data convert SRC DST --to coco|voc|yolo
    cnnkit data check DATASET [--threshold T] [--size PX] [--exact-only] [--out FILE.json] [--plot FILE.png]
    cnnkit lr-find [--config FILE.yaml] [--data ...] [--model NAME] [--steps N] [--out FILE.png] [key=value ...]

Errors a user can cause print a short message that starts with what went wrong (no traceback;
--debug shows it) and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import textwrap
from pathlib import Path

from cnnkit.errors import CnnkitError

EXAMPLES_TRAIN = """\
examples:
  cnnkit train                                  # fastnet on Fashion-MNIST, the defaults
  cnnkit train --model simple_cnn --epochs 5 lr=0.05 label_smoothing=0
  cnnkit train --data ~/photos/ image_size=64   # one subfolder per class
  cnnkit train --data labels.csv channels=3     # CSV with a header: path,label
  cnnkit train --config recipe.yaml batch_size=128
  cnnkit train --resume runs/fastnet-fashion-mnist-20261125-101500 --epochs 20
  torchrun --nproc_per_node 2 -m cnnkit train   # data-parallel (DDP) on 2 processes
"""


def _settings_help() -> str:
    """List every TrainConfig field with its default and the comment beside it in config.py."""
    from cnnkit.config import TrainConfig

    comments = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        match = re.match(r"\s+(\w+): [^=]+=.*?#\s*(.*)$", line)
        if match:
            comments[match.group(1)] = match.group(2)
    lines = ["settings (key=value on the command line, or keys of a flat YAML --config file):"]
    for field in dataclasses.fields(TrainConfig):
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        text = f"  {field.name}={default!r}"
        lines.append(text.ljust(34) + comments.get(field.name, ""))
    return "\n".join(lines)


def _add_train(commands) -> None:
    parser = commands.add_parser(
        "train", help="train a model and write a run directory",
        description="Train a model (--task classify, detect, segment or instance). Every setting has a working default; the resolved settings, metrics per "
                    "epoch (metrics.jsonl) and the best and last checkpoints go to the run directory.",
        epilog=_settings_help() + "\n\n" + EXAMPLES_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE.yaml", help="flat YAML file of settings (overridden by the flags below)")
    parser.add_argument("--task", choices=("classify", "detect", "segment", "instance"),
                        help="what to learn: classify (default: a class per image), detect (boxes), segment (a class "
                             "per pixel) or instance (a mask per object)")
    parser.add_argument("--data", help="fashion-mnist, a directory (class subfolders, or train/ and test/), or a CSV")
    parser.add_argument("--model", help="architecture name (see `cnnkit models`) or a YAML network spec "
                        "(see examples/my_net.yaml)")
    parser.add_argument("--epochs", type=int, help="number of epochs")
    parser.add_argument("--out", metavar="DIR", help="parent directory of run directories (default runs/)")
    parser.add_argument("--name", help="run directory name (default <model>-<data>-<time>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint; "
                        "--epochs N extends it (the LR schedule stretches to the new length)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="any setting below, e.g. lr=0.1")


def _add_augment(commands) -> None:
    parser = commands.add_parser(
        "augment", help="see the training augmentation: `cnnkit augment preview`",
        description="Tools for the training augmentation.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    preview = actions.add_parser(
        "preview", help="write a grid of augmented training images, as the model sees them",
        description="Draws one batch from the real training loader of a config (flips, warps, colour, "
                    "AutoAugment-family policies, erasing, MixUp/CutMix) and writes it as a PNG grid with each "
                    "image's label (mixed labels show both classes and their weights).",
        epilog="examples:\n  cnnkit augment preview rotate=15 random_erasing=0.5\n"
               "  cnnkit augment preview --config recipes/fashion_mnist/quality.yaml --out preview.png\n"
               "  cnnkit augment preview auto_augment=trivialaugment cutmix=1.0 --count 48",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    preview.add_argument("--config", metavar="FILE.yaml", help="flat YAML file of training settings")
    preview.add_argument("--data", help="dataset (default: the config's, fashion-mnist)")
    preview.add_argument("--out", metavar="FILE.png", default="augment-preview.png", help="where the grid goes")
    preview.add_argument("--count", type=int, default=32, help="how many images (default 32)")
    preview.add_argument("overrides", nargs="*", metavar="key=value", help="training settings, as for cnnkit train")


def run_augment(args) -> int:
    from cnnkit.config import make_config, parse_key_values
    from cnnkit.data.preview import save_preview

    overrides = parse_key_values(args.overrides)
    if args.data:
        overrides["data"] = args.data
    if args.count < 1:
        raise CnnkitError(f"--count must be 1 or more, got {args.count}")
    path = save_preview(make_config(args.config, overrides), args.out, count=args.count)
    print(f"wrote {path}")
    return 0


def _add_evaluate(commands) -> None:
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


def _add_predict(commands) -> None:
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


def _add_models(commands) -> None:
    examples = """\
examples:
  cnnkit models                                 # every architecture, parameters at 1x28x28, 10 classes
  cnnkit models --family resnet_cifar --flops   # one family, with GMACs at 1x28x28
  cnnkit models --input 3x224x224 --json        # parameters and MACs for RGB 224x224 images, as JSON
  cnnkit models summary fastnet                 # per-layer table at 1x28x28
  cnnkit models summary resnet20 --input 3x32x32 --depth 2
"""
    summary_epilog = """\
columns: output shape (batch 1); params: the layer's own parameters; MACs: multiply-accumulates of
convolutions, linear layers, matrix products and attention (1 MAC = 2 FLOPs); RF size and RF stride: the
receptive field of one output unit in input pixels (HxW when they differ), "global" when it is the whole
input, * when a squeeze-and-excitation gate or similar adds the whole input to a local field.

examples:
  cnnkit models summary fastnet
  cnnkit models summary resnet20 --input 3x32x32 --depth 2
  cnnkit models summary simple_cnn --input 3x64x64 --num-classes 100 --json > simple_cnn.json
"""
    parser = commands.add_parser(
        "models", help="list the architectures, or summarize one layer by layer",
        usage="cnnkit models [--family FAMILY] [--input CxHxW] [--flops] [--json]\n"
              "       cnnkit models summary NAME [--input CxHxW] [--num-classes K] [--depth N] [--json]",
        description="List the registered architectures with their parameter counts, and their\n"
                    "multiply-accumulates (GMACs; 1 MAC = 2 FLOPs) with --flops or --input.\n"
                    "`cnnkit models summary NAME` prints one model layer by layer.",
        epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", help="only this family (e.g. resnet_cifar)")
    parser.add_argument("--input", metavar="CxHxW",
                        help="input size the models are built and counted for (default 1x28x28); implies --flops")
    parser.add_argument("--flops", action="store_true", help="also count GMACs per image (slower: one forward "
                        "pass per model, on the meta device when it can)")
    parser.add_argument("--json", action="store_true", help="print JSON: one entry per model")
    actions = parser.add_subparsers(dest="models_action", metavar="ACTION",
                                    description="without an ACTION, list the architectures")
    summary = actions.add_parser(
        "summary", help="per-layer table of one model: output shape, parameters, MACs, receptive field",
        description="Print one model layer by layer, in the order the layers run, with totals. The model\n"
                    "is built for the --input size and --num-classes and run once at batch 1 in eval mode.",
        epilog=summary_epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    summary.add_argument("model", metavar="NAME", help="registered architecture (see `cnnkit models`) or a model "
                         "YAML file")
    summary.add_argument("--input", default="1x28x28", metavar="CxHxW", help="input size (default 1x28x28)")
    summary.add_argument("--num-classes", type=int, default=10, metavar="K", help="output classes (default 10)")
    summary.add_argument("--depth", type=int, metavar="N", help="fold modules nested deeper than N into one "
                         "row (1: the model's direct children); default: every layer")
    summary.add_argument("--json", action="store_true", help="print JSON: rows, totals and notes")


def _add_inspect(commands) -> None:
    examples = """\
examples:
  cnnkit inspect filters RUN_DIR                         # first conv layer -> RUN_DIR/inspect/filters-<layer>.png
  cnnkit inspect filters RUN_DIR --layer stages.0.conv1 --out pictures/
  cnnkit inspect features RUN_DIR shoe.png               # first, middle and last conv layers
  cnnkit inspect features RUN_DIR shoe.png --layers stem.0 stages.2.conv2
"""
    parser = commands.add_parser(
        "inspect", help="draw a trained run's conv filters, its feature maps for an image, or what excites it",
        usage="cnnkit inspect filters RUN_DIR [--layer NAME] [--out DIR]\n"
              "       cnnkit inspect features RUN_DIR IMAGE [--layers NAME ...] [--out DIR]\n"
              "       cnnkit inspect maximize RUN_DIR (--layer NAME [--channels LIST] | --class C) [--out DIR]",
        description="Write PNG pictures of what a trained model learned, and print where they are.\n"
                    "filters: the kernels of one conv layer (RGB kernels in colour, others as the mean\n"
                    "over input channels). features: one grid per layer of its outputs for an image,\n"
                    "which goes through the run's own preprocessing first. maximize: inputs optimized to\n"
                    "excite a layer's channels or a class (activation maximization).",
        epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="inspect_action", metavar="ACTION", required=True)
    filters = actions.add_parser("filters", help="the kernels of one conv layer as an image grid",
                                 usage="cnnkit inspect filters RUN_DIR [--layer NAME] [--out DIR] [--device DEVICE]",
                                 epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    filters.add_argument("run_dir", metavar="RUN_DIR")
    filters.add_argument("--layer", metavar="NAME", help="conv layer name (default: the first conv layer)")
    features = actions.add_parser("features", help="the feature maps of chosen layers for one image",
                                  usage="cnnkit inspect features RUN_DIR IMAGE [--layers NAME ...] [--out DIR] "
                                        "[--device DEVICE]",
                                  epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    features.add_argument("run_dir", metavar="RUN_DIR")
    features.add_argument("image", metavar="IMAGE")
    features.add_argument("--layers", nargs="+", metavar="NAME",
                          help="conv layer names (default: the first, middle and last conv layers)")
    maximize = actions.add_parser(
        "maximize", help="activation maximization: inputs optimized to excite a layer's channels or a class",
        usage="cnnkit inspect maximize RUN_DIR (--layer NAME [--channels LIST] | --class C[,C ...]) [--steps N]\n"
              "       [--out DIR] [--device DEVICE]",
        description="Start from faint noise and follow the gradient to an input that excites a channel of a\n"
                    "layer (its mean activation) or a class (its logit) as much as possible. Jitter, L2 and\n"
                    "total-variation penalties and a light blur every few steps keep the picture natural\n"
                    "instead of high-frequency noise. Early layers give edges and stripes, deeper ones textures\n"
                    "and parts. Writes one PNG grid with each target's score before and after, and prints where.",
        epilog="examples:\n  cnnkit inspect maximize RUN_DIR --layer stages.1.conv2              # its first 8 channels\n"
               "  cnnkit inspect maximize RUN_DIR --layer stages.2.conv2 --channels 0,5,9-12\n"
               "  cnnkit inspect maximize RUN_DIR --class Sneaker,Bag --steps 400",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    maximize.add_argument("run_dir", metavar="RUN_DIR")
    maximize.add_argument("--layer", metavar="NAME", help="layer whose channels to excite (see `cnnkit models summary`)")
    maximize.add_argument("--channels", metavar="LIST", help="channel indices, e.g. 0,1,2 or 0-7 (default: the first 8)")
    maximize.add_argument("--class", dest="target", metavar="C", help="class names or indices, comma-separated")
    maximize.add_argument("--steps", type=int, default=200, metavar="N", help="gradient-ascent steps (default 200)")
    for action in (filters, features, maximize):
        action.add_argument("--out", metavar="DIR", help="folder for the PNGs (default: RUN_DIR/inspect/)")
        action.add_argument("--device", default="cpu", help="device to run on (default cpu)")


def _add_explain(commands) -> None:
    examples = """\
examples:
  cnnkit explain RUN_DIR shoe.png                        # predicted class -> RUN_DIR/explain/explain-shoe-gradcam.png
  cnnkit explain RUN_DIR a.png b.png --class Sneaker --method gradcam++ --out pictures/
  cnnkit explain RUN_DIR shoe.png --class 2 --layer stages.1.conv2
"""
    parser = commands.add_parser(
        "explain", help="class activation maps (Grad-CAM) of a trained run over images",
        usage="cnnkit explain RUN_DIR IMAGE... [--class C] [--method gradcam|gradcam++] [--layer NAME] "
              "[--out DIR] [--device DEVICE]",
        description="Write one PNG per image with a Grad-CAM or Grad-CAM++ heatmap over the image (after the\n"
                    "run's own preprocessing), and print where they are. The target layer is chosen per family\n"
                    "unless --layer names another: for CNNs the last conv layer whose output is still spatial;\n"
                    "ViT: the first LayerNorm of the last block (class token dropped, tokens back to a grid);\n"
                    "Swin and CoAtNet: the last stage.",
        epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--class", dest="target", metavar="C",
                        help="class name or index to explain (default: the predicted class)")
    parser.add_argument("--method", choices=("gradcam", "gradcam++"), default="gradcam",
                        help="gradcam (default) or gradcam++")
    parser.add_argument("--layer", metavar="NAME", help="target module name, e.g. stages.1.conv2 or blocks.5.norm1 "
                        "(default: chosen per family, see above)")
    parser.add_argument("--out", metavar="DIR", help="folder for the PNGs (default: RUN_DIR/explain/)")
    parser.add_argument("--device", default="cpu", help="device to run on (default cpu)")


def _add_report(commands) -> None:
    parser = commands.add_parser(
        "report", help="write the run's HTML report (curves, confusion matrix, mistakes, filters, Grad-CAM)",
        description="Write RUN_DIR/report.html, one self-contained file (pictures embedded, nothing loaded from\n"
                    "the network) with the config, the model summary, training curves (loss, accuracy, learning\n"
                    "rate per epoch), the confusion matrix and per-class metrics on the test split (else the\n"
                    "validation split), the most confidently wrong images, first-layer filters, feature maps and\n"
                    "Grad-CAM of a few images. The plots are also saved as RUN_DIR/report/*.png. `cnnkit train`\n"
                    "writes the report at its end; this command makes it again.",
        epilog="examples:\n  cnnkit report runs/fastnet-fashion-mnist-20261125-101500\n"
               "  cnnkit report RUN_DIR --max-seconds 600     # a large test split: evaluate all of it",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--device", default="cpu", help="device to run the model on (default cpu)")
    parser.add_argument("--max-seconds", type=float, default=60.0, metavar="S",
                        help="time budget (default 60): evaluation stops early and per-image pictures are skipped "
                             "once it is spent; the report says so")


def _add_export(commands) -> None:
    examples = """\
what is written:
  the model (fp32; input: float32 (B, C, H, W) normalized with the run's mean/std; output: logits), with the
  checkpoint's record (task, class names, preprocessing, config) embedded as metadata: ONNX metadata_props
  "cnnkit", or the extra file cnnkit.json inside TorchScript and .pt2 archives; and FILE.json beside it, a
  readable copy plus the parity numbers and the checkpoint's SHA-256.

checks (the export fails, and nothing is written, if one does not pass):
  onnx.checker with shape inference (ONNX); parity: the exported model and PyTorch on the same inputs at
  batch 1 and 4 agree within --tolerance (max abs difference of the logits, default 1e-4).

formats:
  onnx          torch.onnx.export(dynamo=True); runs in ONNX Runtime, OpenVINO, TensorRT ...
  torch-export  torch.export (.pt2); load with torch.export.load(FILE).module()
  torchscript   torch.jit.trace (.torchscript.pt); deprecated by PyTorch, kept for C++ libtorch users

examples:
  cnnkit export RUN_DIR                                  # RUN_DIR/export/best.onnx, batch fixed to 1
  cnnkit export RUN_DIR --format onnx --dynamic-batch --out model.onnx
  cnnkit export RUN_DIR --format torch-export            # RUN_DIR/export/best.pt2
  cnnkit predict model.onnx shoe.png --backend openvino  # run the exported file
"""
    parser = commands.add_parser(
        "export", help="write a trained run as ONNX, TorchScript or torch.export, checked against PyTorch",
        description="Export the best (or last) checkpoint of a run for deployment, with its class names and\n"
                    "preprocessing inside the file, and check that it computes what PyTorch computes.",
        epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--format", choices=("onnx", "torchscript", "torch-export"), default="onnx",
                        help="default onnx")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="accept any batch size (default: the batch dimension is fixed to 1)")
    parser.add_argument("--out", metavar="FILE", help="where to write (default RUN_DIR/export/best.onnx, "
                        "best.torchscript.pt or best.pt2)")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="parity: largest max abs difference of the "
                        "logits allowed (default 1e-4)")


def _add_serve(commands) -> None:
    examples = """\
endpoints:
  GET  /          a web page: upload an image, see the top classes and the Grad-CAM overlay
  POST /predict   multipart form, image in the field "file"; ?top_k=5&explain=true -> JSON
  GET  /healthz   the model, the queue and the limits, as JSON
refusals (JSON {"error", "status", "detail"}, never a traceback):
  413 body over --max-body-mib (read from Content-Length, before the body) or image over --max-pixels
  (read from the image header, before decoding); 411 no Content-Length; 415 not an image or an
  unsupported format; 422 a corrupt image or a malformed request; 503 all workers busy and --queue full;
  504 no answer within --timeout seconds

examples:
  cnnkit serve RUN_DIR                          # http://127.0.0.1:8000/
  curl -F file=@shoe.png 'http://127.0.0.1:8000/predict?top_k=3'
  cnnkit serve RUN_DIR --port 9000 --backend onnxruntime --workers 2
"""
    parser = commands.add_parser(
        "serve", help="serve a trained run over HTTP, with a web page",
        description="Serve a classification run over HTTP (FastAPI + uvicorn) until Ctrl-C. Decoding and\n"
                    "inference run on worker threads, off the event loop. Binds to loopback by default: the\n"
                    "server has no authentication.",
        epilog=examples, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory (or checkpoint, or exported .onnx file)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="default 8000")
    parser.add_argument("--backend", choices=("auto", "torch", "onnxruntime", "openvino"), default="auto",
                        help="inference engine, as for `cnnkit predict` (default auto); Grad-CAM always uses PyTorch")
    parser.add_argument("--max-body-mib", type=float, default=10.0, metavar="MIB", help="largest upload (default 10)")
    parser.add_argument("--max-pixels", type=int, default=50_000_000, metavar="N",
                        help="largest width x height (default 50,000,000)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S", help="seconds per request (default 10)")
    parser.add_argument("--workers", type=int, default=1, help="inference threads (default 1)")
    parser.add_argument("--queue", type=int, default=8, metavar="N",
                        help="requests that may wait for a worker (default 8); more get 503")



def _add_data(commands) -> None:
    """`cnnkit data ACTION`: dataset tools. To add an action, write `_add_data_NAME(actions)` (which sets
    `handler=run_data_NAME` on its parser) and `run_data_NAME(args)`, and list the former in DATA_ACTIONS."""
    parser = commands.add_parser(
        "data", help="dataset tools: make the scenes benchmark, convert detection annotations, check for duplicates",
        usage="cnnkit data ACTION ...",
        description="Dataset tools. `cnnkit data ACTION --help` explains each action.",
        epilog="examples:\n  cnnkit data make-scenes data/scenes\n"
               "  cnnkit data convert data/scenes data/scenes-yolo --to yolo",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="data_action", metavar="ACTION", required=True)
    for add in DATA_ACTIONS:
        add(actions)


def _add_data_convert(actions) -> None:
    from_help = "(default: detected; COCO, then VOC, then YOLO when a dataset carries several)"
    parser = actions.add_parser(
        "convert", help="convert detection annotations between COCO, Pascal VOC and YOLO",
        description="Read a detection dataset in any layout cnnkit knows and write it, split by split, as\n"
                    "DST/SPLIT/images/ plus the annotations in the --to format: COCO DST/annotations/instances_SPLIT.json,\n"
                    "VOC DST/SPLIT/annotations/*.xml or YOLO DST/SPLIT/labels/*.txt, and DST/classes.txt. Images are\n"
                    "hard-linked (copied across disks); instance masks go along (COCO RLE, or SPLIT/instances/*.png).\n"
                    "Boxes are carried over as they are: out-of-image boxes are clipped when training reads them.\n\n"
                    "Box conventions: COCO [x, y, width, height] in pixels; VOC xmin ymin xmax ymax in pixels;\n"
                    "YOLO 'class cx cy w h' as fractions of the image size, classes 0-based in classes.txt order.\n\n"
                    "SRC layouts: split folders as above (what `make-scenes` and `convert` write); Pascal VOC\n"
                    "(Annotations/, JPEGImages/, ImageSets/Main/SPLIT.txt); YOLO (images/[SPLIT/], labels/[SPLIT/]\n"
                    "with classes.txt or data.yaml); COCO (annotations/*.json or *.json beside the images, or one .json file).",
        epilog="examples:\n  cnnkit data convert data/scenes data/scenes-yolo --to yolo\n"
               "  cnnkit data convert VOCdevkit/VOC2012 voc-as-coco --to coco\n"
               "  cnnkit data convert instances_val.json coco-val-voc --to voc",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", metavar="SRC", help="dataset folder, or a COCO .json file")
    parser.add_argument("destination", metavar="DST", help="new (empty) folder to write")
    parser.add_argument("--to", required=True, choices=("coco", "voc", "yolo"), help="format to write")
    parser.add_argument("--from", dest="source_format", choices=("coco", "voc", "yolo"), help="format to read " + from_help)
    parser.set_defaults(handler=run_data_convert)


def _scenes_defaults() -> dict:
    """ScenesConfig's defaults, read from its source: importing cnnkit.data would load torch for `--help`."""
    import ast
    import importlib.util

    source = (Path(importlib.util.find_spec("cnnkit").origin).parent / "data" / "scenes.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef) and node.name == "ScenesConfig":
            return {item.target.id: ast.literal_eval(item.value) for item in node.body
                    if isinstance(item, ast.AnnAssign) and item.value is not None}
    raise RuntimeError("cnnkit/data/scenes.py has no ScenesConfig")


def _add_data_make_scenes(actions) -> None:
    defaults = argparse.Namespace(**_scenes_defaults())
    parser = actions.add_parser(
        "make-scenes", help="write the scenes benchmark (Fashion-MNIST items on cluttered canvases)",
        description="Compose Fashion-MNIST garments onto cluttered RGB canvases (gradient, stripes, semi-transparent\n"
                    "distractor shapes) at random sizes, colours and positions, with occlusion, and write train/val/test\n"
                    "splits with every annotation cnnkit reads: YOLO labels, VOC XML, COCO JSON (boxes + RLE masks),\n"
                    "semantic masks and instance-id masks. Boxes are tight around each object's visible pixels. The\n"
                    "same --seed writes byte-identical files. OUT/README.txt records the settings and counts.\n\n"
                    "Train and val canvases draw from disjoint pools of Fashion-MNIST training items, test canvases\n"
                    "from its test items (found as for `cnnkit train`, see --fashion-mnist).",
        epilog="examples:\n  cnnkit data make-scenes data/scenes                          # the benchmark defaults\n"
               "  cnnkit data make-scenes /tmp/tiny --train 8 --val 4 --test 4 --size 64\n"
               "  cnnkit train --task detect --data data/scenes ...",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", metavar="OUT", help="new (empty) folder to write")
    parser.add_argument("--seed", type=int, default=defaults.seed, help=f"random seed (default {defaults.seed})")
    for split in ("train", "val", "test"):
        parser.add_argument(f"--{split}", type=int, default=getattr(defaults, split), metavar="N",
                            help=f"{split} canvases (default {getattr(defaults, split)})")
    parser.add_argument("--size", type=int, default=defaults.size, help=f"canvas side in pixels (default {defaults.size})")
    parser.add_argument("--min-objects", type=int, default=defaults.min_objects, metavar="N",
                        help=f"fewest objects per canvas (default {defaults.min_objects})")
    parser.add_argument("--max-objects", type=int, default=defaults.max_objects, metavar="N",
                        help=f"most objects per canvas (default {defaults.max_objects})")
    parser.add_argument("--min-scale", type=float, default=defaults.min_scale, metavar="F",
                        help=f"smallest item size as a fraction of the canvas side (default {defaults.min_scale})")
    parser.add_argument("--max-scale", type=float, default=defaults.max_scale, metavar="F",
                        help=f"largest item size as a fraction of the canvas side (default {defaults.max_scale})")
    parser.add_argument("--fashion-mnist", metavar="DIR", help="folder holding the Fashion-MNIST files "
                        "(default: $CNNKIT_DATA, /usr/share/datasets/fashion-mnist, ~/.cache/cnnkit, or download)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run_data_make_scenes)


def _add_data_check(actions) -> None:
    parser = actions.add_parser(
        "check", help="find exact and near-duplicate images within and across train/val/test (leakage)",
        usage="cnnkit data check DATASET [--threshold T] [--size PX] [--exact-only] [--val-fraction F] [--seed S]\n"
              "                         [--out FILE.json] [--plot FILE.png]",
        description="Look for duplicate images in a dataset, within each split and across train, val and test.\n"
                    "A test image that is also in the training data measures memory, not generalisation; a val\n"
                    "split overlapping train makes early stopping and tuning optimistic.\n\n"
                    "exact: identical decoded pixels (any file format). near: the Pearson correlation of the two\n"
                    "images' grayscale thumbnails (--size x --size pixels) is at least --threshold: the same\n"
                    "picture re-encoded, resized, brightened or slightly edited. Crops, flips and colour-only\n"
                    "changes are not caught. Near pairs are candidates for a person to judge: look at --plot.\n\n"
                    "val is the split `cnnkit train` would carve with the same val_fraction and seed. Every pair of\n"
                    "images is compared (matrix products, bfloat16 screen then float32): Fashion-MNIST's 70 000\n"
                    "images take seconds to tens of seconds on a CPU.",
        epilog="examples:\n  cnnkit data check fashion-mnist --plot dups.png\n"
               "  cnnkit data check ~/photos/ --threshold 0.995 --out check.json\n"
               "  cnnkit data check labels.csv --exact-only --val-fraction 0.2 --seed 1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", metavar="DATASET", help="fashion-mnist, a folder (class subfolders, or train/ "
                        "and test/), or a CSV, as `cnnkit train --data` takes it")
    parser.add_argument("--threshold", type=float, default=0.99, help="near duplicates: minimum thumbnail "
                        "correlation, in (0, 1] (default 0.99; 0.995 is stricter)")
    parser.add_argument("--size", type=int, default=32, metavar="PX", help="thumbnail side (default 32; "
                        "in-memory data of smaller images, e.g. Fashion-MNIST, keeps its size)")
    parser.add_argument("--exact-only", action="store_true", help="skip near duplicates (the O(N^2) part)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="as `cnnkit train` val_fraction (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="as `cnnkit train` seed (default 0)")
    parser.add_argument("--out", metavar="FILE.json", help="write the full report (counts, examples) as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="draw example pairs (exact first, then near)")
    parser.set_defaults(handler=run_data_check)


DATA_ACTIONS = (_add_data_convert, _add_data_make_scenes, _add_data_check)


def _add_lr_find(commands) -> None:
    parser = commands.add_parser(
        "lr-find", help="LR range test: plot loss against a growing learning rate, suggest an LR",
        description="The learning-rate range test (Smith 2015; fast.ai's lr_find). Builds the model, data and\n"
                    "optimizer exactly as `cnnkit train` would with the same settings, then trains for --steps\n"
                    "batches while the LR grows exponentially from --start-lr to --end-lr, recording the loss.\n"
                    "Stops early when the smoothed loss exceeds 4x its minimum. Nothing is saved but the plot\n"
                    "(and its numbers as .json beside it); the weights are thrown away.\n\n"
                    "reading the plot (loss against LR, log axis):\n"
                    "  - flat on the left: the LR is too small to change anything;\n"
                    "  - then the loss falls: the useful range. The steepest part is a good LR;\n"
                    "  - a minimum, then the loss shoots up: the LR is too large and training diverges.\n"
                    "    The LR at the minimum is already too high: take about a tenth of it.\n"
                    "The printed suggestion is minimum / 10 (green line), with the steepest descent beside it\n"
                    "(orange). Use it as the peak LR: `cnnkit train lr=...`. A curve that never falls (the loss\n"
                    "only rises) points to a bug or bad data rather than an LR; a very noisy curve gets smoother\n"
                    "with a larger batch_size or more --steps. The result is a starting point, not the optimum:\n"
                    "a short sweep from random weights is cautious, and one-cycle schedules (the default) often\n"
                    "train well at several times the suggestion (fastnet on Fashion-MNIST: suggestion ~2e-3,\n"
                    "minimum ~2e-2, tuned lr 0.2).",
        epilog="examples:\n  cnnkit lr-find                                   # fastnet on Fashion-MNIST\n"
               "  cnnkit lr-find --model resnet20 batch_size=128 --out resnet20-lr.png\n"
               "  cnnkit lr-find --config recipe.yaml optimizer=adamw --start-lr 1e-6 --end-lr 1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE.yaml", help="flat YAML file of settings, as `cnnkit train`")
    parser.add_argument("--data", help="dataset, as `cnnkit train --data`")
    parser.add_argument("--model", help="architecture name or YAML network spec")
    parser.add_argument("--start-lr", type=float, default=1e-7, help="first LR (default 1e-7)")
    parser.add_argument("--end-lr", type=float, default=10.0, help="last LR (default 10)")
    parser.add_argument("--steps", type=int, default=100, metavar="N", help="batches, one LR each (default 100)")
    parser.add_argument("--out", default="lr-find.png", metavar="FILE.png", help="the plot (default lr-find.png); "
                        "the curve's numbers go beside it as .json")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="any `cnnkit train` setting, e.g. "
                        "batch_size=128")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnkit", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="cnnkit: build, train, inspect and ship convolutional neural networks.",
        epilog="start with:  cnnkit train --epochs 3   then   cnnkit evaluate RUN_DIR\n"
               "help on one command:  cnnkit train --help")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_train, _add_augment, _add_evaluate, _add_predict, _add_models, _add_inspect, _add_explain, _add_report,
                _add_export, _add_serve, _add_data, _add_lr_find):
        add(commands)
    return parser


def run_train(args) -> int:
    from cnnkit.api import train
    from cnnkit.config import parse_key_values

    overrides = parse_key_values(args.overrides)
    for name in ("task", "data", "model", "epochs", "out", "name"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.resume:
        if args.config:
            raise CnnkitError("--resume takes the settings of the run; do not combine it with --config")
        train(resume=args.resume, **overrides)
    else:
        train(args.config, **overrides)
    return 0


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


def run_predict_segmentation(args) -> int:
    """`cnnkit predict` for segmentation and instance runs: mask PNG and overlay per image (instance: + JSON)."""
    from cnnkit.api import load

    for image in args.images:
        if not Path(image).is_file():
            raise CnnkitError(f"image {image} not found")
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
    for image in args.images:
        if not Path(image).is_file():
            raise CnnkitError(f"image {image} not found")
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


def run_models(args) -> int:
    if args.models_action == "summary":
        return run_models_summary(args)
    from cnnkit.errors import ModelError
    from cnnkit.inspect import model_cost, parse_input_size
    from cnnkit.registry import get_entry, list_models

    input_size = parse_input_size(args.input or "1x28x28")
    with_macs = args.flops or args.input is not None
    rows, failures = [], []
    for name in list_models(args.family):
        entry = get_entry(name)
        row = {"name": name, "family": entry.family, "source": entry.source, "description": entry.description,
               "input": list(input_size)}
        try:
            row["parameters"], macs = model_cost(name, input_size, num_classes=10, macs=with_macs)
        except ModelError as error:  # one model that cannot take this input must not hide the others
            row["parameters"], macs = None, None
            failures.append(f"{name}: {error}")
        if with_macs:
            row.update(macs=macs, flops=None if macs is None else 2 * macs)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(f"no models in family {args.family!r}")
    else:
        name_width = max(16, *(len(row["name"]) for row in rows))
        family_width = max(12, *(len(row["family"]) for row in rows))
        macs_header = f" {'GMACs':>8}" if with_macs else ""
        print(f"{'name':{name_width}} {'family':{family_width}} {'params':>9}{macs_header}  {'source':12} description")
        for row in rows:
            description = textwrap.shorten(row["description"], 70)
            parameters = "n/a".rjust(9) if row["parameters"] is None else f"{row['parameters'] / 1e6:8.3f}M"
            macs = ""
            if with_macs:
                macs = " " + ("n/a" if row["macs"] is None else f"{row['macs'] / 1e9:.4f}").rjust(8)
            print(f"{row['name']:{name_width}} {row['family']:{family_width}} {parameters}{macs}  {row['source']:12} "
                  f"{description}")
        if with_macs:
            print(f"GMACs: multiply-accumulates per {'x'.join(map(str, input_size))} image (1 MAC = 2 FLOPs)")
    for failure in failures:
        print(f"cnnkit models: {failure}", file=sys.stderr)
    return 0


def run_models_summary(args) -> int:
    from cnnkit.inspect import parse_input_size, summarize_model

    input_size = parse_input_size(args.input)
    if args.num_classes < 1:
        raise CnnkitError(f"--num-classes must be 1 or more, got {args.num_classes}")
    if args.depth is not None and args.depth < 0:
        raise CnnkitError(f"--depth must be 0 or more, got {args.depth}")
    result = summarize_model(args.model, input_size, num_classes=args.num_classes, depth=args.depth)
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.table())
    return 0


def run_inspect(args) -> int:
    from cnnkit.api import load
    from cnnkit.inspect.visualize import feature_maps, plot_feature_maps, plot_filters

    classifier = load(args.run_dir, device=args.device)
    out = Path(args.out) if args.out else Path(args.run_dir) / "inspect"
    if args.inspect_action == "maximize":
        from cnnkit.inspect.maximize import Regularization, draw_maximized

        if args.steps < 1:
            raise CnnkitError(f"--steps must be 1 or more, got {args.steps}")
        if args.channels and not args.layer:
            raise CnnkitError("--channels needs --layer NAME: the layer whose channels to excite")
        paths = [draw_maximized(classifier, out, layer=args.layer, channels=args.channels, classes=args.target,
                                regularization=Regularization(steps=args.steps))]
    elif args.inspect_action == "filters":
        from cnnkit.inspect.visualize import conv_layers

        layer = args.layer
        if layer is None:
            layers = conv_layers(classifier.model)
            layer = layers[0][0] if layers else None
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", layer or "conv")
        paths = [plot_filters(classifier.model, layer, out / f"filters-{name}.png")]
    else:
        if not Path(args.image).is_file():
            raise CnnkitError(f"image {args.image} not found")
        inputs = classifier.preprocessing.normalize(classifier.preprocessing.load([args.image]))  # (1, C, H, W)
        maps = feature_maps(classifier.model, inputs, args.layers)
        paths = plot_feature_maps(maps, out / f"features-{Path(args.image).stem}")
    for path in paths:
        print(path)
    return 0


def run_explain(args) -> int:
    from cnnkit.api import load
    from cnnkit.inspect.gradcam import gradcam, plot_gradcam, resolve_class

    for image in args.images:
        if not Path(image).is_file():
            raise CnnkitError(f"image {image} not found")
    classifier = load(args.run_dir, device=args.device)
    target = resolve_class(args.target, classifier.classes)
    out = Path(args.out) if args.out else Path(args.run_dir) / "explain"
    for image in args.images:
        batch = classifier.preprocessing.load([image])  # (1, C, H, W) uint8
        inputs = classifier.preprocessing.normalize(batch).to(classifier.device)
        heatmap, index, layer = gradcam(classifier.model, inputs, target, args.layer, args.method)
        probability = float(classifier.predict_proba(batch)[0, index])
        title = f"{classifier.classes[index]} (p={probability:.2f}), layer {layer}"
        print(plot_gradcam(batch[0], heatmap, title, out / f"explain-{Path(image).stem}-{args.method}.png"))
    return 0


def run_report(args) -> int:
    from cnnkit.inspect.report import write_report

    if args.max_seconds <= 0:
        raise CnnkitError(f"--max-seconds must be positive, got {args.max_seconds}")
    print(write_report(args.run_dir, device=args.device, max_seconds=args.max_seconds))
    return 0


def run_export(args) -> int:
    from cnnkit.export import export_run

    result = export_run(args.run_dir, args.format, out=args.out, dynamic_batch=args.dynamic_batch,
                        checkpoint=args.checkpoint, tolerance=args.tolerance)
    print(result.summary())
    return 0


def run_serve(args) -> int:
    from cnnkit.serve import ServeLimits, serve

    if not 0 < args.port < 65536:
        raise CnnkitError(f"--port must be 1-65535, got {args.port}")
    limits = ServeLimits(max_body_bytes=int(args.max_body_mib * 2**20), max_pixels=args.max_pixels,
                         timeout_s=args.timeout, workers=args.workers, queue_size=args.queue)
    serve(args.run_dir, host=args.host, port=args.port, backend=args.backend, limits=limits)
    return 0



def run_data(args) -> int:
    return args.handler(args)


def run_data_convert(args) -> int:
    from cnnkit.data.detection import convert_dataset

    written = convert_dataset(args.source, args.destination, args.to, args.source_format)
    for split, (images, objects) in written.items():
        print(f"{split}: {images} images, {objects} objects")
    print(f"wrote {args.to.upper()} annotations to {args.destination}")
    return 0


def run_data_make_scenes(args) -> int:
    import time

    from cnnkit.data.scenes import make_scenes, scenes_config

    config = scenes_config(seed=args.seed, train=args.train, val=args.val, test=args.test, size=args.size,
                           min_objects=args.min_objects, max_objects=args.max_objects, min_scale=args.min_scale,
                           max_scale=args.max_scale)
    start = time.perf_counter()
    counts = make_scenes(args.out, config, fashion_mnist_root=args.fashion_mnist, progress=not args.quiet)
    for split, (images, objects) in counts.items():
        print(f"{split}: {images} canvases, {objects} objects")
    print(f"wrote {args.out} in {time.perf_counter() - start:.1f} s (settings and counts: {Path(args.out) / 'README.txt'})")
    return 0


def run_data_check(args) -> int:
    from cnnkit.data.check import check_dataset, format_report, plot_pairs
    from cnnkit.engine.checkpoint import atomic_write_text

    report = check_dataset(args.dataset, threshold=args.threshold, size=args.size, val_fraction=args.val_fraction,
                           seed=args.seed, near=not args.exact_only)
    print(format_report(report))
    if args.plot:
        print(f"example pairs: {plot_pairs(report, args.plot)}")
    if args.out:
        atomic_write_text(Path(args.out), json.dumps({k: v for k, v in report.items() if not k.startswith("_")},
                                                     indent=2) + "\n")
        print(f"report: {args.out}")
    return 0


def run_lr_find(args) -> int:
    from cnnkit.config import parse_key_values
    from cnnkit.engine.lr_finder import lr_find, plot_lr_find

    overrides = parse_key_values(args.overrides)
    for name in ("data", "model"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    result = lr_find(args.config, start_lr=args.start_lr, end_lr=args.end_lr, num_steps=args.steps, **overrides)
    print(result.summary())
    print(f"plot: {plot_lr_find(result, args.out)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"train": run_train, "augment": run_augment, "evaluate": run_evaluate, "predict": run_predict, "models": run_models,
                "inspect": run_inspect, "explain": run_explain, "report": run_report,
                "export": run_export, "serve": run_serve, "data": run_data,
                "lr-find": run_lr_find}
    try:
        return handlers[args.command](args)
    except CnnkitError as error:
        if args.debug:
            raise
        print(f"cnnkit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `cnnkit evaluate RUN | head -1`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        if args.command == "train":
            print("\ninterrupted: the last completed epoch is saved; continue with "
                  "`cnnkit train --resume RUN_DIR`", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
