"""Checkpoints: safetensors tensors plus a JSON record, written atomically, never pickled code.

One checkpoint is one `.safetensors` file. Its tensors are the model weights (and, for `last`, the
optimizer and EMA state needed to resume); its metadata holds the JSON record under the key "cnnkit":
architecture name and arguments, class names, task, preprocessing, metrics and versions. Keeping the
record inside the same file makes the pair atomic. A readable copy of the record is written beside it
as `<name>.json` for people and tools; loading reads only the safetensors file.

Atomic: write a temporary file in the same directory, fsync it, rename it over the target, fsync the
directory. A crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
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
    record = json.loads(metadata[RECORD_KEY])
    if record.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer cnnkit (format {record['format_version']}); "
                              "upgrade cnnkit to read it")
    return upgrade_record(record)


def upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record as this version reads it: the task named as in cnnkit.task_table (older runs say
    "classification", or nothing). Checkpoints and exported files' metadata both pass through here."""
    task = canonical_task(record.get("task"))
    return record if record.get("task") == task else {**record, "task": task}


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
