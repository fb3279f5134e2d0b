"""Self-supervised pretraining on Fashion-MNIST (issue 20): what it gives on a CPU, and what it saves in labels.

Parts (each a separate invocation is fine: rows are merged into the result file by experiment name):

    baselines  kNN (k=200, cosine, temperature 0.1) on raw pixels; a randomly initialised fastnet's kNN and
               linear probe (L-BFGS logistic regression on its frozen features, L2 picked on the val split)
    simclr     SimCLR (or --method moco) pretraining of fastnet on the 54,000 training images (labels unused),
               stopped by a time budget (--minutes, the Trainer's budget=); then kNN and linear probe on the test
               split (cnnkit.load(run).evaluate)
    labels     1% of the labels: --label-images stratified training images (3 seeds), the same fastnet trained
               from scratch vs from the SSL run (LP-FT: probe head first, then all layers) vs the SSL run's
               linear probe alone; test accuracy on the 10,000 test images
    mae        MAE pretraining of vit_mini (budget --mae-minutes), then the same 1%-label comparison for the ViT:
               from scratch vs from MAE, the same fine-tuning recipe and epochs (--vit-seeds)
    beit       the same with cnnkit's BEiT (masked patches predict HOG features: MaskFeat's targets, not BEiT's
               dVAE tokens); with mae, one scratch row serves both

    flock /tmp/cnnkit-heavy.lock nice -n 5 .venv/bin/python benchmarks/ssl_pretrain.py --parts baselines simclr labels mae
    .venv/bin/python benchmarks/ssl_pretrain.py --quick        # smoke test: tiny budgets, 1 seed

(Not benchmarks/ssl.py: the script folder comes first on sys.path, and a file named ssl.py hides Python's ssl
module from torch.)

Writes benchmarks/results/ssl.json and .md (ssl-quick.* with --quick).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import _common

NAME = "ssl"
ORDER = ["knn-raw-pixels", "random-fastnet", "simclr", "moco", "labels-scratch", "labels-ssl-probe",
         "labels-ssl-finetune", "mae", "beit", "labels-vit-scratch", "labels-vit-mae-finetune",
         "labels-vit-beit-finetune"]
GOALS = {"linear probe >= 0.90 (best of SimCLR/MoCo)": 0.90, "1% labels: SSL fine-tune - scratch >= +5 points": 0.05,
         "MAE (and BEiT) fine-tune - ViT scratch >= +2 points": 0.02}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=["baselines", "simclr", "labels", "mae", "beit"],
                        default=["baselines", "simclr", "labels", "mae", "beit"])
    parser.add_argument("--method", choices=["simclr", "moco"], default="simclr")
    parser.add_argument("--minutes", type=float, default=11.0, help="SimCLR/MoCo pretraining budget (default 11)")
    parser.add_argument("--mae-minutes", type=float, default=3.5,
                        help="MAE / BEiT pretraining budget, each (default 3.5)")
    parser.add_argument("--label-images", type=int, default=600, help="labelled images of the 1%% experiment")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--vit-seeds", type=int, nargs="+", default=[0], help="seeds of the ViT comparison")
    parser.add_argument("--finetune-epochs", type=int, default=30)
    parser.add_argument("--vit-pool", choices=["token", "avg"], default="token",
                        help="mae/beit: vit_mini's pooling in pretraining and in every ViT row (avg: the mean of the "
                        "patch tokens, as BEiT and MAE fine-tune); rows of avg are named ...-avg")
    parser.add_argument("--beit-masking", choices=["random", "block"], default="random",
                        help="beit: uniform or BEiT's blockwise masking; rows of block are named ...-block")
    parser.add_argument("--reuse-mae", action="store_true", help="mae/beit: fine-tune from the existing MAE/BEiT "
                        "run in --out (its row in the result file stays)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="/tmp/cnnkit-ssl-runs", help="parent of the run directories")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1-minute budgets, 1 seed, few epochs")
    return parser.parse_args()


def train(args, **settings):  # precision auto: bf16 where the CPU has it natively (the Zen 4 rows), else fp32
    import cnnkit

    base = dict(num_threads=args.threads, out=args.out, progress=False, report=False, precision="auto",
                channels_last=True)
    return cnnkit.train({**base, **settings})


def metrics_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def baselines(args) -> list[dict]:
    import torch

    from cnnkit.config import TrainConfig
    from cnnkit.data import compute_mean_std, load_dataset
    from cnnkit.data.preprocess import Preprocessing
    from cnnkit.metrics.knn import knn_accuracy
    from cnnkit.registry import create_model
    from cnnkit.tasks.pretrain import Encoder

    splits = load_dataset("fashion-mnist")
    train, test = splits.train, splits.test
    if args.quick:
        train, test = train.subset(range(6000)), test.subset(range(1000))
    started = time.perf_counter()
    mean, std = compute_mean_std(train.images)
    pixels = lambda images: ((images.float() / 255 - mean[0]) / std[0]).flatten(1)  # noqa: E731
    raw = knn_accuracy(pixels(test.images), test.labels, pixels(train.images), train.labels, 10)
    rows = [{"experiment": "knn-raw-pixels", "knn_accuracy": raw, "seconds": time.perf_counter() - started,
             "note": f"{len(train)} training images as the bank, {len(test)} test queries"}]
    started = time.perf_counter()
    torch.manual_seed(0)
    model = create_model("simclr", backbone="fastnet", in_chans=1, input_size=[28, 28]).eval()
    config = TrainConfig(task="pretrain", data="fashion-mnist", batch_size=512, num_threads=args.threads)
    record = {"classes": list(splits.classes), "architecture": {"name": "simclr"}, "config": config.to_dict(),
              "preprocessing": Preprocessing(1, (28, 28), tuple(mean), tuple(std)).to_dict()}
    result = Encoder(model, record, None, torch.device("cpu")).evaluate("test")
    rows.append({"experiment": "random-fastnet", "knn_accuracy": result["knn_accuracy"],
                 "linear_probe_accuracy": result["linear_probe_accuracy"], "seconds": time.perf_counter() - started,
                 "note": "fastnet at its initialisation (seed 0), BatchNorm in eval mode; probe on 54,000 train "
                         "features, L2 picked on 6,000 val"})
    return rows


def pretrain(args) -> list[dict]:
    import cnnkit

    minutes = 0.3 if args.quick else args.minutes
    settings = dict(task="pretrain", data="fashion-mnist", method=args.method, model="fastnet", epochs=100,
                    budget=f"{minutes:g}m", batch_size=512, val_every=2, name=args.method, seed=0)
    started = time.perf_counter()
    run_dir = Path(train(args, **settings).run_dir)  # not out/METHOD: an earlier run there gets a new name
    seconds = time.perf_counter() - started
    history = metrics_of(run_dir)
    evaluated = time.perf_counter()
    result = cnnkit.load(run_dir, device="cpu").evaluate("test")
    return [{"experiment": args.method, "run_dir": str(run_dir), "settings": settings,
             "epochs": history[-1]["epoch"], "train_seconds": seconds, "evaluate_seconds": time.perf_counter() - evaluated,
             "knn_accuracy": result["knn_accuracy"], "linear_probe_accuracy": result["linear_probe_accuracy"],
             "probe_l2": result["probe_l2"],
             "best_val_knn_accuracy": max((line.get("val_knn_accuracy") or 0.0) for line in history),
             "curve": [(line["epoch"], line.get("val_knn_accuracy"), line["train_loss"]) for line in history]}]


def label_folders(args) -> dict[int, Path]:
    """--label-images stratified training images per seed as train/<class>/ PNGs beside the full test split."""
    import torch
    from PIL import Image

    from cnnkit.data import load_dataset

    splits = load_dataset("fashion-mnist")
    root = Path(args.out) / "labels"
    test_dir = root / "test"
    count_test = 500 if args.quick else len(splits.test)
    if not (test_dir / "done").is_file():
        for index in range(count_test):
            label = int(splits.test.labels[index])
            folder = test_dir / splits.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(splits.test.images[index, 0].numpy(), mode="L").save(folder / f"{index:05d}.png")
        (test_dir / "done").write_text("")
    folders = {}
    per_class = args.label_images // len(splits.classes)
    for seed in args.seeds:
        folder = root / f"seed{seed}"
        if not (folder / "train" / "done").is_file():
            generator = torch.Generator().manual_seed(seed)
            for label, name in enumerate(splits.classes):
                members = (splits.train.labels == label).nonzero().flatten()
                chosen = members[torch.randperm(len(members), generator=generator)[:per_class]]
                (folder / "train" / name).mkdir(parents=True, exist_ok=True)
                for index in chosen.tolist():
                    Image.fromarray(splits.train.images[index, 0].numpy(), mode="L").save(
                        folder / "train" / name / f"{index:05d}.png")
            (folder / "train" / "done").write_text("")
            if not (folder / "test").exists():
                (folder / "test").symlink_to(test_dir)
        folders[seed] = folder
    return folders


def test_accuracy(run_dir: Path) -> float:
    import cnnkit

    return float(cnnkit.load(run_dir, device="cpu").evaluate("test")["accuracy"])


def label_runs(args, model: str, pretrained: Path | None, rows_named: dict[str, dict], seeds: list[int],
               recipe: dict) -> list[dict]:
    """Scratch, (probe only,) fine-tune: test accuracy per seed."""
    folders = label_folders(args)
    epochs = 3 if args.quick else args.finetune_epochs
    results: dict[str, list[float]] = {name: [] for name in rows_named}
    seconds: dict[str, list[float]] = {name: [] for name in rows_named}
    for seed in seeds:
        for name, extra in rows_named.items():
            if extra.get("pretrained") is True and pretrained is None:
                continue
            settings = dict(data=str(folders[seed]), model=model, epochs=epochs, batch_size=64, seed=seed,
                            name=f"{name}-seed{seed}", val_fraction=0.1, **recipe)
            settings.update(extra)
            if extra.get("pretrained") is True:
                settings["pretrained"] = str(pretrained)
            started = time.perf_counter()
            run_dir = Path(train(args, **settings).run_dir)
            seconds[name].append(time.perf_counter() - started)
            results[name].append(test_accuracy(run_dir))
            print(f"{name} seed {seed}: test accuracy {results[name][-1]:.4f}", flush=True)
    return [{"experiment": name, "model": model, "seeds": seeds, "test_accuracy": results[name],
             "summary": _common.summarize(results[name]), "seconds": seconds[name],
             "settings": {**recipe, **rows_named[name], "epochs": epochs}} for name in rows_named if results[name]]


def masked(args, methods: list[str]) -> list[dict]:
    """MAE and/or BEiT (HOG targets) pretraining of vit_mini, then the 1%-label comparison: scratch vs each."""
    minutes = 0.3 if args.quick else args.mae_minutes
    recipe = dict(optimizer="adamw", lr=1e-3, weight_decay=0.05, label_smoothing=0.1)
    pool = "-avg" if args.vit_pool == "avg" else ""
    if args.vit_pool == "avg":
        recipe["model_args"] = {"global_pool": "avg"}
    rows, comparison = [], {f"labels-vit-scratch{pool}": {}}
    for method in methods:
        variant = pool + ("-block" if method == "beit" and args.beit_masking == "block" else "")
        run_dir = Path(args.out) / f"{method}{variant}"
        if not (args.reuse_mae and (run_dir / "best.safetensors").is_file()):  # else: fine-tuning only
            settings = dict(task="pretrain", data="fashion-mnist", method=method, model="vit_mini", epochs=100,
                            budget=f"{minutes:g}m", batch_size=256, optimizer="adamw", lr=1.5e-3, weight_decay=0.05,
                            momentum=0.9, val_every=2, name=f"{method}{variant}", seed=0,
                            **({"model_args": recipe["model_args"]} if "model_args" in recipe else {}),
                            **({"masking": args.beit_masking} if method == "beit" else {}))
            started = time.perf_counter()
            run_dir = Path(train(args, **settings).run_dir)
            history = metrics_of(run_dir)
            rows.append({"experiment": f"{method}{variant}", "settings": settings, "epochs": history[-1]["epoch"],
                         "train_seconds": time.perf_counter() - started,
                         "curve": [(line["epoch"], line.get("val_knn_accuracy"), line["train_loss"])
                                   for line in history]})
        comparison[f"labels-vit-{method}-finetune{variant}"] = {"pretrained": str(run_dir), "finetune": "full",
                                                                "backbone_lr_ratio": 0.5}
    return rows + label_runs(args, "vit_mini", None, comparison, args.vit_seeds, recipe)


def markdown(rows: list[dict]) -> str:
    by_name = {row["experiment"]: row for row in rows}
    table = []
    for row in rows:
        if "summary" in row:
            summary = row["summary"]
            value = f"test accuracy {summary['mean']:.4f} +- {summary['std']:.4f} (seeds {row['seeds']}: " + \
                    ", ".join(f"{v:.4f}" for v in row["test_accuracy"]) + ")"
        else:
            value = ", ".join(f"{key} {row[key]:.4f}" for key in ("knn_accuracy", "linear_probe_accuracy") if key in row)
            if "epochs" in row:
                value += f" after {row['epochs']} epochs in {row['train_seconds'] / 60:.1f} min"
            knn = [point[1] for point in row.get("curve", []) if point[1] is not None]
            if knn and "knn_accuracy" not in row:  # MAE/BEiT: the monitor's kNN on the validation split
                value = f"val kNN {max(knn):.4f}" + value
        table.append([row["experiment"], value])
    lines = [_common.markdown_table(["experiment", "result"], table), "", "## Goals of issue 20", ""]
    contrastive = [by_name[name]["linear_probe_accuracy"] for name in ("simclr", "moco") if name in by_name]
    if contrastive:
        lines.append(f"- linear probe >= 0.90 (better of SimCLR/MoCo): {max(contrastive):.4f}: "
                     f"{'met' if max(contrastive) >= 0.90 else 'NOT met'}")
    pairs = [("labels-scratch", "labels-ssl-finetune", 0.05)]
    for pool in ("", "-avg"):  # each ViT variant against the scratch ViT of the same pooling
        pairs += [(f"labels-vit-scratch{pool}", f"labels-vit-{method}-finetune{pool}{masking}", 0.02)
                  for method, masking in (("mae", ""), ("beit", ""), ("beit", "-block"))]
    for scratch, tuned, goal in pairs:
        if scratch in by_name and tuned in by_name:
            gain = by_name[tuned]["summary"]["mean"] - by_name[scratch]["summary"]["mean"]
            lines.append(f"- {tuned} - {scratch} >= {goal * 100:.0f} points: {gain * 100:+.2f} points: "
                         f"{'met' if gain >= goal else 'NOT met'}")
    lines += ["", "Every run here held the shared heavy-job lock; the load averages under 'Measured by' show what else "
              "ran. Rows of 2026-12-06: other agents edited files and ran tests meanwhile (light load). Rows of "
              "2026-12-07 (simclr, labels-*): a niced analysis script and one niced unit test ran beside the SimCLR "
              "pretraining for a few minutes; beside the MoCo run (moco row), niced unit tests for about 5 of its 29 minutes. "
              "Rows of 2026-12-07 07:30-08:30 (mae, labels-vit-mae-finetune; beit, labels-vit-scratch, "
              "labels-vit-beit-finetune): nothing else ran beside them; a first BEiT run shared the CPU with a "
              "niced smoke test for ~2 minutes, so BEiT and the scratch rows were measured again alone."
              ' Rows of 2026-12-07 10:06-10:27 (beit with 12 minutes instead of 3.5, labels-vit-scratch, labels-'
              'vit-beit-finetune): unit tests ran beside the first ~2 minutes of pretraining and beside the fine-'
              'tunes (fine-tuning runs fixed epochs: accuracy unaffected). Before it, BEiT with 3.5 minutes '
              '(2026-12-07 08:14): val kNN 0.534, fine-tuned 0.521 +- 0.007 against the same scratch rows: more '
              'pretraining made it worse. Two one-seed probes after it (seed 0, scratch 0.5288): mask_ratio 0.75 '
              "(3.5 min): 0.4999; a 2-block decoder between encoder and HOG targets, as MAE's (1 epoch): 0.4981. "
              'Not kept.', ""]
    return "\n".join(lines) + "\n" + _common.runs_markdown(rows, "experiment")


def main() -> None:
    args = parse_args()
    _common.set_threads(args.threads)
    header = _common.run_header(args.quick)
    if args.quick:
        args.seeds, args.out = args.seeds[:1], args.out + "-quick"
    rows: list[dict] = []
    if "baselines" in args.parts:
        rows += baselines(args)
    if "simclr" in args.parts:
        rows += pretrain(args)
    if "labels" in args.parts:
        ssl_run = Path(args.out) / args.method
        rows += label_runs(args, "fastnet", ssl_run if (ssl_run / "best.safetensors").is_file() else None, {
            "labels-scratch": {},
            "labels-ssl-probe": {"pretrained": True, "finetune": "linear", "head_init": "probe", "epochs": 0},
            # head_init=random: LP-FT (probe head first) diverged from the quick mode's 0.3-minute SimCLR run
            # (its eval-mode features varied ~100x less than in train mode: train loss 1561 in epoch 1). From the
            # 28.6-minute run (eval and train-mode feature spreads agree, std ~1) it trains, but did not beat this
            # row on 3 seeds (2026-12-07, ssl-lpft.json): LP-FT 0.801, LP-FT at backbone_lr_ratio 0.5 0.815,
            # plain fine-tuning at ratio 0.5 0.818 and 1.0 0.823 (this row, ratio 0.1: 0.810).
            "labels-ssl-finetune": {"pretrained": True, "finetune": "full"},
        }, args.seeds, {})
    if "mae" in args.parts or "beit" in args.parts:
        rows += masked(args, [method for method in ("mae", "beit") if method in args.parts])
    rows = _common.merge_previous(NAME, header, rows, "experiment", ORDER, None)
    _common.finish(NAME, "Self-supervised pretraining on Fashion-MNIST (issue 20)", header, {"results": rows},
                   markdown(rows), None)


if __name__ == "__main__":
    main()
