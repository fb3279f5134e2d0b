"""`cnnkit train --task detect`: the validated data, the detector and the record (instance segmentation reuses
`detector_setup` with masks)."""

from __future__ import annotations

from typing import Any, Callable

import torch
from tqdm import tqdm

from cnnkit.registry import create_model, list_models
from cnnkit.tasks.base import TaskSetup, build_record, describe_run, recorded_architecture, require_model_task
from cnnkit.tasks.detection.data import common_size, image_statistics, make_detection_loader, read_detection_data
from cnnkit.tasks.detection.task import DetectionTask
from cnnkit.transfer import load_matching


def resolve_detection_architecture(config, classes: list[str], input_size: tuple[int, int],
                                   statistics: tuple[list[float], list[float]]) -> dict[str, Any]:
    """The checkpoint's architecture record: the detector's name and every argument needed to rebuild it."""
    mean, std = statistics
    args = {"num_classes": len(classes), "in_chans": 3, "input_size": list(input_size), "image_mean": mean,
            "image_std": std, **config.model_args}
    return {"name": config.model, "args": args}


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the system.

    By default glibc serves every allocation above a threshold (128 KiB .. 32 MiB) with its own mmap and
    unmaps it on free, so each training step maps, zero-fills (page faults) and unmaps its large activation
    and gradient buffers again. Measured on this project's 2-core CPU (yolo_fastnet, batch 32, bf16): 25% of
    the step's CPU time was system time; with mmap off and trimming above 1 GiB, 64 -> 92 images per
    CPU-second. Affects the whole process; a no-op (False) where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


def setup(config, device: torch.device, dist_info, resume) -> TaskSetup:
    """`cnnkit train --task detect`: data (validated, augmented), the detector, the record."""
    if not resume:  # before the data is read
        require_model_task(config, "detect", f"a detector: {', '.join(list_models(task='detect'))}")
    keep_freed_memory()
    return detector_setup(config, device, dist_info, resume, DetectionTask, read_detection_data,
                          resize_note="none: the detector takes images of any size (see its module)",
                          callbacks=[print_detection_metrics])


def detector_setup(config, device: torch.device, dist_info, resume, task_class: type, read_data: Callable,
                   resize_note: str, callbacks: list[Callable], masks: bool = False,
                   eval_batch_size: int = 32) -> TaskSetup:
    """Detection's and instance segmentation's setup: data, detector (built for the most common image size,
    normalised with the training images' statistics), record and loaders."""
    data = read_data(config, verbose=dist_info.is_main)
    input_size = common_size(data.train)
    if resume:
        architecture = recorded_architecture(resume)
    else:
        architecture = resolve_detection_architecture(config, data.classes, input_size, image_statistics(data.train))
    torch.manual_seed(config.seed)  # the same initial weights for the same seed
    model = create_model(architecture["name"], **architecture["args"])
    if config.pretrained and not resume:  # backbone tensors by name and shape (e.g. a classifier run's resnet18)
        message = load_matching(model, config.pretrained, architecture)
        if dist_info.is_main:
            print(message, flush=True)
    task = task_class(model, data.classes)
    args: dict[str, Any] = architecture["args"]
    preprocessing = {"channels": 3, "image_size": list(input_size), "mean": args["image_mean"],
                     "std": args["image_std"], "value_range": "uint8 / 255", "resize": resize_note}
    record = build_record(task.name, architecture, data.classes, preprocessing, config)
    train_loader = make_detection_loader(data.train, config, train=True, dist_info=dist_info, input_size=input_size,
                                         masks=masks)
    val_loader = None
    if data.val:
        val_loader = make_detection_loader(data.val, config, train=False, dist_info=dist_info, masks=masks,
                                           eval_batch_size=eval_batch_size)
    sizes = (f"{len(data.train)} train / {len(data.val) if data.val else 0} val images, {len(data.classes)} classes, "
             f"{input_size[0]}x{input_size[1]}")
    return TaskSetup(task, train_loader, val_loader, record, describe_run(config, model, device, sizes), callbacks)


def print_detection_metrics(trainer, metrics: dict) -> None:
    """After each epoch: the mAP values (the Trainer's epoch line shows losses only)."""
    if trainer.dist.is_main and "val_map50" in metrics:
        tqdm.write(f"  val mAP@.5 {metrics['val_map50']:.4f}  mAP@[.5:.95] {metrics['val_map']:.4f}")
