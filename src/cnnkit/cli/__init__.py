"""The `cnnkit` command: a thin layer over the Python API (cnnkit.api).

    cnnkit train [--config FILE.yaml] [--data ...] [--model NAME] [--epochs N] [key=value ...]
    cnnkit evaluate RUN_DIR [--split test|val] [--json]
    cnnkit predict RUN_DIR IMAGE... [--top-k K] [--json] [--backend auto|torch|onnxruntime|openvino]
    cnnkit predict-volume RUN_DIR VOLUME [--out MASK.nii.gz] [--truth MASK.nii.gz] [--json]
    cnnkit diagnose RUN_DIR [--split test|val] [--bins N] [--plot FILE.png] [--json]
    cnnkit runs [DIR] [--json]
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
--debug shows it) and exit with status 2. Handlers check their arguments and settings before they import
torch, so a mistake is reported in a fraction of a second (benchmarks/cli_startup.py measures it).

Settings are `key=value` words anywhere after the command (`cnnkit train --data d image_size=64 --epochs 3
num_threads=1`), as in ultralytics' `yolo train ... key=value`.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings

from cnnkit.cli import data, embed, inspect, models, run_list, runs, ship, train
from cnnkit.cli import medical
from cnnkit.cli import search
from cnnkit.cli.data import _scenes_defaults  # noqa: F401  (tests compare it with ScenesConfig)
from cnnkit import __version__
from cnnkit.errors import CnnkitError

KEY_VALUE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")

# Command name -> (adds its parser, runs it), in the order `cnnkit --help` lists them.
COMMANDS = {
    "train": (train.add_train, train.run_train),
    "augment": (train.add_augment, train.run_augment),
    "evaluate": (runs.add_evaluate, runs.run_evaluate),
    "predict": (runs.add_predict, runs.run_predict),
    "predict-volume": (medical.add_predict_volume, medical.run_predict_volume),
    "diagnose": (medical.add_diagnose, medical.run_diagnose),
    "runs": (run_list.add_runs, run_list.run_runs),
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
    "search": (search.add_search, search.run_search),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnkit", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="cnnkit: build, train, inspect and ship convolutional neural networks.",
        epilog="start with:  cnnkit train --epochs 3   then   cnnkit evaluate RUN_DIR\n"
               "help on one command:  cnnkit train --help")
    parser.add_argument("--version", action="version", version=f"cnnkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add, _ in COMMANDS.values():
        add(commands)
    return parser


_shown_warnings: set[str] = set()
_python_showwarning = warnings.showwarning


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """cnnkit's own warnings (skipped images ...) once each, as one line of words; others as Python shows them."""
    if not getattr(category, "__module__", "").startswith("cnnkit"):
        _python_showwarning(message, category, filename, lineno, file, line)
        return
    text = str(message)
    if text not in _shown_warnings:
        _shown_warnings.add(text)
        print(f"warning: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = show_warning
    parser = build_parser()
    args = _parse(parser, sys.argv[1:] if argv is None else list(argv))
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
    except KeyboardInterrupt as interrupt:
        # cnnkit.api.train attaches what was saved and the exact resume command once the run directory exists.
        note = getattr(interrupt, "cnnkit_note", None)
        if note is None and args.command == "train":
            note = "interrupted before the first epoch ended: nothing was saved to resume from"
        if note:
            print(f"\n{note}", file=sys.stderr)
        return 130


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse `argv`; `key=value` words after optionals join the command's settings wherever they stand."""
    args, extras = parser.parse_known_args(argv)
    if not extras:
        return args
    command = _subparser(parser, args)
    settings = [word for word in extras if KEY_VALUE.match(word)]
    unknown = [word for word in extras if not KEY_VALUE.match(word)]
    if unknown or not hasattr(args, "overrides"):
        command.error(f"unrecognized arguments: {' '.join(unknown or settings)}")
    args.overrides = list(args.overrides or []) + settings
    return args


def _subparser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost command parser `args` went through (its usage line is the helpful one)."""
    current = parser
    while True:
        actions = [action for action in current._actions if isinstance(action, argparse._SubParsersAction)]
        if not actions or getattr(args, actions[0].dest, None) not in actions[0].choices:
            return current
        current = actions[0].choices[getattr(args, actions[0].dest)]

