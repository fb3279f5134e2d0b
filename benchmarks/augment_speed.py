"""Batched augmentations (cnnkit.data.augment / augment_ops) against torchvision.v2 applied per image.

What it measures: milliseconds to augment one batch of uint8 images (default 256) on one CPU thread,
for each augmentation in two forms:

  batched      cnnkit's version: parameters for the batch drawn at once, one tensor op (or one
               affine_grid + grid_sample) over the whole batch, as TensorLoader applies it.
  per image    the torchvision.transforms.v2 transform applied to each image of the batch in a Python
               loop, as a per-sample Dataset + DataLoader pipeline does (without the DataLoader's own costs).

at two image sizes: 1x28x28 (Fashion-MNIST) and 3x32x32 (CIFAR). The AutoAugment-family policies have no
batched form in cnnkit (each image gets different operations): their row shows the per-image cost cnnkit
pays. Rounds alternate the order of the two forms; the best of --rounds is kept (the machine is shared).

    .venv/bin/python benchmarks/augment_speed.py
    .venv/bin/python benchmarks/augment_speed.py --quick

Writes benchmarks/results/augment_speed.json and .md.
"""

from __future__ import annotations

import argparse
import time

import torch
from torchvision.transforms import v2

import _common
from cnnkit.data.augment import RandomFlip, RandomTranslate
from cnnkit.data.augment_ops import ColorJitter, PolicyAugment, RandomErasing, RandomWarp

NAME = "augment_speed"


def cases(size: tuple[int, int]):
    """(name, batched augmentation or None, per-image torchvision transform)."""
    return [
        ("hflip", RandomFlip(dim=-1), v2.RandomHorizontalFlip()),
        ("translate 2 px", RandomTranslate(2), v2.RandomCrop(size, padding=2, padding_mode="reflect")),
        ("rotate 15 + scale 0.1", RandomWarp(rotate=15, scale=0.1), v2.RandomAffine(15, scale=(0.9, 1.1))),
        ("resized crop 0.35", RandomWarp(resized_crop=0.35), v2.RandomResizedCrop(size, scale=(0.35, 1.0))),
        ("brightness + contrast 0.3", ColorJitter(0.3, 0.3), v2.ColorJitter(0.3, 0.3)),
        ("random erasing 0.5", RandomErasing(0.5), v2.RandomErasing(0.5, value=0)),
        ("trivialaugment", None, v2.TrivialAugmentWide()),
        ("randaugment", None, v2.RandAugment()),
    ]


def time_it(function, repeats: int) -> float:
    function()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--results-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    header = _common.run_header(args.quick)
    rounds, repeats, batch = (1, 1, 32) if args.quick else (args.rounds, args.repeats, args.batch_size)
    rows, payload = [], {"batch_size": batch, "threads": 1, "results": []}
    for shape in ((1, 28, 28), (3, 32, 32)):
        images = (torch.rand(batch, *shape) * 255).to(torch.uint8)
        labels = torch.zeros(batch, dtype=torch.int64)
        generator = torch.Generator().manual_seed(0)
        for name, batched, per_image in cases(shape[1:]):
            def run_batched():
                params = batched.sample(batch, generator)
                return batched.apply(images, labels, params)

            def run_per_image():
                if isinstance(per_image, PolicyAugment):
                    return None
                return torch.stack([per_image(image) for image in images])

            if name in ("trivialaugment", "randaugment"):
                batched = PolicyAugment(name)
            best = {"batched": float("inf"), "per_image": float("inf")}
            for round_index in range(rounds):
                order = ("batched", "per_image") if round_index % 2 == 0 else ("per_image", "batched")
                for form in order:
                    function = run_batched if form == "batched" else run_per_image
                    best[form] = min(best[form], time_it(function, repeats))
            label = "cnnkit per image (policy)" if name in ("trivialaugment", "randaugment") else "batched"
            speedup = best["per_image"] / best["batched"]
            payload["results"].append({"shape": "x".join(map(str, shape)), "augmentation": name,
                                       "cnnkit_ms": best["batched"], "cnnkit_form": label,
                                       "torchvision_per_image_ms": best["per_image"], "speedup": speedup})
            rows.append(["x".join(map(str, shape)), name, label, f"{best['batched']:.2f}",
                         f"{best['per_image']:.2f}", f"{speedup:.1f}x"])
            print(rows[-1], flush=True)
    body = (f"Milliseconds per batch of {batch} uint8 images, one thread, best of {rounds} rounds x {repeats} "
            "repeats (parameter sampling included).\n\n"
            + _common.markdown_table(["image", "augmentation", "cnnkit form", "cnnkit ms", "torchvision v2 per image ms",
                                      "speed-up"], rows))
    _common.finish(NAME, "Augmentation cost: batched tensor ops vs torchvision per image", header, payload, body,
                   args.results_dir)


if __name__ == "__main__":
    main()
