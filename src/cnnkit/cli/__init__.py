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

One module per command group, each command's parser beside its handler: train.py (train, augment, lr-find),
runs.py (evaluate, predict), models.py, inspect.py (inspect, explain, report), ship.py (export, serve) and
data.py. Handlers import what they run (cnnkit.api, torch) when they run, so `cnnkit --help` stays fast.

Errors a user can cause print a short message that starts with what went wrong (no traceback;
--debug shows it) and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys

from cnnkit.cli import data, embed, inspect, models, runs, ship, train
from cnnkit.cli.data import _scenes_defaults  # noqa: F401  (tests compare it with ScenesConfig)
from cnnkit.errors import CnnkitError

# Command name -> (adds its parser, runs it), in the order `cnnkit --help` lists them.
COMMANDS = {
    "train": (train.add_train, train.run_train),
    "augment": (train.add_augment, train.run_augment),
    "evaluate": (runs.add_evaluate, runs.run_evaluate),
    "predict": (runs.add_predict, runs.run_predict),
    "models": (models.add_models, models.run_models),
    "inspect": (inspect.add_inspect, inspect.run_inspect),
    "explain": (inspect.add_explain, inspect.run_explain),
    "report": (inspect.add_report, inspect.run_report),
    "export": (ship.add_export, ship.run_export),
    "serve": (ship.add_serve, ship.run_serve),
    "data": (data.add_data, data.run_data),
    "lr-find": (train.add_lr_find, train.run_lr_find),
    "embed": (embed.add_embed, embed.run_embed),
    "verify": (embed.add_verify, embed.run_verify),
    "gallery": (embed.add_gallery, embed.run_gallery),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnkit", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="cnnkit: build, train, inspect and ship convolutional neural networks.",
        epilog="start with:  cnnkit train --epochs 3   then   cnnkit evaluate RUN_DIR\n"
               "help on one command:  cnnkit train --help")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add, _ in COMMANDS.values():
        add(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _, handler = COMMANDS[args.command]
    try:
        return handler(args)
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

