"""The `cnnkit` command: a thin layer over the Python API (cnnkit.api).

    cnnkit train [--config FILE.yaml] [--data ...] [--model NAME] [--epochs N] [key=value ...]
    cnnkit evaluate RUN_DIR [--split test|val] [--json]
    cnnkit predict RUN_DIR IMAGE... [--top-k K] [--json]
    cnnkit models [--family NAME]

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
        description="Train a classifier. Every setting has a working default; the resolved settings, metrics per "
                    "epoch (metrics.jsonl) and the best and last checkpoints go to the run directory.",
        epilog=_settings_help() + "\n\n" + EXAMPLES_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE.yaml", help="flat YAML file of settings (overridden by the flags below)")
    parser.add_argument("--data", help="fashion-mnist, a directory (class subfolders, or train/ and test/), or a CSV")
    parser.add_argument("--model", help="architecture name (see `cnnkit models`) or a YAML network spec "
                        "(see examples/my_net.yaml)")
    parser.add_argument("--epochs", type=int, help="number of epochs")
    parser.add_argument("--out", metavar="DIR", help="parent directory of run directories (default runs/)")
    parser.add_argument("--name", help="run directory name (default <model>-<data>-<time>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint; "
                        "--epochs N extends it (the LR schedule stretches to the new length)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="any setting below, e.g. lr=0.1")


def _add_evaluate(commands) -> None:
    parser = commands.add_parser(
        "evaluate", help="measure a trained run on its test (or validation) split",
        description="Evaluate the best checkpoint of a run on the split it was never tuned on. The data and "
                    "preprocessing come from the run directory.",
        epilog="examples:\n  cnnkit evaluate runs/fastnet-fashion-mnist-20261125-101500\n"
               "  cnnkit evaluate RUN_DIR --split val --json > val.json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--split", choices=["test", "val"], default="test")
    parser.add_argument("--json", action="store_true", help="print JSON (accuracy, loss, per_class, confusion_matrix ...)")
    parser.add_argument("--device", default="auto")


def _add_predict(commands) -> None:
    parser = commands.add_parser(
        "predict", help="classify image files with a trained run",
        description="Print the most likely classes of each image. Images of any size and mode (grayscale, RGB, "
                    "RGBA, palette, 16-bit) are converted, resized and normalized exactly as in training.",
        epilog="examples:\n  cnnkit predict RUN_DIR shoe.png bag.jpg --top-k 3\n  cnnkit predict RUN_DIR *.png --json",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--top-k", type=int, default=3, metavar="K")
    parser.add_argument("--json", action="store_true", help="print JSON: one entry per image with its top-k classes")
    parser.add_argument("--device", default="auto")


def _add_models(commands) -> None:
    parser = commands.add_parser("models", help="list the registered architectures",
                                 description="List architectures with their parameter counts (10 classes, 1x28x28).")
    parser.add_argument("--family", help="only this family (e.g. resnet)")
    parser.add_argument("--json", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnkit", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="cnnkit: build, train, inspect and ship convolutional neural networks.",
        epilog="start with:  cnnkit train --epochs 3   then   cnnkit evaluate RUN_DIR\n"
               "help on one command:  cnnkit train --help")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_train, _add_evaluate, _add_predict, _add_models):
        add(commands)
    return parser


def run_train(args) -> int:
    from cnnkit.api import train
    from cnnkit.config import parse_key_values

    overrides = parse_key_values(args.overrides)
    for name in ("data", "model", "epochs", "out", "name"):
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

    result = load(args.run_dir, device=args.device).evaluate(args.split)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.split} accuracy {result['accuracy']:.4f}  loss {result['loss']:.4f}  "
          f"balanced accuracy {result['balanced_accuracy']:.4f}  ({result['count']} images)")
    width = max(len(name) for name in result["per_class"])
    print(f"{'class'.ljust(width)}  precision  recall  f1      support")
    for name, values in result["per_class"].items():
        print(f"{name.ljust(width)}  {values['precision']:.4f}     {values['recall']:.4f}  {values['f1']:.4f}  "
              f"{values['support']}")
    return 0


def run_predict(args) -> int:
    from cnnkit.api import load

    if args.top_k < 1:
        raise CnnkitError(f"--top-k must be 1 or more, got {args.top_k}")
    classifier = load(args.run_dir, device=args.device)
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
    from cnnkit.registry import create_model, get_entry, list_models

    rows = []
    for name in list_models(args.family):
        entry = get_entry(name)
        parameters = sum(p.numel() for p in create_model(name, num_classes=10, in_chans=1, input_size=28).parameters())
        rows.append({"name": name, "family": entry.family, "parameters": parameters, "source": entry.source,
                     "description": entry.description})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no models in family {args.family!r}")
        return 0
    print(f"{'name':16} {'family':12} {'params':>9}  {'source':12} description")
    for row in rows:
        description = textwrap.shorten(row["description"], 70)
        print(f"{row['name']:16} {row['family']:12} {row['parameters'] / 1e6:8.3f}M  {row['source']:12} {description}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"train": run_train, "evaluate": run_evaluate, "predict": run_predict, "models": run_models}
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
