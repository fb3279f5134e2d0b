"""What each class-imbalance remedy does on an imbalanced Fashion-MNIST: balanced accuracy, mean over seeds.

The data: Fashion-MNIST's training set with 5 of its 10 classes (drawn with --data-seed, fixed) cut
to 5% of their images (300 of 6000, drawn with the same seed): 31 500 training images, a 20:1
imbalance. The test set is the official one, untouched (1000 images per class, balanced), so
balanced accuracy and accuracy are nearly the same number there; both are reported, and the mean
recall of the rare and of the common classes. The subset is written as the four official IDX .gz
files to a temporary folder and passed as `data=FOLDER`, the path every user's copy takes.

The remedies, each trained with `cnnkit.train` on the default recipe (fastnet, SGD one-cycle, label
smoothing 0.1, flips and translation) for the same short --epochs, once per seed:

    ce           plain cross-entropy (the baseline)
    inverse      class_weights=inverse    (loss weights 1 / class count, mean 1)
    effective    class_weights=effective  (Cui et al. 2019, beta 0.999)
    oversample   sampler=oversample       (class-balanced draws with replacement, same epoch length)
    focal        loss=focal               (Lin et al. 2017, gamma 2)

No validation split (val_fraction=0): it would be imbalanced too and would pick epochs for the
common classes; the last epoch's weights are evaluated, once, on the test split.

    .venv/bin/python benchmarks/imbalance.py                    # 3 seeds x 5 remedies x 5 epochs
    .venv/bin/python benchmarks/imbalance.py --epochs 8 --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/imbalance.py --remedies ce oversample
    .venv/bin/python benchmarks/imbalance.py --quick            # smoke test: 1 seed, 1 epoch, a tenth of the data

Writes benchmarks/results/imbalance.json and .md (imbalance-quick.* with --quick).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import time
from pathlib import Path

import _common
from demo_accuracy import _write_idx_gz

NAME = "imbalance"
REMEDIES = {
    "ce": {},
    "inverse": {"class_weights": "inverse"},
    "effective": {"class_weights": "effective"},
    "oversample": {"sampler": "oversample"},
    "focal": {"loss": "focal"},
}
RARE_CLASSES, KEPT_FRACTION = 5, 0.05


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run (default 5)")
    parser.add_argument("--remedies", nargs="+", choices=list(REMEDIES), default=list(REMEDIES))
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the rare classes and their kept images")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: one per core)")
    parser.add_argument("--quick", action="store_true", help="smoke test: seed 0, 1 epoch, a tenth of the data")
    parser.add_argument("--results-dir", default=None, help="where the .json/.md go (default benchmarks/results)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs = args.seeds[:1], 1
    return args


def write_imbalanced_fashion_mnist(folder: Path, data_seed: int, quick: bool) -> dict:
    """The imbalanced training set and the official test set as IDX files in `folder`; returns what was cut."""
    import torch

    from cnnkit.data import FASHION_MNIST_CLASSES, load_fashion_mnist

    train, test = load_fashion_mnist()
    generator = torch.Generator().manual_seed(data_seed)
    rare = sorted(torch.randperm(10, generator=generator)[:RARE_CLASSES].tolist())
    keep = []
    for label in range(10):
        indices = torch.nonzero(train.labels == label).flatten()
        if label in rare:
            order = torch.randperm(len(indices), generator=generator)
            indices = indices[order[: round(KEPT_FRACTION * len(indices))]]
        keep.append(indices)
    keep = torch.cat(keep).sort().values
    if quick:  # a tenth of everything, same proportions
        keep = keep[torch.randperm(len(keep), generator=generator)[: len(keep) // 10]].sort().values
    test_keep = torch.arange(len(test))[: 2000 if quick else None]
    _write_idx_gz(folder / "train-images-idx3-ubyte.gz", train.images[keep, 0].numpy())
    _write_idx_gz(folder / "train-labels-idx1-ubyte.gz", train.labels[keep].numpy())
    _write_idx_gz(folder / "t10k-images-idx3-ubyte.gz", test.images[test_keep, 0].numpy())
    _write_idx_gz(folder / "t10k-labels-idx1-ubyte.gz", test.labels[test_keep].numpy())
    counts = torch.bincount(train.labels[keep], minlength=10).tolist()
    return {"rare_classes": [FASHION_MNIST_CLASSES[label] for label in rare], "rare_labels": rare,
            "train_counts": dict(zip(FASHION_MNIST_CLASSES, counts)), "test_images": len(test_keep)}


def run_one(data: Path, out: Path, remedy: str, seed: int, args) -> dict:
    """Train one remedy with one seed, evaluate its last weights on the test split."""
    import cnnkit

    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the per-epoch lines of 15+ runs would bury the table
        run = cnnkit.train(data=str(data), epochs=args.epochs, seed=seed, val_fraction=0.0, monitor="train_loss",
                           out=str(out), name=f"{remedy}-{seed}", report=False, progress=False,
                           num_threads=args.threads, **REMEDIES[remedy])
    train_seconds = time.perf_counter() - started
    result = cnnkit.load(run.run_dir, checkpoint="last").evaluate("test")
    recalls = [values["recall"] for values in result["per_class"].values()]
    return {"remedy": remedy, "seed": seed, "balanced_accuracy": result["balanced_accuracy"],
            "accuracy": result["accuracy"], "macro_f1": result["macro_f1"], "recalls": recalls,
            "train_seconds": train_seconds}


def main() -> None:
    args = parse_args()
    _common.set_threads(args.threads)
    header = _common.run_header(args.quick)
    runs = []
    with tempfile.TemporaryDirectory(prefix="cnnkit-imbalance-") as temporary:
        data = Path(temporary) / "fashion-mnist-imbalanced"
        data.mkdir()
        dataset = write_imbalanced_fashion_mnist(data, args.data_seed, args.quick)
        print(f"rare classes (cut to {KEPT_FRACTION:.0%}): {', '.join(dataset['rare_classes'])}; "
              f"training images per class: {dataset['train_counts']}", flush=True)
        for seed in args.seeds:  # seeds outermost: an interrupted run still has every remedy for some seeds
            for remedy in args.remedies:
                runs.append(run_one(data, Path(temporary) / "runs", remedy, seed, args))
                last = runs[-1]
                print(f"{remedy:10s} seed {seed}: balanced accuracy {last['balanced_accuracy']:.4f}, "
                      f"accuracy {last['accuracy']:.4f} ({last['train_seconds']:.0f} s)", flush=True)
    rare = dataset["rare_labels"]
    rows, summary = [], {}
    for remedy in args.remedies:
        mine = [run for run in runs if run["remedy"] == remedy]
        stats = {
            "balanced_accuracy": _common.summarize([run["balanced_accuracy"] for run in mine]),
            "accuracy": _common.summarize([run["accuracy"] for run in mine]),
            "rare_recall": _common.summarize([sum(run["recalls"][c] for c in rare) / len(rare) for run in mine]),
            "common_recall": _common.summarize([sum(r for c, r in enumerate(run["recalls"]) if c not in rare)
                                                / (10 - len(rare)) for run in mine]),
            "train_seconds": _common.summarize([run["train_seconds"] for run in mine]),
        }
        summary[remedy] = stats
        cell = lambda name: f"{stats[name]['mean']:.4f} +- {stats[name]['std']:.4f}"  # noqa: E731
        delta = stats["balanced_accuracy"]["mean"] - summary.get("ce", stats)["balanced_accuracy"]["mean"]
        rows.append([f"`{remedy}` {' '.join(f'{k}={v}' for k, v in REMEDIES[remedy].items()) or '(baseline)'}",
                     cell("balanced_accuracy"), f"{delta:+.4f}" if "ce" in summary else "n/a", cell("accuracy"),
                     cell("rare_recall"), cell("common_recall"), f"{stats['train_seconds']['mean']:.0f}"])
    body = (
        f"Fashion-MNIST with {RARE_CLASSES} classes cut to {KEPT_FRACTION:.0%} of their training images "
        f"(data seed {args.data_seed}): rare classes {', '.join(dataset['rare_classes'])}; "
        f"{sum(dataset['train_counts'].values())} training images, {dataset['test_images']} test images (untouched, "
        f"balanced). fastnet, default recipe, {args.epochs} epochs, no validation split, last weights evaluated on the "
        f"test split once. Mean +- sample std over seeds {args.seeds}.\n\n"
        + _common.markdown_table(["remedy", "balanced accuracy", "vs ce", "accuracy", "rare-class recall",
                                  "common-class recall", "train s"], rows) + "\n"
        + (_common.QUICK_NOTE.strip() + "\n" if args.quick else "")
    )
    payload = {"settings": {"epochs": args.epochs, "seeds": args.seeds, "data_seed": args.data_seed,
                            "remedies": {name: REMEDIES[name] for name in args.remedies}},
               "dataset": dataset, "summary": summary, "runs": runs}
    _common.finish(NAME, "Class-imbalance remedies on imbalanced Fashion-MNIST", header, payload, body,
                   args.results_dir)


if __name__ == "__main__":
    main()
