"""`cnnkit train`, `cnnkit augment preview` and `cnnkit lr-find`: commands that take training settings."""

from __future__ import annotations

import argparse
import dataclasses

from cnnkit.errors import CnnkitError
from cnnkit.task_table import DEFAULT_TASK, TASKS

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
    """List every TrainConfig field with its default and its help text (the field's metadata)."""
    from cnnkit.config import TrainConfig

    lines = ["settings (key=value on the command line, or keys of a flat YAML --config file):"]
    for setting in dataclasses.fields(TrainConfig):
        default = setting.default if setting.default is not dataclasses.MISSING else setting.default_factory()
        lines.append(f"  {setting.name}={default!r}".ljust(34) + setting.metadata.get("help", ""))
    return "\n".join(lines)


def add_train(commands) -> None:
    parser = commands.add_parser(
        "train", help="train a model and write a run directory",
        description="Train a model (--task " + ", ".join(TASKS) + "). Every setting has a working default; the resolved settings, metrics per "
                    "epoch (metrics.jsonl) and the best and last checkpoints go to the run directory.",
        epilog=_settings_help() + "\n\n" + EXAMPLES_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE.yaml", help="flat YAML file of settings (overridden by the flags below)")
    parser.add_argument("--task", choices=tuple(TASKS), help="what to learn: " + ", ".join(
        f"{name} ({'default: ' if name == DEFAULT_TASK else ''}{summary})" for name, (_, summary) in TASKS.items()))
    parser.add_argument("--data", help="fashion-mnist, a directory (class subfolders, or train/ and test/), or a CSV")
    parser.add_argument("--model", help="architecture name (see `cnnkit models`) or a YAML network spec "
                        "(see examples/my_net.yaml)")
    parser.add_argument("--epochs", type=int, help="number of epochs")
    parser.add_argument("--method", choices=("simclr", "moco", "mae", "beit"),
                        help="--task pretrain: the self-supervised method (the setting method=)")
    parser.add_argument("--out", metavar="DIR", help="parent directory of run directories (default runs/)")
    parser.add_argument("--name", help="run directory name (default <model>-<data>-<time>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint; "
                        "--epochs N extends it (the LR schedule stretches to the new length)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="any setting below, e.g. lr=0.1")


def run_train(args) -> int:
    from cnnkit.config import parse_key_values

    overrides = parse_key_values(args.overrides)
    for name in ("task", "data", "model", "epochs", "method", "out", "name"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.resume and args.config:
        raise CnnkitError("--resume takes the settings of the run; do not combine it with --config")
    check_settings(args.config, overrides, args.resume)  # before torch is imported: mistakes answer at once
    from cnnkit.api import train

    if args.resume:
        train(resume=args.resume, **overrides)
    else:
        train(args.config, **overrides)
    return 0


def check_settings(config_file: str | None, overrides: dict, resume: str | None = None):
    """Resolve and validate the settings (and that the data and a resumed run exist) without importing torch.

    Returns:
        The TrainConfig the run would use.
    """
    from pathlib import Path

    from cnnkit.config import as_config
    from cnnkit.errors import CheckpointError, DatasetNotFoundError

    if resume is not None:
        if not (Path(resume) / "last.safetensors").is_file():
            raise CheckpointError(f"cannot resume from {resume}: no last.safetensors there")
        return as_config(Path(resume) / "config.yaml", overrides)
    config = as_config(config_file, overrides)
    data = Path(config.data).expanduser()
    if any(separator in config.data for separator in ("/", "\\")) and not data.exists():
        raise DatasetNotFoundError(f"dataset {config.data!r}: no such file or folder.\n"
                                   "give fashion-mnist, a folder of class folders (or train/ and test/), or a .csv")
    return config


def add_augment(commands) -> None:
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
    from cnnkit.config import parse_key_values

    overrides = parse_key_values(args.overrides)
    if args.data:
        overrides["data"] = args.data
    if args.count < 1:
        raise CnnkitError(f"--count must be 1 or more, got {args.count}")
    config = check_settings(args.config, overrides)
    from cnnkit.tasks.classification.preview import save_preview

    path = save_preview(config, args.out, count=args.count)
    print(f"wrote {path}")
    return 0


def add_lr_find(commands) -> None:
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


def run_lr_find(args) -> int:
    from cnnkit.config import parse_key_values

    overrides = parse_key_values(args.overrides)
    for name in ("data", "model"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    check_settings(args.config, overrides)
    from cnnkit.api import lr_find
    from cnnkit.engine.lr_finder import plot_lr_find

    result = lr_find(args.config, start_lr=args.start_lr, end_lr=args.end_lr, num_steps=args.steps, **overrides)
    print(result.summary())
    print(f"plot: {plot_lr_find(result, args.out)}")
    return 0
