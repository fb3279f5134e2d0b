"""Transfer learning on real data: pretrain on Fashion-MNIST classes 0-4, learn classes 5-9 from 50 images each.

What it measures: test accuracy on classes 5-9 (the 5,000 official test images of those classes) after
training on only 50 labelled images per class (20% of them held out for validation), three ways:

  scratch        the model from random initialisation
  linear         feature extraction: the backbone pretrained on classes 0-4 (T-shirt, Trouser, Pullover,
                 Dress, Coat) is frozen; a new 5-class head reads the last three resolution levels'
                 features, each average-pooled to 2x2 (head_levels=3, head_grid=2: cnnkit.models.multilevel),
                 trained as a linear probe (L-BFGS logistic regression, L2 picked on the validation images)
                 and nothing else (finetune=linear, head_init=probe, epochs=0)
  linear_last    the same with the model's own head: the last stage's global-average-pooled features
  finetune       every layer trains from the pretrained weights, the backbone at 0.1x the head's LR
                 (finetune=full, backbone_lr_ratio=0.1), with the 3-level head fitted as a linear probe
                 first (head_init=probe: LP-FT, Kumar et al. 2022) and BatchNorm statistics kept as pretrained
                 (freeze_bn)
  finetune_plain the same with the model's own head from a random start (the previous recipe)
  gradual        gradual unfreezing: the head first, one more backbone block every 5 epochs (finetune=gradual)

Per seed: one pretraining run (all ~30,000 training images of classes 0-4), then the target runs with the
same seed, settings, data and epochs (the linear modes: no SGD epochs, the probe is their training). Everything goes through cnnkit's Python API (`cnnkit.train`,
`cnnkit.load(...).evaluate("test")`); the data are image folders written from the IDX files. Transfer runs
normalise inputs with the pretrained run's mean/std (cnnkit does so for run directories); scratch with
its own training images'.
Reported: accuracy per seed and mode, mean and std over seeds. Target: linear and finetune beat scratch.
Nothing is tuned on the test images: the probe's L2 on each run's validation split; the design choices
(probe, pretraining without label smoothing) on other Fashion-MNIST *training* images of classes 5-9.

    .venv/bin/python benchmarks/transfer_learning.py               # 3 seeds
    .venv/bin/python benchmarks/transfer_learning.py --quick       # smoke test: 1 seed, tiny epochs

Writes benchmarks/results/transfer_learning.json and .md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

import cnnkit  # noqa: E402
from cnnkit.data import load_fashion_mnist  # noqa: E402

NAME = "transfer_learning"
SOURCE_CLASSES, TARGET_CLASSES = range(0, 5), range(5, 10)
# Pretraining without label smoothing: smoothing pulls each class's penultimate features together and
# discards what the source labels do not need, which frozen features then lack (Kornblith et al. 2021,
# "Why Do Better Loss Functions Lead to Less Transferable Features?"). Measured on seed 0 with an L-BFGS
# probe on 1,000 held-out *training* images of classes 5-9: 88.2% after pretraining with smoothing 0.1,
# 89.8% without.
PRETRAIN = {"label_smoothing": 0.0}
# Per-mode settings beyond the shared ones (same data, epochs and LR for all unless said here).
MODES = {
    "scratch": {},
    # Which features the head reads, measured with a linear probe on 40 images per class 5-9, accuracy on
    # 1,000 other *training* images per class (seeds 0 / 1): the last stage's global average (the model's own
    # head) 87.4 / 86.9%; all stages' global averages 90.7 / 89.6%; the last stage at 2x2 91.5 / 90.5%;
    # the last two stages at 2x2 92.6 / 92.7%; the last three at 2x2 (chosen) 93.4 / 93.3%; the stem and all
    # stages at 2x2 93.4 / 93.6%.
    # epochs=0: the probe is the head's training. 40 SGD epochs after it (the previous protocol, LR 0.05) lost
    # what the probe found (seed 0, accuracy on the held-out training images above): 93.0% -> 88.2% with 3 levels;
    # at LR 0.005, 91.0%; on test, 86.6% for the last stage where its probe had 87.4% on held-out images.
    "linear": {"finetune": "linear", "head_init": "probe", "head_levels": 3, "head_grid": 2, "epochs": 0},
    "linear_last": {"finetune": "linear", "head_init": "probe", "epochs": 0},
    # Fine-tuning from the 3-level head fitted as a probe first (LP-FT, Kumar et al. 2022), BatchNorm statistics
    # kept as pretrained (freeze_bn). Chosen on the same held-out training images (seeds 0 / 1 / 2, 40 epochs,
    # LR 0.05): the model's own head, random start (the previous `finetune`, kept below as finetune_plain)
    # 91.2 / 90.2 / 89.1%, with freeze_bn 91.4 / 91.9 / 92.3%; 3-level head, probe start 92.3 / 92.3 / 89.3%,
    # with freeze_bn 92.7 / 91.8 / 93.5% (chosen). Seed 0 / 1 only: own head, probe start 90.6 / 92.3%; 3-level
    # head, random start 92.6 / 89.3%; 3-level LP-FT at LR 0.01 89.3 / 91.8%, backbone_lr_ratio 0.03 91.5 / 91.2%.
    # The probe alone (the linear mode) had 93.0 / 93.3 / 93.9% there: 200 images do not improve its features.
    "finetune": {"finetune": "full", "backbone_lr_ratio": 0.1, "head_init": "probe", "head_levels": 3,
                 "head_grid": 2, "freeze_bn": True},
    "finetune_plain": {"finetune": "full", "backbone_lr_ratio": 0.1},
    "gradual": {"finetune": "gradual", "unfreeze_every": 5, "backbone_lr_ratio": 0.1},
}
LABELS = {"scratch": "scratch %", "linear": "linear (3 levels) %", "linear_last": "linear (last stage) %",
          "finetune": "finetune (3 levels, LP-FT, frozen BN) %", "finetune_plain": "finetune (own head) %", "gradual": "gradual %"}
VERDICT_MODES = ("linear", "finetune")  # the bar: feature extraction and fine-tuning beat scratch


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--per-class", type=int, default=50, help="labelled target images per class")
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--target-epochs", type=int, default=40)
    parser.add_argument("--target-lr", type=float, default=0.05, help="peak LR of the target runs (batch 32)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: one per core); 1 on a shared machine")
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 pretraining epoch, 3 target epochs")
    parser.add_argument("--results-dir", default=None)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.pretrain_epochs, args.target_epochs = [0], 1, 3
    return args


def write_folders(root: Path, per_class: int, seed: int) -> tuple[Path, Path]:
    """source/ (classes 0-4: all train and test images) and target/ (classes 5-9: per_class train, all test)."""
    import torch

    train, test = load_fashion_mnist()
    generator = torch.Generator().manual_seed(seed)
    source, target = root / "source", root / "target"
    for dataset, split in ((train, "train"), (test, "test")):
        for label in range(10):
            indices = (dataset.labels == label).nonzero().flatten()
            is_target = label in TARGET_CLASSES
            if is_target and split == "train":  # the few labelled images: a seeded choice
                indices = indices[torch.randperm(len(indices), generator=generator)[:per_class]]
            name = dataset.classes[label].replace("/", "-")
            folder = (target if is_target else source) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in indices.tolist():
                Image.fromarray(dataset.images[index, 0].numpy()).save(folder / f"{index}.png")
    return source, target


def main() -> None:
    args = parse_args()
    _common.set_threads(args.threads)
    header = _common.run_header(args.quick)
    results = []
    with tempfile.TemporaryDirectory(prefix="cnnkit-transfer-") as workdir:
        for seed in args.seeds:
            started = time.perf_counter()
            source, target = write_folders(Path(workdir) / f"seed{seed}", args.per_class, seed)
            print(f"seed {seed}: image folders written ({time.perf_counter() - started:.0f} s)", flush=True)
            common = {"model": args.model, "seed": seed, "out": str(Path(workdir) / "runs"), "progress": False,
                      "report": False}  # report.html: not needed here
            pretrain = cnnkit.train({**common, "data": str(source), "epochs": args.pretrain_epochs,
                                     "name": f"pretrain-s{seed}", **PRETRAIN})
            row = {"seed": seed, "pretrain_val_accuracy": pretrain.best.get("val_accuracy")}
            for mode, settings in MODES.items():
                extra = {"pretrained": str(pretrain.run_dir)} if "finetune" in settings else {}
                run = cnnkit.train({**common, "data": str(target), "epochs": args.target_epochs, "batch_size": 32,
                                    "lr": args.target_lr, "val_fraction": 0.2, "name": f"{mode}-s{seed}", **extra,
                                    **settings})
                row[mode] = cnnkit.load(run.run_dir).evaluate("test")["accuracy"]
                print(f"seed {seed}: {mode} test accuracy {row[mode]:.4f}", flush=True)
            row["seconds"] = time.perf_counter() - started
            results.append(row)

    summary = {mode: _common.summarize([row[mode] for row in results]) for mode in MODES}
    passed = all(summary[mode]["mean"] > summary["scratch"]["mean"] for mode in VERDICT_MODES)
    beats_scratch = {mode: summary[mode]["mean"] > summary["scratch"]["mean"] for mode in MODES if mode != "scratch"}
    rows = [[row["seed"], *(f"{100 * row[mode]:.2f}" for mode in MODES), f"{row['seconds']:.0f}"] for row in results]
    rows.append(["**mean**", *(f"{100 * summary[m]['mean']:.2f}" for m in MODES), ""])
    rows.append(["**std**", *(f"{100 * summary[m]['std']:.2f}" for m in MODES), ""])
    body = (f"{args.model}; pretrained on Fashion-MNIST classes 0-4 ({args.pretrain_epochs} epochs, all their "
            f"training images, label smoothing {PRETRAIN['label_smoothing']}); target: classes 5-9 from "
            f"{args.per_class} images per class (80% train / 20% val), {args.target_epochs} epochs (the linear modes: "
            f"the probe only), batch 32, "
            f"peak LR {args.target_lr}; test: the 5,000 official test images of classes 5-9.\n\n"
            + _common.markdown_table(["seed", *(LABELS[mode] for mode in MODES), "seconds"], rows)
            + "\n\nBeats scratch (mean): " + ", ".join(f"{m} {'yes' if v else 'no'}" for m, v in beats_scratch.items())
            + f"\n\n**Feature extraction (linear) and fine-tuning both beat scratch (mean over seeds): "
            f"{'PASS' if passed else 'FAIL'}**"
            + (_common.QUICK_NOTE if args.quick else "") + "\n")
    payload = {"settings": vars(args), "pretrain": PRETRAIN, "modes": MODES, "per_seed": results, "summary": summary,
               "beats_scratch": beats_scratch, "passed": passed}
    _common.finish(NAME, "Transfer learning: Fashion-MNIST classes 0-4 -> 5-9 from 50 images per class", header,
                   payload, body, args.results_dir)


if __name__ == "__main__":
    main()
