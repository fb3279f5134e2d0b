"""Scoring a candidate: a short training run through the classify task's setup and the one Trainer loop.

The proxy is a few epochs on a seeded subset of the training split, written once to SEARCH_DIR/proxy_data
in a format `cnnkit train --data` reads (Fashion-MNIST's IDX files, else a class-folder tree of PNGs), so
any proxy score can be reproduced with `cnnkit train --data SEARCH_DIR/proxy_data --model candidate.yaml`.
Its score is the validation accuracy of the subset's own held-out part: the test split is never read.
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path
from typing import Any

import numpy
import torch

from cnnkit.config import as_config, save_config
from cnnkit.data import load_dataset
from cnnkit.data.fashion_mnist import FASHION_MNIST_CLASSES, find_fashion_mnist
from cnnkit.device import training_device
from cnnkit.engine.distributed import DistInfo
from cnnkit.engine.trainer import Trainer
from cnnkit.errors import ConfigError
from cnnkit.files import atomic_write_text
from cnnkit.tasks import task_info


def _write_idx(path: Path, array: numpy.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + numpy.ascontiguousarray(array, dtype=numpy.uint8).tobytes())


def write_proxy_data(data: str, folder: Path, num_images: int, seed: int) -> dict[str, Any]:
    """Write a seeded, class-stratified subset of `data`'s training split to `folder` (once; kept on resume).

    Returns:
        {"data": what to pass as --data, "images": the subset's size, "classes", "channels", "image_size"}.
    """
    marker = folder / "subset.json"
    if marker.is_file():
        import json

        return json.loads(marker.read_text())
    splits = load_dataset(data)
    train = splits.train
    count = len(train) if num_images <= 0 else min(num_images, len(train))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=generator)
    # Stratified: the same share of every class as the full split (round-robin over the shuffled classes).
    by_class = [order[train.labels[order] == label] for label in range(len(train.classes))]
    per_class = [round(count * len(indices) / len(train)) for indices in by_class]
    indices = torch.cat([indices[:n] for indices, n in zip(by_class, per_class)])
    indices = indices[torch.randperm(len(indices), generator=generator)]
    images, labels = train.images[indices].numpy(), train.labels[indices].numpy()
    folder.mkdir(parents=True, exist_ok=True)
    fashion = list(train.classes) == list(FASHION_MNIST_CLASSES) and images.shape[1:] == (1, 28, 28)
    official = find_fashion_mnist() if fashion else None
    if official is not None:
        # IDX files load ~10x faster than PNGs; the t10k pair is linked to the real test files only because
        # the IDX reader wants all four: the search never evaluates the test split.
        _write_idx(folder / "train-images-idx3-ubyte", images[:, 0])
        _write_idx(folder / "train-labels-idx1-ubyte", labels.astype(numpy.uint8))
        for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
            target = folder / Path(official[name]).name
            if not target.exists():
                os.symlink(Path(official[name]).resolve(), target)
    else:
        from PIL import Image

        for position, (image, label) in enumerate(zip(images, labels)):
            class_folder = folder / train.classes[label]
            class_folder.mkdir(exist_ok=True)
            pixels = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
            Image.fromarray(pixels).save(class_folder / f"{position:06d}.png")
    import json

    info = {"data": str(folder), "images": int(len(indices)), "source": data, "seed": seed,
            "classes": list(train.classes), "channels": int(images.shape[1]), "image_size": int(images.shape[2])}
    atomic_write_text(marker, json.dumps(info, indent=1))
    return info


def train_candidate(model: str, data: str, run_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Train `model` (a registered name or a YAML spec file) on `data` with `settings` (TrainConfig keys),
    as `cnnkit train` does (the classify task's setup, the Trainer); return the best epoch's metrics and
    the seconds it took."""
    started = time.perf_counter()
    config = as_config(None, {"report": False, "progress": False, **settings, "data": data, "model": model,
                              "out": str(run_dir.parent), "name": run_dir.name})
    if config.task != "classify":
        raise ConfigError(f"architecture search drives the classify task; task={config.task} is not searched")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = training_device(config.device)
    dist_info = DistInfo()
    setup = task_info(config.task).setup(config, device, dist_info, None)
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(config, setup.task, setup.train_loader, setup.val_loader, run_dir, setup.record, device,
                      dist_info, setup.callbacks, head_parameters=setup.head_parameters,
                      find_unused_parameters=setup.find_unused_parameters)
    save_config(config, run_dir / "config.yaml")
    best = trainer.fit()
    return {**{key: value for key, value in best.items() if isinstance(value, (int, float))},
            "seconds": time.perf_counter() - started}


def measure_latency(model: torch.nn.Module, input_shape: tuple[int, int, int], repeats: int = 30) -> float:
    """Median milliseconds of one eval-mode forward pass of one image on the CPU (fp32, the current threads)."""
    model = model.eval()
    x = torch.randn(1, *input_shape)
    times = []
    with torch.inference_mode():
        warmup = min(3, repeats)
        for index in range(repeats + warmup):
            started = time.perf_counter()
            model(x)
            if index >= warmup:  # the first calls create oneDNN primitives
                times.append(time.perf_counter() - started)
    return 1000 * sorted(times)[len(times) // 2]
