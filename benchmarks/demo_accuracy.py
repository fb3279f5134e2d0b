"""The `make demo` run, repeated over seeds: test accuracy and wall time of train + evaluate.

What it measures: for each seed it runs the real command line exactly as `make demo` does, as
subprocesses from the repository root,

    .venv/bin/cnnkit train --name NAME seed=S [--extra key=value ...]
    .venv/bin/cnnkit evaluate runs/NAME --json

and times each subprocess from start to exit (interpreter start, imports, data loading, training,
validation, checkpoints, evaluation; installing the environment is excluded). It reports, per seed,
the test accuracy from `evaluate --json` and the wall seconds (train + evaluate), then mean / std /
min / max over seeds, and pass/fail against the targets: test accuracy >= 93% and wall time <= 300 s,
each required of every seed. It also copies from the run directory's metrics.jsonl the training
seconds proper and the images/s, which show how much of the wall time is start-up and evaluation.

Training output (the progress bar, one line per epoch) passes through to this terminal.

    .venv/bin/python benchmarks/demo_accuracy.py                     # seeds 0 1 2, the defaults
    .venv/bin/python benchmarks/demo_accuracy.py --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/demo_accuracy.py --extra epochs=12 lr=0.3   # try a recipe
    .venv/bin/python benchmarks/demo_accuracy.py --quick             # smoke test: tiny data, 1 epoch
    .venv/bin/python benchmarks/demo_accuracy.py --recipe fast       # recipes/fashion_mnist/fast.yaml

--recipe NAME trains with `--config recipes/fashion_mnist/NAME.yaml`, checks that recipe's targets
(its `# target:` comment line: accuracy and seconds), runs one untimed warm-up first (the recipe with
epochs=1: the disk cache, imports and oneDNN kernels are warm for every timed seed alike) and writes
results as recipe_NAME.json/.md, with the model's GMACs per image beside the seconds.

--guide-epochs N (issue 25 §1) sets the time target from the guide's own loop measured on this box, in this
run: throughput_vs_guide.py's guide variant (SimpleCNN, per-sample PIL transforms, DataLoader with 2
workers, fp32; 200 batches of 64, one warm-up and three timed rounds, the median) gives images/s, and the
target is N epochs of the full 60,000-image training set at that speed, so a slower box gets a longer target.

    .venv/bin/python benchmarks/demo_accuracy.py --recipe fast --guide-epochs 4

--quick trains one epoch on a 2,000/1,000-image slice of Fashion-MNIST (written as IDX files to a
temporary folder and passed as --data), seed 0 only: it checks the script, not the targets.

Writes benchmarks/results/demo_accuracy.json and .md (demo_accuracy-quick.* with --quick).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

NAME = "demo_accuracy"
TARGET_ACCURACY = 0.93
TARGET_SECONDS = 300.0
QUICK_TRAIN_IMAGES, QUICK_TEST_IMAGES = 2000, 1000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run (default: 0 1 2)")
    parser.add_argument("--extra", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="settings passed through to `cnnkit train` (e.g. epochs=12 lr=0.3)")
    parser.add_argument("--out", default="runs", help="parent directory of the run directories (default: runs, as make demo)")
    parser.add_argument("--target-accuracy", type=float, default=TARGET_ACCURACY, help="default: %(default)s")
    parser.add_argument("--target-seconds", type=float, default=TARGET_SECONDS, help="default: %(default)s")
    parser.add_argument("--threads", type=int, default=0,
                        help="OMP_NUM_THREADS for both subprocesses (default: torch's default, one per core)")
    parser.add_argument("--recipe", metavar="NAME", help="a recipe of recipes/fashion_mnist/ (fast, quality, best)")
    parser.add_argument("--guide-epochs", type=float, default=None, metavar="N",
                        help="target seconds = N epochs of the guide's loop, measured first on this box")
    parser.add_argument("--quick", action="store_true", help="smoke test: seed 0, one epoch on a tiny data slice")
    parser.add_argument("--results-dir", default=None, help="where the .json/.md go (default: benchmarks/results)")
    args = parser.parse_args()
    for item in args.extra:
        if "=" not in item:
            parser.error(f"--extra takes key=value items, got {item!r}")
    if args.quick:
        args.seeds = args.seeds[:1]
    args.config = None
    if args.recipe:
        args.config = _common.REPO_ROOT / "recipes" / "fashion_mnist" / f"{args.recipe}.yaml"
        if not args.config.is_file():
            parser.error(f"no recipe {args.config}")
        targets = recipe_targets(args.config)
        if "--target-accuracy" not in sys.argv:
            args.target_accuracy = targets.get("accuracy", args.target_accuracy)
        if "--target-seconds" not in sys.argv:
            args.target_seconds = targets.get("seconds", args.target_seconds)
    return args


def guide_loop_speed(quick: bool) -> dict:
    """Images/s of the guide's training loop on this box (throughput_vs_guide.py's guide variant)."""
    import statistics
    from argparse import Namespace

    import torch

    import throughput_vs_guide as guide
    from cnnkit.data import compute_mean_std, load_fashion_mnist

    steps, rounds = (10, 1) if quick else (200, 3)
    options = Namespace(batch_size=64, guide_workers=2, lr=0.01, seed=0)
    train, _ = load_fashion_mnist()
    subset = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:steps * options.batch_size]
    images, labels = train.images[subset], train.labels[subset]
    (mean,), (std,) = compute_mean_std(images)
    run_epoch = guide.build_guide(options, images, labels, mean, std)
    speeds = []
    for round_index in range(rounds + 1):
        started = time.perf_counter()
        run_epoch(round_index)
        if round_index:  # round 0 warms up
            speeds.append(len(images) / (time.perf_counter() - started))
    speed = statistics.median(speeds)
    print(f"the guide's loop on this box: {speed:.0f} images/s (median of {rounds} rounds of {len(images)} images)",
          flush=True)
    return {"images_per_second": speed, "rounds": speeds, "images_per_round": len(images),
            "epoch_images": len(train), "epoch_seconds": len(train) / speed}


def recipe_targets(path: Path) -> dict[str, float]:
    """A recipe's `# target: accuracy 0.94, seconds 300` comment line, as numbers."""
    for line in path.read_text().splitlines():
        if line.startswith("# target:"):
            pairs = [item.split() for item in line.removeprefix("# target:").split(",")]
            return {key: float(value) for key, value in pairs}
    return {}


def gmacs_per_image(run_dir: Path) -> float | None:
    """The trained model's multiply-accumulates per image, in billions (at its input size)."""
    from cnnkit.engine.checkpoint import read_record
    from cnnkit.inspect import count_macs
    from cnnkit.registry import create_model

    try:
        record = read_record(run_dir / "best.safetensors")
        architecture, preprocessing = record["architecture"], record["preprocessing"]
        model = create_model(architecture["name"], **architecture["args"])
        return count_macs(model, (preprocessing["channels"], *preprocessing["image_size"])) / 1e9
    except Exception:  # noqa: BLE001 - a number for the table, not worth failing the benchmark over
        return None


def cnnkit_executable() -> str:
    """The `cnnkit` entry point of the interpreter's environment (.venv/bin/cnnkit, as make demo uses)."""
    beside = Path(sys.executable).parent / "cnnkit"
    if beside.is_file():
        return str(beside)
    found = shutil.which("cnnkit")
    if found is None:
        sys.exit("cannot find the cnnkit command: run `make setup` first (or pip install -e .)")
    return found


def _write_idx_gz(path: Path, array) -> None:
    """An IDX file (uint8 elements), gzipped: the format of the official Fashion-MNIST files."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb", compresslevel=1) as file:
        file.write(header + array.astype("uint8").tobytes())


def write_tiny_fashion_mnist(folder: Path) -> None:
    """The first few thousand images of each split, as the four official file names (for --quick)."""
    from cnnkit.data import load_fashion_mnist

    train, test = load_fashion_mnist()
    for prefix, dataset, count in (("train", train, QUICK_TRAIN_IMAGES), ("t10k", test, QUICK_TEST_IMAGES)):
        _write_idx_gz(folder / f"{prefix}-images-idx3-ubyte.gz", dataset.images[:count, 0].numpy())
        _write_idx_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", dataset.labels[:count].numpy())


def read_metrics(run_dir: Path) -> dict:
    """Summary of metrics.jsonl: epochs, seconds inside the epochs, images/s, best validation accuracy."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    epochs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not epochs:
        return {}
    speeds = [e["train_images_per_second"] for e in epochs if "train_images_per_second" in e]
    return {
        "epochs": len(epochs),
        "epoch_seconds_total": sum(e.get("epoch_seconds", 0.0) for e in epochs),
        "train_images_per_second_mean": sum(speeds) / len(speeds) if speeds else None,
        "best_val_accuracy": max((e["val_accuracy"] for e in epochs if "val_accuracy" in e), default=None),
        "last_train_accuracy": epochs[-1].get("train_accuracy"),
    }


def run_seed(seed: int, args, cnnkit: str, out: Path, data_override: list[str], env: dict) -> dict:
    run_name = f"bench-demo-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    train_command = [cnnkit, "train", "--name", run_name]
    if args.config:
        train_command += ["--config", str(args.config)]
    if out != (_common.REPO_ROOT / "runs").resolve():
        train_command += ["--out", str(out)]
    train_command += [*data_override, f"seed={seed}", *args.extra]
    run_dir = out / run_name
    evaluate_command = [cnnkit, "evaluate", str(run_dir), "--json"]

    print(f"\n=== seed {seed}: {' '.join(train_command)}", flush=True)
    started = time.perf_counter()
    train_process = subprocess.run(train_command, cwd=_common.REPO_ROOT, env=env)
    train_seconds = time.perf_counter() - started
    if train_process.returncode != 0:
        print(f"seed {seed}: train failed with exit status {train_process.returncode}", flush=True)
        return {"seed": seed, "run_dir": str(run_dir), "error": f"train exit status {train_process.returncode}",
                "train_seconds": train_seconds}

    print(f"=== seed {seed}: {' '.join(evaluate_command)}", flush=True)
    started = time.perf_counter()
    evaluate_process = subprocess.run(evaluate_command, cwd=_common.REPO_ROOT, env=env, capture_output=True, text=True)
    evaluate_seconds = time.perf_counter() - started
    if evaluate_process.returncode != 0:
        print(evaluate_process.stdout + evaluate_process.stderr, flush=True)
        return {"seed": seed, "run_dir": str(run_dir), "error": f"evaluate exit status {evaluate_process.returncode}",
                "train_seconds": train_seconds, "evaluate_seconds": evaluate_seconds}
    evaluation = json.loads(evaluate_process.stdout)
    result = {
        "seed": seed,
        "run_dir": str(run_dir),
        "test_accuracy": evaluation["accuracy"],
        "test_loss": evaluation.get("loss"),
        "test_balanced_accuracy": evaluation.get("balanced_accuracy"),
        "test_count": evaluation.get("count"),
        "train_seconds": train_seconds,
        "evaluate_seconds": evaluate_seconds,
        "wall_seconds": train_seconds + evaluate_seconds,
        "run_metrics": read_metrics(run_dir),
        "gmacs_per_image": gmacs_per_image(run_dir),
        "train_command": train_command,
        "evaluate_command": evaluate_command,
    }
    result["pass_accuracy"] = result["test_accuracy"] >= args.target_accuracy
    result["pass_seconds"] = result["wall_seconds"] <= args.target_seconds
    print(f"seed {seed}: test accuracy {result['test_accuracy']:.4f}, wall {result['wall_seconds']:.1f} s "
          f"(train {train_seconds:.1f} s, evaluate {evaluate_seconds:.1f} s)", flush=True)
    return result


def main() -> None:
    args = parse_args()
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    _common.set_threads(args.threads)  # so the recorded torch_num_threads is what the subprocesses get
    header = _common.run_header(args.quick)
    cnnkit = cnnkit_executable()
    out = Path(args.out).resolve()
    guide = None
    if args.guide_epochs:
        guide = guide_loop_speed(args.quick)
        args.target_seconds = args.guide_epochs * guide["epoch_seconds"]
        print(f"target: {args.guide_epochs:g} guide epochs = {args.target_seconds:.0f} s", flush=True)

    results = []
    with tempfile.TemporaryDirectory(prefix="cnnkit-bench-data-") as temporary:
        data_override = []
        if args.quick:
            write_tiny_fashion_mnist(Path(temporary))
            data_override = ["--data", temporary, "--epochs", "1"]
        if args.recipe and not args.quick:  # one untimed warm-up run of the recipe, one epoch
            warmup = [cnnkit, "train", "--config", str(args.config), "--out", str(out / "warmup"), "epochs=1",
                      "report=false", *(item for item in args.extra if not item.startswith("budget="))]
            print(f"\n=== warm-up (not timed): {' '.join(warmup)}", flush=True)
            subprocess.run(warmup, cwd=_common.REPO_ROOT, env=env)
        for seed in args.seeds:
            results.append(run_seed(seed, args, cnnkit, out, data_override, env))

    good = [r for r in results if "error" not in r]
    accuracy = _common.summarize([r["test_accuracy"] for r in good])
    wall = _common.summarize([r["wall_seconds"] for r in good])
    passed = bool(good) and len(good) == len(results) and all(r["pass_accuracy"] and r["pass_seconds"] for r in good)
    payload = {
        "settings": {"seeds": args.seeds, "extra": args.extra, "recipe": args.recipe,
                     "config": str(args.config) if args.config else None, "out": str(out), "threads": args.threads or None,
                     "quick_data": f"{QUICK_TRAIN_IMAGES} train / {QUICK_TEST_IMAGES} test images, 1 epoch"
                     if args.quick else None},
        "targets": {"test_accuracy_min": args.target_accuracy, "wall_seconds_max": args.target_seconds,
                    "rule": "every seed must meet both", "guide_epochs": args.guide_epochs, "guide_loop": guide},
        "per_seed": results,
        "test_accuracy": accuracy,
        "wall_seconds": wall,
        "passed": passed,
    }

    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["seed"], "error", "", "", "", "", "", r["error"]])
            continue
        metrics = r["run_metrics"]
        rows.append([r["seed"], f"{100 * r['test_accuracy']:.2f}", f"{r['wall_seconds']:.1f}", f"{r['train_seconds']:.1f}",
                     f"{metrics.get('epoch_seconds_total', float('nan')):.1f}", f"{r['evaluate_seconds']:.1f}",
                     f"{r['gmacs_per_image']:.4f}" if r.get("gmacs_per_image") is not None else "",
                     "pass" if r["pass_accuracy"] and r["pass_seconds"] else
                     "FAIL (" + ", ".join(k for k, ok in (("accuracy", r["pass_accuracy"]), ("time", r["pass_seconds"]))
                                          if not ok) + ")"])
    for label, key in (("mean", "mean"), ("std", "std"), ("min", "min"), ("max", "max")):
        if good:
            rows.append([f"**{label}**", f"{100 * accuracy[key]:.2f}", f"{wall[key]:.1f}", "", "", "", "", ""])
    extra = " ".join(args.extra) or "none"
    config = f" --config {args.config.relative_to(_common.REPO_ROOT)}" if args.config else ""
    warm = " One untimed 1-epoch warm-up run of the recipe came first." if args.recipe and not args.quick else ""
    body = (
        f"Per seed: `cnnkit train{config} --name NAME seed=S` + `cnnkit evaluate runs/NAME --json` as subprocesses;{warm} "
        f"extra settings: {extra}. Targets: test accuracy >= {100 * args.target_accuracy:.0f}% and wall <= "
        f"{args.target_seconds:.0f} s for every seed"
        + (f" (= {args.guide_epochs:g} epochs of the guide's loop at its {guide['images_per_second']:.0f} images/s "
           "measured first in this run)" if guide else "") + ".\n\n"
        + _common.markdown_table(["seed", "test acc %", "wall s (train+eval)", "train process s", "inside epochs s",
                                  "evaluate process s", "GMACs/image", "targets"], rows)
        + f"\n\n**Overall: {'PASS' if passed else 'FAIL'}**{_common.QUICK_NOTE if args.quick else ''}\n"
    )
    name, title = NAME, "make demo: accuracy and wall time over seeds"
    if args.recipe:
        name, title = f"recipe_{args.recipe}", f"Fashion-MNIST recipe `{args.recipe}`: test accuracy and wall time over seeds"
    _common.finish(name, title, header, payload, body, args.results_dir)


if __name__ == "__main__":
    main()
