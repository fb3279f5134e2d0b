"""What every task offers the Trainer, and what a task module offers `cnnkit train`.

A *task* joins a model to its loss and its metrics. The Trainer (cnnkit.engine.trainer) knows nothing
about classes, boxes or masks: it moves a batch to the device, calls `training_step`, backpropagates
`result["loss"]`, and after each epoch feeds `evaluation_step` results into the task's meter.

A *task module* (cnnkit.tasks.classification, .detection, .segmentation, .instance) turns a TrainConfig
into everything the loop needs: `setup(config, device, dist_info, resume) -> TaskSetup`. `cnnkit train
--task NAME` imports the module named in TASK_MODULES; nothing else in the engine changes per task.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from cnnkit.errors import CheckpointError, ConfigError

# config.task -> the module that sets that task up (imported only when used).
TASK_MODULES = {
    "classify": "cnnkit.tasks.classification",
    "detect": "cnnkit.tasks.detection",
    "segment": "cnnkit.tasks.segmentation",
    "instance": "cnnkit.tasks.instance",
}


def task_module(name: str):
    """The module that implements task `name` (its `setup`, `load` ...)."""
    if name not in TASK_MODULES:
        raise ConfigError(f"task={name!r} is not one of {', '.join(TASK_MODULES)}")
    try:
        return importlib.import_module(TASK_MODULES[name])
    except ModuleNotFoundError as error:
        if error.name != TASK_MODULES[name]:
            raise
        raise ConfigError(f"task={name!r} is not available in this version of cnnkit") from None


class Task(ABC):
    """Base class of tasks. Subclasses set `name`, `monitor` and implement the steps.

    Attributes:
        name: The config's task name ("classify", "detect" ...), stored in checkpoints as record["task"].
        monitor: The validation metric that picks the best checkpoint unless the config names one.
        model: The network being trained.
    """

    name = "task"
    monitor = "val_loss"
    model: nn.Module

    def to_device(self, images, targets, device: torch.device):
        """Move one batch to `device`. Tensors by default; detection moves lists of target dicts."""
        return images.to(device, non_blocking=True), targets.to(device, non_blocking=True)

    @abstractmethod
    def training_step(self, model: nn.Module, images, targets) -> dict:
        """Forward and loss. Returns {"loss": scalar tensor, "batch_size": int} and optionally
        "correct" (a count tensor: the Trainer then reports train_accuracy) and "outputs"."""
        ...

    @abstractmethod
    def evaluation_step(self, model: nn.Module, images, targets) -> dict:
        """Forward in eval mode; returns whatever `update_meter` needs."""
        ...

    @abstractmethod
    def new_meter(self):
        """A fresh metric accumulator with `tensors()` (summed across processes) and `compute(per_class)`."""
        ...

    @abstractmethod
    def update_meter(self, meter, result: dict, targets) -> None:
        """Add one evaluation batch's `result` to `meter`."""
        ...


def rebuild_model(file: Path, record: dict, tensors: dict, device: torch.device) -> nn.Module:
    """The model of a checkpoint: built from its record's architecture, weights loaded, in eval mode on `device`.

    `cnnkit.load` and every task's `load_run` use it; a `last` checkpoint's "model." prefix is removed.
    """
    from cnnkit.engine import checkpoint as ckpt
    from cnnkit.registry import create_model

    if "trainer_state" in record:
        tensors = ckpt.unprefixed("model.", tensors)
    architecture = record["architecture"]
    model = create_model(architecture["name"], **architecture["args"])
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise CheckpointError(f"{file}: the weights do not fit {architecture['name']} "
                              f"({str(error).splitlines()[0]})") from None
    return model.to(device).eval()


@dataclass
class TaskSetup:
    """Everything `cnnkit train` needs from a task module to run the shared loop.

    Attributes:
        task: The Task (its model already built, pretrained weights loaded).
        train_loader, val_loader: Iterables of (images, targets) with len() and set_epoch(epoch).
        record: The checkpoint record's fixed part: task, architecture {name, args}, classes,
            preprocessing, config, versions. `cnnkit.load` rebuilds the model from it.
        header: One line printed when training starts (model, data sizes ...).
        callbacks: Extra Trainer callbacks (e.g. transfer learning's unfreezing schedule).
    """

    task: Task
    train_loader: Any
    val_loader: Any
    record: dict[str, Any]
    header: str = ""
    callbacks: list[Callable] = field(default_factory=list)
