"""The Python API: `train(config)`, `load(run_dir)`, `lr_find(config)`, and the run handle.

The CLI (cnnkit.cli) is a thin layer over these functions, and these are a thin layer over the task
packages (cnnkit.tasks, found through cnnkit.task_table) and the engine's Trainer.

    import cnnkit
    run = cnnkit.train(epochs=3)                  # or cnnkit.train("recipe.yaml", lr=0.1)
    classifier = cnnkit.load(run.run_dir)
    classifier.predict(["shoe.png"], top_k=3)     # [[("Sneaker", 0.91), ("Sandal", 0.06), ...]]
    classifier.evaluate("test")["accuracy"]
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from cnnkit.config import TrainConfig, as_config, save_config
from cnnkit.data.images import set_max_pixels
from cnnkit.device import resolve_device, resolve_precision, training_device
from cnnkit.engine.distributed import DistInfo, barrier, broadcast_object, init_distributed, shutdown
from cnnkit.engine.optim import make_optimizer
from cnnkit.engine.trainer import Trainer
from cnnkit.errors import CheckpointError, ConfigError
from cnnkit.registry import get_entry
from cnnkit.tasks import load_run, task_info
from cnnkit.tasks.classification import Classifier  # noqa: F401 - `cnnkit.Classifier`, the default task's predictor

__all__ = ["Classifier", "Run", "load", "lr_find", "train"]


@dataclass
class Run:
    """The outcome of `train`: where the run lives and its best epoch's metrics."""

    run_dir: Path
    best: dict[str, Any]


def train(config: TrainConfig | dict | str | Path | None = None, *, resume: str | Path | None = None,
          stop_after_epoch: int | None = None, callbacks: Iterable[Callable] = (), **overrides) -> Run:
    """Train a model; the Python twin of `cnnkit train`.

    Args:
        config: A TrainConfig, a dict of settings, or a YAML file; None uses the defaults.
        resume: A run directory to continue from its `last` checkpoint (settings come from its
            config.yaml; `overrides` such as epochs=20 still apply).
        stop_after_epoch: Stop after this many epochs in total; the run stays resumable.
        callbacks: Called as callback(trainer, epoch_metrics) after every epoch.
        **overrides: Settings that take precedence, e.g. epochs=5, lr=0.1.

    Returns:
        A Run with the run directory and the best epoch's metrics.
    """
    if resume is not None:
        resume = Path(resume)
        if not (resume / "last.safetensors").is_file():
            raise CheckpointError(f"cannot resume from {resume}: no last.safetensors there")
        config = as_config(resume / "config.yaml", overrides)
    else:
        config = as_config(config, overrides)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    set_max_pixels(config.max_image_pixels)  # the decompression-bomb cap of every image file read in training
    device = training_device(config.device)
    if resume is None:
        get_entry(config.model)  # an unknown name (or a bad YAML spec) fails now, not after loading the data
    if config.sync_bn and device.type != "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("sync_bn=true needs CUDA devices: PyTorch's SyncBatchNorm has no CPU (gloo) "
                          "implementation; leave sync_bn=false for CPU training under torchrun")
    dist_info = init_distributed(device)
    try:
        return _train(config, device, dist_info, resume, stop_after_epoch, callbacks)
    finally:
        shutdown(dist_info)


def _train(config: TrainConfig, device: torch.device, dist_info: DistInfo, resume: Path | None,
           stop_after_epoch: int | None, callbacks: Iterable[Callable]) -> Run:
    # The task package (classification, detection ...) builds the model, the data and the record;
    # the loop, checkpoints and logs below are the same for every task.
    setup = task_info(config.task).setup(config, device, dist_info, resume)
    run_dir = Path(resume) if resume else None
    if run_dir is None:
        run_dir = broadcast_object(_new_run_dir(config) if dist_info.is_main else None, dist_info)
    # The Trainer fits the batch to the data (config.batch_size may change): the config is saved after it.
    trainer = Trainer(config, setup.task, setup.train_loader, setup.val_loader, run_dir, setup.record, device,
                      dist_info, setup.callbacks + list(callbacks), head_parameters=setup.head_parameters,
                      find_unused_parameters=setup.find_unused_parameters)
    if dist_info.is_main:
        save_config(config, run_dir / "config.yaml")
        print(f"{setup.header} -> {run_dir}", flush=True)
        if trainer.batch_note:
            print(trainer.batch_note, flush=True)
    if resume:
        trainer.resume(run_dir / "last.safetensors")
    try:
        best = trainer.fit(stop_after_epoch=stop_after_epoch)
    except KeyboardInterrupt as interrupt:
        saved = f"last.safetensors holds epoch {trainer.state.epoch}" if trainer.state.epoch else "no epoch finished"
        interrupt.cnnkit_note = (f"interrupted: {saved}; continue with `cnnkit train --resume {run_dir}`"
                                 if trainer.state.epoch else f"interrupted: {saved}, nothing to resume in {run_dir}")
        raise
    barrier(dist_info)
    if dist_info.is_main:
        monitored = best.get(trainer.monitor)
        shown = f"{trainer.monitor} {monitored:.4f} at epoch {best.get('epoch')}" if monitored is not None else ""
        print(f"done: best {shown}; run directory: {run_dir}", flush=True)
        if config.report and (run_dir / "best.safetensors").is_file():
            _write_report(run_dir, device)
    return Run(run_dir, best)


def _new_run_dir(config: TrainConfig) -> Path:
    data_name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(config.data).stem if "/" in config.data else config.data)
    model_name = Path(config.model).stem if config.model.endswith((".yaml", ".yml")) else config.model
    name = config.name or f"{model_name}-{data_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, suffix = Path(config.out) / name, 1
    while run_dir.exists():
        run_dir, suffix = Path(config.out) / f"{name}-{suffix}", suffix + 1
    run_dir.mkdir(parents=True)
    return run_dir


def _write_report(run_dir: Path, device: torch.device) -> None:
    """The run report, made last: a failure here is reported and never loses the trained run."""
    from cnnkit.inspect.report import write_report

    try:
        path = write_report(run_dir, device=str(device), max_seconds=30.0)
        print(f"report: {path}", flush=True)
    except Exception as error:  # noqa: BLE001 - the checkpoints are written; say what failed and go on
        print(f"report: not written ({type(error).__name__}: {error}); make it again with "
              f"`cnnkit report {run_dir}`", flush=True)


def load(path: str | Path, device: str = "auto", checkpoint: str = "best"):
    """Load a trained run (a run directory, or a .safetensors checkpoint file) for predict/evaluate.

    Returns the predictor of the run's task: a Classifier for classification, a Detector, Segmenter or
    InstanceSegmenter for the others (each with .predict, .evaluate(split), .classes, .record).
    """
    return load_run(path, device=device, checkpoint=checkpoint)


def lr_find(config: TrainConfig | dict | str | Path | None = None, *, start_lr: float = 1e-7, end_lr: float = 10.0,
            num_steps: int = 100, beta: float | None = None, progress: bool = True, **overrides):
    """Run the LR range test (cnnkit.engine.lr_finder) on the model and data `cnnkit train` would build.

    Args:
        config: A TrainConfig, a dict of settings, a YAML file, or None for the defaults.
        start_lr, end_lr: The LR range, swept geometrically.
        num_steps: Optimizer steps (batches); 100-300 is usual. The sweep stops earlier if the loss diverges.
        beta: Smoothing of the loss curve (0 = none); None: `default_beta(num_steps)`.
        progress: Show a progress bar.
        **overrides: Settings, e.g. model="resnet20", batch_size=128.

    Returns:
        The curve and the suggested LRs (LRFindResult). The model is not saved; its weights are restored.
    """
    from cnnkit.engine.lr_finder import exponential_lrs, range_test

    config = as_config(config, overrides)
    lrs = exponential_lrs(start_lr, end_lr, num_steps)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device)
    setup = task_info(config.task).setup(config, device, DistInfo(), None)
    task, loader = setup.task, setup.train_loader
    if len(loader) == 0:
        raise ConfigError(f"the training split has fewer images than one batch ({config.batch_size}); "
                          "lower batch_size")
    model = task.model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    task.model = model
    optimizer = make_optimizer(model, config, setup.head_parameters)
    return range_test(task, loader, optimizer, lrs, device, resolve_precision(config.precision, device),
                      config.grad_clip_norm, beta, progress)
