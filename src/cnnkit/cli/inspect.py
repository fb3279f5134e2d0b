"""`cnnkit inspect filters|features|maximize`, `cnnkit explain` and `cnnkit report`: what a trained run learned."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from cnnkit.files import require_files
from cnnkit.errors import CnnkitError


def add_inspect(commands) -> None:
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
        require_files([args.image])
        inputs = classifier.preprocessing.normalize(classifier.preprocessing.load([args.image]))  # (1, C, H, W)
        maps = feature_maps(classifier.model, inputs, args.layers)
        paths = plot_feature_maps(maps, out / f"features-{Path(args.image).stem}")
    for path in paths:
        print(path)
    return 0


def add_explain(commands) -> None:
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


def run_explain(args) -> int:
    from cnnkit.api import load
    from cnnkit.inspect.gradcam import gradcam, plot_gradcam, resolve_class

    require_files(args.images)
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


def add_report(commands) -> None:
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


def run_report(args) -> int:
    from cnnkit.inspect.report import write_report

    if args.max_seconds <= 0:
        raise CnnkitError(f"--max-seconds must be positive, got {args.max_seconds}")
    print(write_report(args.run_dir, device=args.device, max_seconds=args.max_seconds))
    return 0
