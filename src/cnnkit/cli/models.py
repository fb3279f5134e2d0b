"""`cnnkit models` and `cnnkit models summary`: the registered architectures, and one of them layer by layer."""

from __future__ import annotations

import argparse
import warnings
import json
import sys
import textwrap

from cnnkit.errors import CnnkitError


def add_models(commands) -> None:
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
        "summary", prog="cnnkit models summary", help="per-layer table of one model: output shape, parameters, MACs, receptive field",
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


# Square sides tried, in order, for models that cannot take the default 28x28 (detectors need 32 or 64,
# the plain U-Net a multiple of 16).
FALLBACK_SIDES = (32, 64, 128, 256)


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
        # Without --input, a model that cannot take 28x28 (detectors, U-Net) is counted at the first size that fits.
        sizes = [input_size] if args.input else [input_size] + [(input_size[0], side, side) for side in FALLBACK_SIDES]
        for size in sizes:
            try:
                with warnings.catch_warnings():  # builders' notes (torchvision's trainable layers ...) are noise here
                    warnings.simplefilter("ignore")
                    row["parameters"], macs = model_cost(name, size, num_classes=10, macs=with_macs)
                row["input"] = list(size)
                break
            except ModelError as error:  # one model that cannot take this input must not hide the others
                row["parameters"], macs, last_error = None, None, error
        if row["parameters"] is None:
            failures.append(f"{name}: {last_error}")
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
            if row["input"] != list(input_size):
                description = textwrap.shorten(f"(at {'x'.join(map(str, row['input']))}) {row['description']}", 70)
            print(f"{row['name']:{name_width}} {row['family']:{family_width}} {parameters}{macs}  {row['source']:12} "
                  f"{description}")
        if with_macs:
            print(f"GMACs: multiply-accumulates per {'x'.join(map(str, input_size))} image (1 MAC = 2 FLOPs; "
                  "models marked 'at CxHxW' are counted at that size)")
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
