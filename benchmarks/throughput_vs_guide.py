"""Training throughput (images/s) of the guide's SimpleCNN: the guide's tutorial loop vs cnnkit's Trainer.

What it measures: images per second of training epochs on the CPU, same model architecture
(`cnnkit.create_model("simple_cnn", num_classes=10, in_chans=1, input_size=28)`, seeded the same),
same batch size, same number of batches, in two variants:

  guide   the classic tutorial pipeline and loop: a torch.utils.data.Dataset over the Fashion-MNIST
          uint8 arrays that returns, per sample, a PIL image passed through
          transforms.Compose([RandomHorizontalFlip(), RandomCrop(28, padding=2), ToTensor(),
          Normalize(mean, std)]); DataLoader(batch_size, shuffle=True, num_workers=2) (2 is what
          typical tutorials use; --guide-workers changes it); fp32, contiguous memory format; the
          guide's train_epoch (zero_grad, forward, loss, backward, step, loss.item(), argmax
          accuracy .item() per batch); torch.optim.SGD(lr, momentum=0.9); nn.CrossEntropyLoss().
  cnnkit  cnnkit's Trainer.train_one_epoch with its CPU defaults: precision=auto (bf16 autocast where
          the CPU has native bf16; the resolved dtype is recorded), channels_last, the in-memory
          TensorLoader with batched hflip + translate=2, label smoothing 0.1, cnnkit's
          make_optimizer(optimizer=sgd) (SGD, Nesterov momentum 0.9, no decay on norms and
          biases), the per-step LR schedule, and the progress bar (progress=True is the default;
          --no-progress turns it off).

Both train on the same N = steps * batch_size images (a seeded random subset of the Fashion-MNIST
training set), normalized with the same mean/std. One "epoch" of N images is timed end to end
(time.perf_counter around the guide's train_epoch / the Trainer's train_one_epoch), so per-epoch
fixed costs are included: the guide's worker start-up (a DataLoader forks its workers at every
epoch unless persistent_workers=True, which tutorials do not set), cnnkit's epoch permutation and
augmentation draw. They are spread over `steps` batches here instead of ~940 in a full epoch
(batch 64); --steps raises it.

Variants run interleaved in rounds (round r runs both; the order alternates every round so neither
always runs second); round 0 is a warm-up and excluded. Each variant keeps its model, optimizer and
loader across rounds, as epochs of one training run do. Reported per variant: best and median
images/s over the rounds; and the ratio cnnkit / guide of the bests, of the medians, and the median
of the per-round ratios. Target: ratio >= 2.

    .venv/bin/python benchmarks/throughput_vs_guide.py              # 200 batches of 64, 5 rounds
    .venv/bin/python benchmarks/throughput_vs_guide.py --guide-workers 0 --batch-size 128
    .venv/bin/python benchmarks/throughput_vs_guide.py --quick      # smoke test: 10 batches, 2 rounds

Writes benchmarks/results/throughput_vs_guide.json and .md (throughput_vs_guide-quick.* with --quick).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time

import numpy
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import _common
from cnnkit import create_model
from cnnkit.config import TrainConfig
from cnnkit.tasks.classification import make_loader
from cnnkit.data import ArrayDataset, AugmentConfig, compute_mean_std, load_fashion_mnist
from cnnkit.data.preprocess import Preprocessing
from cnnkit.device import resolve_precision
from cnnkit.engine.trainer import Trainer
from cnnkit.tasks import ClassificationTask

NAME = "throughput_vs_guide"
TARGET_RATIO = 2.0
MODEL_ARGS = {"num_classes": 10, "in_chans": 1, "input_size": 28}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="batches per timed epoch (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="default: %(default)s (the guide's)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, after 1 warm-up round (default: %(default)s)")
    parser.add_argument("--guide-workers", type=int, default=2, help="the guide's DataLoader num_workers (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=0.01, help="peak LR of both variants (default: %(default)s)")
    parser.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                        help="cnnkit's precision setting (default: auto, cnnkit's default)")
    parser.add_argument("--no-progress", action="store_true", help="turn off cnnkit's progress bar (on by default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's default)")
    parser.add_argument("--data-root", default=None, help="folder with the Fashion-MNIST files (default: cnnkit's search)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 10 batches, 2 rounds")
    parser.add_argument("--results-dir", default=None, help="where the .json/.md go (default: benchmarks/results)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.rounds = 10, 2
    return args


# ---------------------------------------------------------------- the guide's variant
class GuideFashionMNIST(Dataset):
    """torchvision.datasets.FashionMNIST's __getitem__: uint8 array -> PIL image -> transform, per sample."""

    def __init__(self, images: numpy.ndarray, labels: numpy.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform  # (N, 28, 28) uint8, (N,)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index])  # mode "L"
        return self.transform(image), int(self.labels[index])


def train_epoch(model, loader, criterion, optimizer, device):
    """The guide's training loop, unchanged."""
    model.train()
    running_loss, correct, total = 0.0, 0, 0
    for inputs, labels in loader:
        inputs, labels = inputs.to(device), labels.to(device)
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        correct += (outputs.argmax(1) == labels).sum().item()
        total += labels.size(0)
    return running_loss / len(loader), correct / total


def build_guide(args, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float):
    transform = transforms.Compose([
        transforms.RandomHorizontalFlip(),
        transforms.RandomCrop(28, padding=2),
        transforms.ToTensor(),
        transforms.Normalize((mean,), (std,)),
    ])
    dataset = GuideFashionMNIST(images[:, 0].numpy(), labels.numpy(), transform)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.guide_workers)
    torch.manual_seed(args.seed)
    model = create_model("simple_cnn", **MODEL_ARGS)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    device = torch.device("cpu")

    def run_epoch(epoch: int) -> dict:
        loss, accuracy = train_epoch(model, loader, criterion, optimizer, device)
        return {"train_loss": loss, "train_accuracy": accuracy}

    return run_epoch


# ---------------------------------------------------------------- cnnkit's variant
def build_cnnkit(args, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float, run_dir: str,
                 classes: list[str]):
    device = torch.device("cpu")
    # cnnkit's defaults except what the comparison fixes: model, batch size, SGD, the LR; one
    # schedule spans all rounds as the epochs of one run.
    config = TrainConfig(model="simple_cnn", batch_size=args.batch_size, optimizer="sgd", lr=args.lr, momentum=0.9,
                         epochs=args.rounds + 1, precision=args.precision, progress=not args.no_progress,
                         seed=args.seed, device="cpu")
    preprocessing = Preprocessing(1, (28, 28), (mean,), (std,))
    loader = make_loader(ArrayDataset(images, labels, classes), preprocessing, config, device, train=True)
    torch.manual_seed(args.seed)
    model = create_model("simple_cnn", **MODEL_ARGS)
    task = ClassificationTask(model, classes, label_smoothing=config.label_smoothing)
    trainer = Trainer(config, task, loader, None, run_dir, {}, device)
    return trainer.train_one_epoch, config, resolve_precision(config.precision, device)


def main() -> None:
    args = parse_args()
    _common.set_threads(args.threads)
    header = _common.run_header(args.quick)
    num_images = args.steps * args.batch_size

    train, _ = load_fashion_mnist(args.data_root)
    if num_images > len(train):
        raise SystemExit(f"--steps x --batch-size = {num_images} images, more than the {len(train)} training images")
    subset = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))[:num_images]
    images, labels = train.images[subset], train.labels[subset]  # (N, 1, 28, 28) uint8, (N,)
    (mean,), (std,) = compute_mean_std(images)
    print(f"{num_images} images ({args.steps} batches of {args.batch_size}), mean {mean:.4f} std {std:.4f}; "
          f"torch threads {torch.get_num_threads()}, guide workers {args.guide_workers}", flush=True)

    with tempfile.TemporaryDirectory(prefix="cnnkit-bench-run-") as run_dir:
        guide = build_guide(args, images, labels, mean, std)
        cnnkit_epoch, config, amp_dtype = build_cnnkit(args, images, labels, mean, std, run_dir, train.classes)
        variants = {"guide": guide, "cnnkit": cnnkit_epoch}
        rounds = []
        for round_index in range(args.rounds + 1):
            order = ["guide", "cnnkit"] if round_index % 2 == 0 else ["cnnkit", "guide"]
            measured = {}
            for name in order:
                gc.collect()
                started = time.perf_counter()
                metrics = variants[name](round_index)
                seconds = time.perf_counter() - started
                measured[name] = {"seconds": seconds, "images_per_second": num_images / seconds,
                                  "train_loss": metrics["train_loss"], "train_accuracy": metrics["train_accuracy"]}
            label = "warm-up" if round_index == 0 else f"round {round_index}/{args.rounds}"
            print(f"{label}: guide {measured['guide']['images_per_second']:.0f} img/s, "
                  f"cnnkit {measured['cnnkit']['images_per_second']:.0f} img/s "
                  f"(x{measured['cnnkit']['images_per_second'] / measured['guide']['images_per_second']:.2f}; "
                  f"order {' then '.join(order)})", flush=True)
            rounds.append({"round": round_index, "warm_up": round_index == 0, "order": order, **measured})

    timed = [r for r in rounds if not r["warm_up"]]
    speeds = {name: [r[name]["images_per_second"] for r in timed] for name in ("guide", "cnnkit")}
    summary = {name: {"best_images_per_second": max(values), "median_images_per_second": statistics.median(values),
                      **{f"{k}_images_per_second": v for k, v in _common.summarize(values).items() if k != "n"}}
               for name, values in speeds.items()}
    ratios = {
        "best": summary["cnnkit"]["best_images_per_second"] / summary["guide"]["best_images_per_second"],
        "median": summary["cnnkit"]["median_images_per_second"] / summary["guide"]["median_images_per_second"],
        "median_of_round_ratios": statistics.median(c / g for c, g in zip(speeds["cnnkit"], speeds["guide"])),
    }
    passed = ratios["median"] >= TARGET_RATIO
    payload = {
        "settings": {
            "model": "simple_cnn", "model_args": MODEL_ARGS, "batch_size": args.batch_size, "steps": args.steps,
            "images_per_epoch": num_images, "rounds": args.rounds, "warm_up_rounds": 1, "lr": args.lr,
            "seed": args.seed, "normalize_mean_std": [mean, std],
            "guide": {"dataloader_num_workers": args.guide_workers, "precision": "fp32", "memory_format": "contiguous",
                      "transforms": "RandomHorizontalFlip, RandomCrop(28, padding=2), ToTensor, Normalize",
                      "optimizer": "torch.optim.SGD(lr, momentum=0.9)", "loss": "CrossEntropyLoss()"},
            "cnnkit": {"precision": config.precision,
                       "autocast_dtype": str(amp_dtype).replace("torch.", "") if amp_dtype else "none (fp32)",
                       "channels_last": config.channels_last, "hflip": config.hflip, "translate": config.translate,
                       "translate_padding": AugmentConfig().translate_padding, "label_smoothing": config.label_smoothing,
                       "optimizer": "make_optimizer(optimizer=sgd): Nesterov momentum 0.9, weight_decay "
                                    f"{config.weight_decay} on weights only", "schedule": config.schedule,
                       "progress_bar": config.progress},
            "threads": torch.get_num_threads(),
        },
        "rounds": rounds,
        "summary": summary,
        "ratio_cnnkit_over_guide": ratios,
        "target": {"ratio_min": TARGET_RATIO, "judged_on": "median"},
        "passed": passed,
    }

    rows = [[name, f"{summary[name]['best_images_per_second']:.0f}", f"{summary[name]['median_images_per_second']:.0f}",
             f"{summary[name]['min_images_per_second']:.0f}"] for name in ("guide", "cnnkit")]
    rows.append(["**cnnkit / guide**", f"x{ratios['best']:.2f}", f"x{ratios['median']:.2f}",
                 f"(median of per-round ratios x{ratios['median_of_round_ratios']:.2f})"])
    cnnkit_settings = payload["settings"]["cnnkit"]
    body = (
        f"simple_cnn on {num_images} Fashion-MNIST images per epoch ({args.steps} batches of {args.batch_size}), "
        f"{args.rounds} timed rounds + 1 warm-up, order alternating; torch threads {torch.get_num_threads()}.\n"
        f"guide: per-sample PIL transforms, DataLoader num_workers={args.guide_workers}, fp32, contiguous. "
        f"cnnkit: Trainer.train_one_epoch, autocast {cnnkit_settings['autocast_dtype']}, channels_last, TensorLoader "
        f"hflip + translate=2, progress bar {'on' if config.progress else 'off'}.\n\n"
        + _common.markdown_table(["variant", "best img/s", "median img/s", "worst img/s"], rows)
        + f"\n\n**Target cnnkit/guide >= {TARGET_RATIO:g}x (median): {'PASS' if passed else 'FAIL'}**{_common.QUICK_NOTE if args.quick else ''}\n"
    )
    _common.finish(NAME, "Training throughput: the guide's loop vs cnnkit's Trainer (SimpleCNN)", header, payload,
                   body, args.results_dir)


if __name__ == "__main__":
    main()
