"""Training and inference images/second of the model zoo on this CPU, fp32 vs bf16, at a small fixed input.

What it measures: for each selected model, built as `create_model(name, num_classes=10, in_chans=1,
input_size=28)` (the Fashion-MNIST setting; --input CxHxW changes it), on one fixed random batch
(default 64 images, --batch-size):

  train   model.train(); forward under autocast + ClassificationTask.training_step's loss (cross-entropy,
          plus GoogLeNet's auxiliary losses), backward, torch.optim.SGD(lr 0.01, momentum 0.9) step,
          zero_grad(set_to_none=True): one optimizer step per batch.
  infer   model.eval(); torch.inference_mode(); forward under autocast.

in each precision variant (--precisions):

  fp32     no autocast, contiguous (NCHW) memory format: what a plain PyTorch loop does.
  bf16     torch.autocast("cpu", dtype=bfloat16) + channels_last model and input: cnnkit's CPU default
           (TrainConfig precision=auto, channels_last=True) on CPUs with native bf16 (recorded: where the CPU
           lacks it, cnnkit would train in fp32 and this column shows emulated bf16).
  fp32_cl  fp32 with channels_last (optional): separates the memory-format effect from the bf16 one.

Models: by default one representative per registry family, its smallest member by parameter count
(counted on the meta device, so selecting costs no memory); --family F[,G] keeps only those families;
--models all takes every registered model (of the selected families); --models a,b names them;
--skip a,b drops some (e.g. --skip nasnetalarge, the slowest). Parameters and MACs per image
(cnnkit.inspect.count_macs at batch 1, on the meta device where possible) are reported with each row.

Timing: per model, --rounds rounds (default 3); each round runs every (mode, precision) measurement, in
the listed order in even rounds and reversed in odd rounds, so no variant always runs first (the machine
may be shared: the best of the rounds is kept, as the least disturbed). One measurement = switch the model
to the variant's memory format, a fresh SGD optimizer, --warmup untimed steps (default 2: oneDNN primitive
creation, allocator, momentum buffers), then timed steps until --budget seconds (default 1.5) have passed
and at least --min-steps steps ran, so big models run fewer steps. images/s = steps x batch / seconds.
Failures (a model that cannot be built at this input, an op without bf16 support ...) are recorded in
the table instead of stopping the run; Ctrl-C stops it and writes what was measured.

    .venv/bin/python benchmarks/zoo_throughput.py                       # one model per family (21), roughly 20-30 min on 2 cores
    .venv/bin/python benchmarks/zoo_throughput.py --family resnet_cifar,vgg --models all
    .venv/bin/python benchmarks/zoo_throughput.py --input 3x32x32 --batch-size 128 --precisions fp32,fp32_cl,bf16
    .venv/bin/python benchmarks/zoo_throughput.py --quick               # smoke test: 3 tiny models, 1 round

Writes benchmarks/results/zoo_throughput.json and .md (zoo_throughput-quick.* with --quick).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

import _common
from cnnkit.device import resolve_precision
from cnnkit.inspect import count_macs, parse_input_size
from cnnkit.registry import create_model, get_entry, list_models
from cnnkit.tasks import ClassificationTask

NAME = "zoo_throughput"
NUM_CLASSES = 10
QUICK_MODELS = ["lenet5", "fastnet", "resnet20"]  # three of the smallest, ~1 s each with --quick settings
MODES = ("train", "infer")


@dataclass(frozen=True)
class Precision:
    autocast_dtype: torch.dtype | None
    channels_last: bool
    description: str


PRECISIONS = {
    "fp32": Precision(None, False, "fp32, contiguous (NCHW)"),
    "fp32_cl": Precision(None, True, "fp32, channels_last"),
    "bf16": Precision(resolve_precision("bf16", torch.device("cpu")), True, "bf16 autocast + channels_last"),
}


def split_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=None,
                        help="'all', or comma-separated names (default: the smallest model of each family)")
    parser.add_argument("--family", default=None, help="comma-separated families to keep (default: all families)")
    parser.add_argument("--skip", default="", help="comma-separated model names to leave out")
    parser.add_argument("--input", default="1x28x28", help="CxHxW of one image (default: %(default)s, Fashion-MNIST)")
    parser.add_argument("--batch-size", type=int, default=64, help="default: %(default)s")
    parser.add_argument("--precisions", default="fp32,bf16",
                        help=f"comma-separated, from {', '.join(PRECISIONS)} (default: %(default)s)")
    parser.add_argument("--modes", default="train,infer", help="comma-separated, from train, infer (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per model, best kept (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement (default: %(default)s)")
    parser.add_argument("--budget", type=float, default=1.5,
                        help="seconds of timed steps per measurement (default: %(default)s)")
    parser.add_argument("--min-steps", type=int, default=2, help="timed steps per measurement at least (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's default)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {', '.join(QUICK_MODELS)} (or --family/--models), 1 round, "
                             "1 warm-up step, 0.2 s budget")
    parser.add_argument("--results-dir", default=None, help="where the .json/.md go (default: benchmarks/results)")
    parser.add_argument("--fresh", action="store_true",
                        help="drop the rows of models not measured now (default: keep them when the input, batch, "
                             "precisions and modes are the same, so the table can be filled in over several runs)")
    args = parser.parse_args()
    try:
        args.input_shape = parse_input_size(args.input)
    except Exception as error:  # noqa: BLE001 - cnnkit's ConfigError already says what is expected
        parser.error(str(error))
    args.precision_names = split_list(args.precisions)
    args.mode_names = split_list(args.modes)
    for value, allowed, option in ((args.precision_names, PRECISIONS, "--precisions"), (args.mode_names, MODES, "--modes")):
        unknown = [item for item in value if item not in allowed]
        if unknown or not value:
            parser.error(f"{option}: unknown or empty {unknown or value}; choose from {', '.join(allowed)}")
    if args.quick:
        args.rounds, args.warmup, args.budget, args.min_steps = 1, 1, 0.2, 1
    return args


# ---------------------------------------------------------------- which models
def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def build_meta(name: str, model_args: dict) -> nn.Module:
    """The model on the meta device: shapes without memory or initialisation arithmetic."""
    with torch.device("meta"):
        return create_model(name, **model_args)


def select_models(args, model_args: dict) -> list[str]:
    families = split_list(args.family)
    known = sorted({get_entry(name).family for name in list_models()})
    unknown = [family for family in families if family not in known]
    if unknown:
        raise SystemExit(f"--family: unknown {', '.join(unknown)}; families: {', '.join(known)}")
    in_families = [name for name in list_models() if not families or get_entry(name).family in families]
    if args.models == "all":
        names = in_families
    elif args.models:
        names = split_list(args.models)
        for name in names:
            get_entry(name)  # unknown names fail here, with close matches
    elif args.quick and not families:
        names = QUICK_MODELS
    else:  # the smallest member of each family, by parameter count
        sizes: dict[str, tuple[int, str]] = {}
        for name in in_families:
            try:
                size = parameter_count(build_meta(name, model_args))
            except Exception:  # noqa: BLE001 - a member that cannot be built here is not its family's representative
                continue
            family = get_entry(name).family
            sizes[family] = min(sizes.get(family, (size, name)), (size, name))
        names = [name for _, name in sorted(sizes.values())]
    skip = set(split_list(args.skip))
    return [name for name in names if name not in skip]


# ---------------------------------------------------------------- one measurement
def autocast(precision: Precision):
    if precision.autocast_dtype is None:
        return nullcontext()
    return torch.autocast("cpu", dtype=precision.autocast_dtype)


def run_timed(step, args) -> tuple[int, float, object]:
    """--warmup untimed calls, then timed calls until --budget seconds and --min-steps calls: (steps, seconds, last)."""
    for _ in range(args.warmup):
        step()
    steps, started = 0, time.perf_counter()
    while True:
        last = step()
        steps += 1
        seconds = time.perf_counter() - started
        if seconds >= args.budget and steps >= args.min_steps:
            return steps, seconds, last


def measure(model: nn.Module, task: ClassificationTask, mode: str, precision: Precision, images: torch.Tensor,
            targets: torch.Tensor, args) -> dict:
    memory_format = torch.channels_last if precision.channels_last else torch.contiguous_format
    model.to(memory_format=memory_format)
    images = images.contiguous(memory_format=memory_format)
    gc.collect()
    if mode == "train":
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)  # fresh: buffers in this format

        def step():
            with autocast(precision):
                loss = task.training_step(model, images, targets)["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss.detach()
    else:
        model.eval()

        def step():
            with torch.inference_mode(), autocast(precision):
                return model(images)

    try:
        steps, seconds, last = run_timed(step, args)
    finally:
        model.zero_grad(set_to_none=True)
    result = {"steps": steps, "seconds": seconds, "images_per_second": steps * len(images) / seconds}
    if mode == "train":
        result["last_loss"] = float(last)  # a NaN here would make the timing suspect
    return result


# ---------------------------------------------------------------- one model
def error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"[:300]


def measure_model(name: str, args, model_args: dict, index: int, total: int) -> dict:
    entry = get_entry(name)
    record = {"model": name, "family": entry.family, "source": entry.source, "params": None,
              "macs_per_image": None, "macs_counted_on": None, "error": None, "rounds": [], "best": {}, "errors": {}}
    prefix = f"[{index}/{total}] {name} ({entry.family}, {entry.source})"
    try:
        torch.manual_seed(args.seed)
        model = create_model(name, **model_args)
    except Exception as error:  # noqa: BLE001 - reported in the table
        record["error"] = f"build: {error_text(error)}"
        print(f"{prefix}: FAILED to build: {record['error']}", flush=True)
        return record
    record["params"] = parameter_count(model)
    for device, candidate in (("meta", lambda: build_meta(name, model_args)), ("cpu", lambda: model)):
        try:
            record["macs_per_image"] = count_macs(candidate(), args.input_shape)
            record["macs_counted_on"] = device
            break
        except Exception as error:  # noqa: BLE001 - MACs are extra information; the timing goes on
            record["macs_error"] = error_text(error)
    macs = f"{record['macs_per_image'] / 1e9:.3g}" if record["macs_per_image"] is not None else "?"
    print(f"{prefix}: {record['params'] / 1e6:.2f} M params, {macs} GMACs/img", flush=True)

    task = ClassificationTask(model, [str(k) for k in range(NUM_CLASSES)])
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.randn((args.batch_size, *args.input_shape), generator=generator)  # (B, C, H, W)
    targets = torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=generator)
    variants = [(mode, precision) for mode in args.mode_names for precision in args.precision_names]
    for round_index in range(args.rounds):
        order = variants if round_index % 2 == 0 else variants[::-1]
        measured = {}
        for mode, precision in order:
            key = f"{mode}_{precision}"
            if key in record["errors"]:
                continue  # failed in an earlier round: it fails the same way again
            try:
                measured[key] = measure(model, task, mode, PRECISIONS[precision], images, targets, args)
            except Exception as error:  # noqa: BLE001 - reported in the table
                record["errors"][key] = error_text(error)
                print(f"    {key} FAILED: {record['errors'][key]}", flush=True)
        record["rounds"].append({"round": round_index, "order": [f"{m}_{p}" for m, p in order], **measured})
        print(f"    round {round_index + 1}/{args.rounds}: " + ", ".join(
            f"{key} {value['images_per_second']:.0f}" for key, value in measured.items()) + " img/s", flush=True)
    for mode, precision in variants:
        key = f"{mode}_{precision}"
        speeds = [r[key]["images_per_second"] for r in record["rounds"] if key in r]
        if speeds:
            record["best"][key] = max(speeds)
    for mode in args.mode_names:
        if f"{mode}_fp32" in record["best"] and f"{mode}_bf16" in record["best"]:
            record.setdefault("bf16_speedup", {})[mode] = record["best"][f"{mode}_bf16"] / record["best"][f"{mode}_fp32"]
    del model, task
    gc.collect()
    return record


# ---------------------------------------------------------------- report
def table(records: list[dict], args) -> str:
    keys = [(mode, precision) for mode in args.mode_names for precision in args.precision_names]
    headers = ["model", "family", "source", "params M", "GMACs/img"] + [f"{mode} img/s {precision}" for mode, precision in keys]
    speedup_modes = [mode for mode in args.mode_names if {"fp32", "bf16"} <= set(args.precision_names)]
    if speedup_modes:
        headers.append(f"bf16 speed-up {' / '.join(speedup_modes)}")
    rows = []
    for record in records:
        row = [record["model"], record["family"], record["source"],
               f"{record['params'] / 1e6:.2f}" if record["params"] is not None else "",
               f"{record['macs_per_image'] / 1e9:.3g}" if record["macs_per_image"] is not None else ""]
        for mode, precision in keys:
            key = f"{mode}_{precision}"
            row.append(f"{record['best'][key]:.0f}" if key in record["best"]
                       else "failed" if key in record["errors"] or record["error"] else "")
        if speedup_modes:
            speedups = record.get("bf16_speedup", {})
            row.append(" / ".join(f"x{speedups[mode]:.2f}" if mode in speedups else "-" for mode in speedup_modes))
        rows.append(row)
    return _common.markdown_table(headers, rows)


def same_settings(args) -> bool:
    """Whether the existing results were measured with this run's input, batch, precisions and modes."""
    previous_path = Path(args.results_dir or _common.RESULTS_DIR) / f"{NAME}{'-quick' if args.quick else ''}.json"
    try:
        settings = json.loads(previous_path.read_text())["settings"]
    except (OSError, ValueError, KeyError):
        return False
    return (settings.get("input_shape") == list(args.input_shape) and settings.get("batch_size") == args.batch_size
            and list(settings.get("precisions", {})) == args.precision_names and settings.get("modes") == args.mode_names)


def failures_markdown(records: list[dict]) -> str:
    lines = [f"- {record['model']}: {record['error']}" for record in records if record["error"]]
    lines += [f"- {record['model']} {key}: {text}" for record in records for key, text in record["errors"].items()]
    lines += [f"- {record['model']} MACs not counted: {record['macs_error']}" for record in records
              if record["macs_per_image"] is None and "macs_error" in record]
    return ("\n\nFailures:\n\n" + "\n".join(lines)) if lines else ""


def main() -> None:
    args = parse_args()
    _common.set_threads(args.threads)
    header = _common.run_header(args.quick)
    channels, height, width = args.input_shape
    model_args = {"num_classes": NUM_CLASSES, "in_chans": channels, "input_size": height if height == width else (height, width)}
    names = select_models(args, model_args)
    if not names:
        raise SystemExit("no model selected (check --models, --family and --skip)")
    cnnkit_default = resolve_precision("auto", torch.device("cpu"))
    print(f"{len(names)} models: {', '.join(names)}\ninput {args.input}, batch {args.batch_size}, precisions "
          f"{', '.join(args.precision_names)}, modes {', '.join(args.mode_names)}; {args.rounds} rounds, {args.warmup} "
          f"warm-up steps, {args.budget:g} s budget; torch threads {torch.get_num_threads()}", flush=True)

    records, interrupted, started = [], False, time.perf_counter()
    for index, name in enumerate(names, 1):
        try:
            records.append(measure_model(name, args, model_args, index, len(names)))
        except KeyboardInterrupt:
            interrupted = True
            print(f"interrupted during {name}: writing the {len(records)} models measured so far", flush=True)
            break
    total_seconds = time.perf_counter() - started
    measured_now = len(records)
    records = sorted(_common.merge_previous(NAME, header, records, "model", names, args.results_dir,
                                            args.fresh or not same_settings(args)),
                     key=lambda record: record["params"] if record["params"] is not None else float("inf"))

    payload = {
        "settings": {
            "models": names, "model_args": model_args, "input_shape": list(args.input_shape),
            "batch_size": args.batch_size, "modes": args.mode_names,
            "precisions": {name: {"autocast_dtype": str(PRECISIONS[name].autocast_dtype).replace("torch.", ""),
                                  "channels_last": PRECISIONS[name].channels_last} for name in args.precision_names},
            "cnnkit_cpu_default_autocast": str(cnnkit_default).replace("torch.", "") if cnnkit_default else "none (fp32)",
            "train_step": "ClassificationTask.training_step loss, backward, SGD(lr=0.01, momentum=0.9) step, zero_grad",
            "infer_step": "eval(), torch.inference_mode(), forward",
            "rounds": args.rounds, "warmup_steps": args.warmup, "budget_seconds": args.budget,
            "min_steps": args.min_steps, "seed": args.seed, "threads": torch.get_num_threads(),
        },
        "interrupted": interrupted,
        "total_seconds": total_seconds,
        "results": records,
    }
    default_note = ("cnnkit's CPU default on this machine, which has native bf16" if cnnkit_default == torch.bfloat16 else
                    "this CPU lacks native bf16: cnnkit's default here is fp32, and the bf16 column is emulated")
    body = (
        f"{len(records)} models ({measured_now} measured by the latest run{', INTERRUPTED' if interrupted else ''}), built with num_classes={NUM_CLASSES}, input "
        f"{args.input}, batch {args.batch_size} (one fixed random batch). train = forward + cross-entropy + backward + "
        f"SGD step; infer = eval mode, torch.inference_mode(). "
        + "; ".join(f"{name} = {PRECISIONS[name].description}" for name in args.precision_names)
        + f" ({default_note}). Best of {args.rounds} rounds, variants in alternating order; each measurement "
        f"{args.warmup} warm-up steps then steps for >= {args.budget:g} s; torch threads {torch.get_num_threads()}; "
        f"latest run {total_seconds:.0f} s. MACs: multiply-accumulates of one image's forward pass (count_macs). "
        f"Speed-up = best bf16 img/s / best fp32 img/s.\n\n"
        + table(records, args) + failures_markdown(records)
        + "\n\n" + _common.runs_markdown(records, "model")
    )
    _common.finish(NAME, "Zoo throughput: training and inference images/s per model on the CPU", header, payload, body,
                   args.results_dir)


if __name__ == "__main__":
    main()
