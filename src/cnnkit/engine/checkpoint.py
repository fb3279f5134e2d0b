"""Checkpoints: safetensors tensors plus a JSON record, written atomically, never pickled code.

One checkpoint is one `.safetensors` file. Its tensors are the model weights (and, for `last`, the
optimizer and EMA state needed to resume); its metadata holds the JSON record under the key "cnnkit":
architecture name and arguments, class names, task, preprocessing, metrics and versions. Keeping the
record inside the same file makes the pair atomic. A readable copy of the record is written beside it
as `<name>.json` for people and tools; loading reads only the safetensors file.

Atomic: write a temporary file in the same directory, fsync it, rename it over the target, fsync the
directory. A crash mid-write leaves the previous checkpoint intact.

Every record read (checkpoints, and exported files' metadata through `upgrade_record`) is checked once against
`validate_record`'s schema: JSON that parses to a mapping, the keys `cnnkit.load` needs (`MODEL_KEYS`, required
where a model is rebuilt or an exported file is read; checked wherever present) with the right types,
preprocessing in range (1-16 channels, sides up to MAX_IMAGE_SIDE, finite means, std > 0, one per channel),
1 to MAX_CLASSES distinct class names, and architecture arguments that are finite numbers no larger than
MAX_ARGUMENT (so a record cannot ask the allocator for terabytes). A failure is one CheckpointError naming
the file and the field. Whether the weights fit the architecture is checked when the model is rebuilt
(cnnkit.tasks.base.rebuild_model).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cnnkit.errors import CheckpointError
from cnnkit.files import atomic_write as _atomic_write
from cnnkit.task_table import canonical_task
from cnnkit.files import atomic_write_text

FORMAT_VERSION = 1
RECORD_KEY = "cnnkit"
MAX_CLASSES = 1_000_000
MAX_IMAGE_SIDE = 16_384
MAX_ARGUMENT = 1_000_000  # the largest number an architecture argument may be (classes, widths, sizes ...)


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
    """Save tensors and a JSON-serialisable record as one safetensors file, plus a readable `.json` copy.

    Args:
        path: Target `.safetensors` file.
        tensors: Name -> tensor. Copied to contiguous CPU tensors (safetensors rejects shared storage).
        record: Metadata (architecture, classes, preprocessing, metrics ...). Must be JSON-serialisable.
    """
    path = Path(path)
    record = {"format_version": FORMAT_VERSION, **record}
    text = json.dumps(record, sort_keys=True)
    # clone(): tied or shared parameters would otherwise make safetensors refuse the file.
    plain = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in tensors.items()}
    _atomic_write(path, lambda temporary: save_file(plain, temporary, metadata={RECORD_KEY: text}))
    atomic_write_text(path.with_suffix(".json"), json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_record(path: str | Path) -> dict[str, Any]:
    """Read only the JSON record of a checkpoint (no tensors are loaded)."""
    from safetensors import safe_open

    path = Path(path)
    _check_exists(path)
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({error}); "
                              "it may be truncated: retrain or restore it from a copy") from None
    return _parse_record(path, metadata)


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint: (tensors on the CPU, record). Never unpickles anything."""
    path = Path(path)
    record = read_record(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path}: cannot read the tensors ({error})") from None
    return tensors, record


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; is the run directory right, and did "
                              "its training finish at least one epoch?")


def _parse_record(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    if RECORD_KEY not in metadata:
        raise CheckpointError(f"{path} has no cnnkit record: it was not written by cnnkit "
                              "(to start from foreign weights, use them as pretrained weights instead)")
    try:
        record = json.loads(metadata[RECORD_KEY])
    except (ValueError, RecursionError) as error:
        reason = str(error)[:200] if isinstance(error, ValueError) else "nested too deeply"
        raise CheckpointError(f"{path}: its cnnkit record is not valid JSON ({reason}); the file is damaged: "
                              "retrain or restore it from a copy") from None
    return upgrade_record(record, path)


def upgrade_record(record: Any, source: str | Path = "the record", required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A record as this version reads it, checked (`validate_record`): the task named as in cnnkit.task_table
    (older runs say "classification", or nothing). Checkpoints and exported files' metadata both pass through here.

    Raises:
        CheckpointError: The record is not a valid cnnkit record; the message names `source` and the field.
    """
    validate_record(record, source, required)
    task = canonical_task(record.get("task"))
    return record if record.get("task") == task else {**record, "task": task}


class _Invalid(Exception):
    """One schema violation: the field's path and what is wrong with it."""


def _require(condition: bool, field: str, problem: str) -> None:
    if not condition:
        raise _Invalid(f"{field} {problem}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_numbers(value: Any, field: str, depth: int = 0) -> None:
    """Every number in architecture arguments finite and at most MAX_ARGUMENT in size (nested specs included)."""
    _require(depth < 32, field, "is nested more than 32 levels deep")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_numbers(item, f"{field}.{key}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_numbers(item, f"{field}[{index}]", depth + 1)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _require(math.isfinite(value) and abs(value) <= MAX_ARGUMENT, field,
                 f"is {str(value)[:40]}: arguments must be finite and at most {MAX_ARGUMENT:,}")


def _check_preprocessing(preprocessing: Any) -> None:
    _require(isinstance(preprocessing, dict), "preprocessing", "must be a mapping")
    for key in ("channels", "image_size", "mean", "std"):
        _require(key in preprocessing, f"preprocessing.{key}", "is missing")
    channels, size = preprocessing["channels"], preprocessing["image_size"]
    _require(isinstance(channels, int) and not isinstance(channels, bool) and 1 <= channels <= 16,
             "preprocessing.channels", f"must be a whole number from 1 to 16, not {str(channels)[:40]}")
    _require(isinstance(size, list) and len(size) == 2 and all(isinstance(side, int) and not isinstance(side, bool)
                                                               and 1 <= side <= MAX_IMAGE_SIDE for side in size),
             "preprocessing.image_size", f"must be [height, width], each 1 to {MAX_IMAGE_SIDE}, not {str(size)[:60]}")
    for key in ("mean", "std"):
        values = preprocessing[key]
        _require(isinstance(values, list) and len(values) == channels and all(_is_number(v) for v in values),
                 f"preprocessing.{key}", f"must be {channels} finite number(s), one per channel, not {str(values)[:60]}")
    _require(all(value > 0 for value in preprocessing["std"]), "preprocessing.std",
             f"must be positive (it divides the pixels), not {preprocessing['std']}")


def _check_record(record: Any, required: tuple[str, ...]) -> None:
    _require(isinstance(record, dict), "the record", f"must be a JSON mapping, not a {type(record).__name__}")
    version = record.get("format_version", 0)
    _require(isinstance(version, int) and not isinstance(version, bool), "format_version", "must be a whole number")
    _require(isinstance(record.get("task", ""), str), "task", "must be a string")
    for key in required:
        _require(key in record, key, "is missing")
    if "architecture" in record:
        architecture = record["architecture"]
        _require(isinstance(architecture, dict), "architecture", "must be a mapping")
        _require(isinstance(architecture.get("name"), str) and architecture["name"] != "", "architecture.name",
                 "must be a model name")
        if "architecture" in required:
            _require("args" in architecture, "architecture.args", "is missing")
        _require(isinstance(architecture.get("args", {}), dict), "architecture.args", "must be a mapping")
        _check_numbers(architecture.get("args", {}), "architecture.args")
    if "classes" in record:
        classes = record["classes"]
        _require(isinstance(classes, list) and 1 <= len(classes) <= MAX_CLASSES, "classes",
                 f"must be a list of 1 to {MAX_CLASSES:,} class names")
        _require(all(isinstance(name, str) for name in classes), "classes", "must all be strings")
        _require(len(set(classes)) == len(classes), "classes", "must be distinct names")
    if "preprocessing" in record:
        _check_preprocessing(record["preprocessing"])


# What rebuilding and running a model needs (cnnkit.tasks.base.rebuild_model, exported files' metadata).
MODEL_KEYS = ("architecture", "classes", "preprocessing")


def validate_record(record: Any, source: str | Path = "the record", required: tuple[str, ...] = ()) -> None:
    """Check a checkpoint record (or an exported file's metadata) against the schema in the module docstring.

    Args:
        record: The parsed JSON.
        source: The file it came from, for the message.
        required: Keys that must be present (`MODEL_KEYS` where a model is rebuilt); the others are checked
            when present.

    Raises:
        CheckpointError: "<source>: invalid cnnkit record: <field> <what is wrong>; <what to do>" (a
            format_version newer than this cnnkit included).
    """
    try:
        _check_record(record, required)
    except _Invalid as problem:
        raise CheckpointError(f"{source}: invalid cnnkit record: {problem}; the file is damaged or was not written "
                              "by cnnkit: retrain, export again or restore it from a copy") from None
    if record.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{source} was written by a newer cnnkit (format {record['format_version']}); "
                              "upgrade cnnkit to read it")


def prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Prefix every key: prefixed('model.', {'w': t}) -> {'model.w': t}."""
    return {prefix + name: tensor for name, tensor in state.items()}


def unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors whose names start with `prefix`, with the prefix removed."""
    return {name[len(prefix):]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON (hyper-parameters, scalars)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           saved: dict[str, Any]) -> None:
    """Inverse of `optimizer_to_tensors`: restore the optimizer's state in place."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in unprefixed("optimizer.", tensors).items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for name, value in saved["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def truncate_metrics(metrics_path: Path, last_epoch: int) -> None:
    """Keep metrics.jsonl's lines of epochs up to `last_epoch` (the last commit point), each epoch once: a kill
    between an epoch's metrics line and its `last` checkpoint must not leave it twice after the resume."""
    if not metrics_path.is_file():
        return
    kept, seen_epochs = [], set()
    lines = metrics_path.read_text().splitlines()
    for line in lines:
        try:
            epoch = json.loads(line)["epoch"]
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by the kill
        if epoch <= last_epoch and epoch not in seen_epochs:
            kept.append(line)
            seen_epochs.add(epoch)
    if len(kept) != len(lines):
        atomic_write_text(metrics_path, "".join(line + "\n" for line in kept))
