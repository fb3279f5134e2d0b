"""Tasks: one package per task (cnnkit/tasks/<task>/), found through the table in cnnkit.task_table.

    task_info("detect")        -> the package's TASK (a TaskInfo: setup, load_run, evaluation text, predict ...)
    load_run("runs/my-run")    -> the predictor of a trained run (what `cnnkit.load` returns)

Packages are imported on first use, so naming a task costs nothing until it is used.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from cnnkit.errors import CheckpointError, ConfigError
from cnnkit.task_table import TASKS, canonical_task
from cnnkit.tasks.base import PredictOptions, Task, TaskInfo, TaskSetup

__all__ = ["ClassificationTask", "PredictOptions", "TASKS", "Task", "TaskInfo", "TaskSetup", "load_run",
           "task_info", "task_module"]


def task_module(name: str):
    """The package that implements task `name` (legacy names accepted)."""
    name = canonical_task(name)
    if name not in TASKS:
        raise ConfigError(f"task={name!r} is not one of {', '.join(TASKS)}")
    package = TASKS[name][0]
    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as error:
        if error.name != package:
            raise
        raise ConfigError(f"task={name!r} is not available in this version of cnnkit") from None


def task_info(name: str) -> TaskInfo:
    """The TaskInfo of task `name`: what the CLI, serve, export and the report may do with its runs."""
    return task_module(name).TASK


def checkpoint_file(path: str | Path, checkpoint: str = "best") -> tuple[Path, Path]:
    """(run directory, checkpoint file) for a run directory or a .safetensors file."""
    path = Path(path)
    if path.is_dir():
        return path, path / f"{checkpoint}.safetensors"
    if path.suffix == ".safetensors":
        return path.parent, path
    raise CheckpointError(f"{path} is neither a run directory nor a .safetensors checkpoint; "
                          "pass the directory that `cnnkit train` printed")


def load_run(path: str | Path, device: str = "auto", checkpoint: str = "best"):
    """Load a trained run (a run directory, or a .safetensors checkpoint file) for predict/evaluate.

    Returns the predictor of the run's task (a Classifier, Detector, Segmenter ...).
    """
    from cnnkit.device import resolve_device
    from cnnkit.engine.checkpoint import load_checkpoint
    from cnnkit.tasks.base import rebuild_model

    run_dir, file = checkpoint_file(path, checkpoint)
    tensors, record = load_checkpoint(file)
    info, resolved = task_info(record["task"]), resolve_device(device)
    return info.predictor(rebuild_model(file, record, tensors, resolved), record, run_dir, resolved)


def __getattr__(name: str):
    if name == "ClassificationTask":  # `from cnnkit.tasks import ClassificationTask`, without importing it eagerly
        from cnnkit.tasks.classification import ClassificationTask

        return ClassificationTask
    raise AttributeError(f"module 'cnnkit.tasks' has no attribute {name!r}")
