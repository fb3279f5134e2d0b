"""What every task offers the Trainer, what a task package offers the rest of cnnkit, and the pieces they share.

A *task* joins a model to its loss and its metrics. The Trainer (cnnkit.engine.trainer) knows nothing
about classes, boxes or masks: it moves a batch to the device, calls `training_step`, backpropagates
`result["loss"]`, and after each epoch feeds `evaluation_step` results into the task's meter.

A *task package* (cnnkit/tasks/<task>/, named in cnnkit.task_table) is the whole slice: its `TASK` is a
`TaskInfo` that says how to set a run up (`setup(config, device, dist_info, resume) -> TaskSetup`), how to
load a trained run (`load_run`), how its evaluation is printed and its predictions written, and what
export, serve and the report may do with it. `cnnkit.load`, the CLI, serve, export and the report look
the task up with `cnnkit.tasks.task_info(name)` and never branch on a task name themselves.

Shared here, once: the checkpoint record (`build_record`), architecture resolution for classifier-style
models (`resolve_architecture`), the model of a checkpoint (`rebuild_model`), the settings of a trained
run (`config_of`), and the one-line training header (`describe_run`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from cnnkit.errors import CheckpointError, CnnkitError, ConfigError

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

    ckpt.validate_record(record, file, ckpt.MODEL_KEYS)
    if "trainer_state" in record:
        tensors = ckpt.unprefixed("model.", tensors)
    architecture = record["architecture"]
    _check_model_size(file, record, tensors)
    model = create_model(architecture["name"], **architecture["args"])
    try:
        model.load_state_dict(tensors)
    except RuntimeError as error:
        raise CheckpointError(f"{file}: the weights do not fit {architecture['name']} "
                              f"({str(error).splitlines()[0]})") from None
    return model.to(device).eval()


def _check_model_size(file: Path, record: dict, tensors: dict) -> None:
    """Refuse a record whose classes do not match its head, or whose model needs more weights than the file holds
    (built on the meta device first: no memory is allocated for a record that asks for terabytes)."""
    from cnnkit.registry import create_model

    architecture = record["architecture"]
    width = architecture["args"].get("num_classes")
    if width is not None and width != len(record["classes"]):
        raise CheckpointError(f"{file}: the record names {len(record['classes'])} classes but its model has "
                              f"{width} outputs (architecture.args.num_classes); the file is damaged: retrain or "
                              "restore it from a copy")
    try:
        with torch.device("meta"):
            needed = sum(value.numel() for value in create_model(architecture["name"], **architecture["args"])
                         .state_dict().values())
    except CnnkitError:
        raise
    except Exception:  # noqa: BLE001 - a model that cannot be built on the meta device: the real build decides
        return
    held = sum(tensor.numel() for tensor in tensors.values())
    if needed > held:
        raise CheckpointError(f"{file}: the record describes {architecture['name']} with {needed:,} weights, but the "
                              f"file holds {held:,}; the record and the weights do not belong together: retrain or "
                              "restore it from a copy")


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
        head_parameters: Names of the parameters that train at the full LR while the rest (a pretrained
            backbone) trains at lr x backbone_lr_ratio; or name -> LR multiplier for some parameters (the
            margin head of an embedding); None: one LR for all.
        find_unused_parameters: Tell DDP that some parameters get no gradient (frozen layers).
    """

    task: Task
    train_loader: Any
    val_loader: Any
    record: dict[str, Any]
    header: str = ""
    callbacks: list[Callable] = field(default_factory=list)
    head_parameters: set[str] | dict[str, float] | None = None  # their own LR: transfer's head, embed's margin head
    find_unused_parameters: bool = False  # DDP: layers frozen for transfer learning get no gradient



@dataclass(frozen=True)
class PredictOptions:
    """What `cnnkit predict` asks of every task; each task uses the options that apply to it."""

    top_k: int = 3  # classification: classes per image
    score_threshold: float = 0.25  # detection, instance: leave out objects scored below this
    out: Path | None = None  # tasks that write files (masks, drawings): the folder; None: RUN_DIR/predictions


@dataclass(frozen=True)
class TaskInfo:
    """A task package's entry: what cnnkit.load, the CLI, serve, export and the report need from it.

    Attributes:
        name: The config's and the record's task name (cnnkit.task_table).
        setup: (config, device, dist_info, resume) -> TaskSetup, for `cnnkit train`.
        predictor: The class `cnnkit.load` returns, built as predictor(model, record, run_dir, device)
            (with .model, .record, .run_dir, .classes, .predict(...), .evaluate(split)); exported files of
            exportable tasks get the same class around their runtime model.
        evaluation_text: (result, split) -> the table `cnnkit evaluate` prints.
        evaluation_saved: What RUN_DIR/evaluation-SPLIT.json holds, as `cnnkit evaluate` says it.
        predict: (predictor, image paths, PredictOptions) -> one JSON-ready dict per image (files written
            where the task draws or saves masks).
        prediction_text: One predict result -> the line `cnnkit predict` prints for it.
        exportable: Whether `cnnkit export` (and the ONNX Runtime / OpenVINO predict backends) take its runs.
        serve_as: The kind of `cnnkit serve` handler for its runs (cnnkit.serve.handlers.HANDLERS):
            "classifier" (/predict: top-k classes and Grad-CAM), "embedder" (/embed, /verify); None: not served.
        report_details: Whether the report evaluates it as a classifier (confusion matrix, mistakes,
            Grad-CAM); otherwise the report shows config, model and curves.
        report_sections: The report's task part, as (predictor, out_dir, deadline) -> (facts, sections): facts
            {label: text} for the report's overview, sections [(id, title, HTML body)], pictures saved as PNG
            in out_dir (RUN_DIR/report), work past `deadline` (a time.perf_counter() value) skipped or cut
            short. None: the report shows config, model and curves only (or the classifier's details).
    """

    name: str
    setup: Callable
    predictor: type
    evaluation_text: Callable[[dict, str], str]
    evaluation_saved: str
    predict: Callable
    prediction_text: Callable[[dict], str]
    exportable: bool = False
    serve_as: str | None = None
    report_details: bool = False
    report_sections: Callable | None = None

    @property
    def served(self) -> bool:
        """Whether `cnnkit serve` serves its runs."""
        return self.serve_as is not None


def build_record(task: str, architecture: dict, classes: list[str], preprocessing: dict, config) -> dict[str, Any]:
    """The checkpoint record's fixed part: everything `cnnkit.load` needs to rebuild and feed the model."""
    from cnnkit.device import versions

    return {"task": task, "architecture": architecture, "classes": list(classes), "preprocessing": preprocessing,
            "config": config.to_dict(), "versions": versions()}


def recorded_architecture(resume) -> dict[str, Any]:
    """The architecture a resumed run was built with (a YAML spec file may have changed or gone since)."""
    from cnnkit.engine.checkpoint import read_record

    return read_record(Path(resume) / "last.safetensors")["architecture"]


def resolve_architecture(config, num_classes: int, preprocessing) -> dict[str, Any]:
    """The checkpoint's architecture record for classifier-style models (classification, segmentation):
    a registered name and every argument needed to rebuild it."""
    args = {"num_classes": num_classes, "in_chans": preprocessing.channels,
            "input_size": list(preprocessing.image_size), **config.model_args}
    if config.drop_rate is not None:
        args["drop_rate"] = config.drop_rate
    if config.drop_path_rate is not None:
        args["drop_path_rate"] = config.drop_path_rate
    # create_model wraps the model in a multi-level head (cnnkit.models.multilevel)
    head = {"head_levels": config.head_levels, "head_grid": config.head_grid} if config.head_levels else {}
    from cnnkit.models.custom import check_spec_file, is_spec_file

    if is_spec_file(config.model):
        # A YAML network spec: the checkpoint stores the spec itself, so the run needs no file later.
        # Its shapes are checked now (on the meta device) so errors name the file and line.
        return {"name": "custom_cnn", "args": {**args, "spec": check_spec_file(config.model, **args), **head}}
    return {"name": config.model, "args": {**args, **head}}


def require_model_task(config, task: str, family_hint: str) -> None:
    """Fail before the data is read when config.model is not a `task` model from the zoo."""
    from cnnkit.registry import get_entry

    if get_entry(config.model).task != task:
        raise ConfigError(f"model {config.model!r} is a {get_entry(config.model).task} model; --task {task} needs "
                          f"{family_hint}")


def config_of(record: dict):
    """The TrainConfig a checkpoint was trained with (its data, splits, precision ...)."""
    from cnnkit.config import TrainConfig, apply_overrides

    return TrainConfig(**apply_overrides({}, record["config"], "checkpoint config"))


def check_split(split: str) -> None:
    if split not in ("test", "val"):
        raise ConfigError(f"split must be 'test' or 'val', got {split!r}")


def pick_split(data, split: str, config, what: str = "split", why: str = ""):
    """`data.test` or `data.val` for `evaluate(split)`; a clear error when the data has none."""
    chosen = data.test if split == "test" else data.val
    if chosen is None:
        raise ConfigError(f"the dataset {config.data} has no {split} {what}{f' ({why})' if why else ''}; "
                          "evaluate with --split val")
    return chosen


def describe_run(config, model: nn.Module, device: torch.device, sizes: str, extra: str = "",
                 precision: bool = True) -> str:
    """The line `cnnkit train` prints first: model, parameters, data, device, precision, epochs."""
    from cnnkit.device import precision_name, resolve_precision

    parameters = sum(p.numel() for p in model.parameters())
    task = "" if config.task == "classify" else f" --task {config.task}"
    shown = f", {precision_name(resolve_precision(config.precision, device))}" if precision else ""
    return (f"cnnkit train{task}: {config.model} ({parameters / 1e6:.2f}M parameters) on {config.data}: {sizes}"
            f"{extra}; {device}{shown}, {config.epochs} epoch{'' if config.epochs == 1 else 's'}")


@torch.no_grad()
def outputs_in_batches(preprocessing, images, forward: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                       batch_size: int = 256) -> torch.Tensor:
    """`forward` of the normalized images, in batches, concatenated on the CPU (float32).

    `images`: image files, PIL images, arrays, or a uint8 (N, C, H, W) batch already at the model's size.
    """
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.dim() == 4:
        batch = images
    else:
        batch = preprocessing.load(images if isinstance(images, (list, tuple)) else [images])
    return torch.cat([forward(preprocessing.normalize(batch[start:start + batch_size]).to(device)).float().cpu()
                      for start in range(0, len(batch), batch_size)])


def unique_stems(paths: list[str]) -> list[str]:
    """File stems, numbered where two inputs share one (from different folders)."""
    names, used = [], set()
    for path in paths:
        stem = Path(path).stem
        name, number = stem, 1
        while name in used:
            name, number = f"{stem}-{number}", number + 1
        used.add(name)
        names.append(name)
    return names

