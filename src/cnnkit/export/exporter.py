"""`cnnkit export`: write a trained run as ONNX, TorchScript or torch.export, checked against PyTorch.

    result = export_run("runs/RUN", "onnx", dynamic_batch=True)
    result.path        # runs/RUN/export/best.onnx
    result.parity      # {"tolerance": 1e-4, "max_abs_diff": {"batch_1": 2.4e-07, "batch_4": 3.1e-07}, ...}

Steps, in order, each of which can stop the export with a clear error:

1. load the run's checkpoint (cnnkit.load) and build the PyTorch model in fp32 on the CPU;
2. write the exported model, with its metadata embedded (formats.py), to a temporary file beside the target;
3. validate the file with the format's own checker (onnx.checker, with shape inference, for ONNX);
4. load it back (ONNX Runtime for ONNX) and compare it with PyTorch at batch 1 and 4 (parity.py);
5. only then move it into place (an atomic rename) and write `<file>.json` beside it: the metadata plus
   the parity numbers and the SHA-256 of the checkpoint it came from.

So the target path only ever holds an export that passed its parity check.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cnnkit.data.preprocess import Preprocessing
from cnnkit.files import atomic_write_text, current_umask
from cnnkit.export.errors import ExportError
from cnnkit.export.formats import INPUT_NAME, OUTPUT_NAME, ExportFormat, get_format
from cnnkit.export.parity import DEFAULT_TOLERANCE, check_parity, parity_inputs

@dataclass(frozen=True)
class ExportResult:
    """Where an export went and how well it matched PyTorch."""

    path: Path
    format: str
    metadata_path: Path
    parity: dict[str, Any]
    seconds: float

    def summary(self) -> str:
        differences = ", ".join(f"batch {key.split('_')[1]} {value:.2g}"
                                for key, value in self.parity["max_abs_diff"].items())
        return (f"wrote {self.path} ({self.format}, {self.path.stat().st_size / 2**20:.1f} MiB, {self.seconds:.1f} s); "
                f"parity with PyTorch: max abs difference {differences} (tolerance {self.parity['tolerance']:g}); "
                f"metadata: {self.metadata_path}")


def sidecar_path(path: str | Path) -> Path:
    """`model.onnx` -> `model.onnx.json`: the readable metadata written beside every export."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_export_path(run_dir: Path, checkpoint: str, export_format: ExportFormat) -> Path:
    return run_dir / "export" / f"{checkpoint}{export_format.suffix}"


def export_run(run: str | Path, format: str = "onnx", out: str | Path | None = None, dynamic_batch: bool = False,
               checkpoint: str = "best", tolerance: float = DEFAULT_TOLERANCE) -> ExportResult:
    """Export a run's checkpoint; the Python twin of `cnnkit export`.

    Args:
        run: A run directory (or one of its .safetensors checkpoints).
        format: "onnx", "torchscript" or "torch-export".
        out: The file to write; default RUN_DIR/export/<checkpoint><suffix> (best.onnx, best.torchscript.pt,
            best.pt2).
        dynamic_batch: Make the batch dimension dynamic (any batch size); otherwise it is fixed to 1.
        checkpoint: "best" or "last".
        tolerance: Largest max-abs difference of the logits allowed by the parity check.

    Raises:
        CheckpointError: The run or checkpoint is missing or unreadable.
        ExportError: The model cannot be exported in this format, or fails the format's checker.
        ParityError: The exported model disagrees with PyTorch by more than `tolerance`.
    """
    from cnnkit.tasks import load_run

    classifier = load_run(run, device="cpu", checkpoint=checkpoint)
    checkpoint_file = Path(run) if Path(run).suffix == ".safetensors" else Path(run) / f"{checkpoint}.safetensors"
    export_format = get_format(format)
    path = Path(out) if out else default_export_path(checkpoint_file.parent, checkpoint_file.stem, export_format)
    source = {"checkpoint": str(checkpoint_file), "sha256": file_sha256(checkpoint_file)}
    return export_model(classifier.model, classifier.record, format, path, dynamic_batch, tolerance, source)


def export_model(model: nn.Module, record: dict[str, Any], format: str, path: str | Path, dynamic_batch: bool = False,
                 tolerance: float = DEFAULT_TOLERANCE, source: dict[str, Any] | None = None) -> ExportResult:
    """Export any model with a cnnkit record (task, classes, preprocessing ...) to `path`, parity-checked.

    The model is exported in fp32 on the CPU. The caller's model is left as it was: one already in fp32 on the
    CPU is used as it is (in eval mode for the export, its mode restored after); one on a GPU or in another
    dtype is copied, and the copy moved. See `export_run` for the arguments and errors.
    """
    started = time.perf_counter()
    from cnnkit.tasks import task_info

    if not task_info(record.get("task")).exportable:
        raise ExportError(f"exporting {record['task']} runs is not supported yet (only classification)")
    export_format = get_format(format)
    path = Path(path)
    preprocessing = Preprocessing.from_dict(record["preprocessing"])
    modes = [(module, module.training) for module in model.modules()]  # e.g. frozen BatchNorm stays in eval
    try:
        return _export(_cpu_fp32(model).eval(), record, export_format, path, dynamic_batch, tolerance, source,
                       preprocessing, started)
    finally:
        for module, training in modes:
            module.training = training


def _cpu_fp32(model: nn.Module) -> nn.Module:
    """`model` if all its parameters and buffers are fp32 (or integer) CPU tensors, else a CPU fp32 copy."""
    tensors = [*model.parameters(), *model.buffers()]
    if all(t.device.type == "cpu" and (t.dtype == torch.float32 or not t.is_floating_point()) for t in tensors):
        return model
    return copy.deepcopy(model).to("cpu", torch.float32)


def _export(model: nn.Module, record: dict[str, Any], export_format: ExportFormat, path: Path, dynamic_batch: bool,
            tolerance: float, source: dict[str, Any] | None, preprocessing: Preprocessing,
            started: float) -> ExportResult:
    metadata = {**record, "export": {
        "format": export_format.name, "exporter": export_format.exporter, "torch": torch.__version__,
        "input": {"name": INPUT_NAME, "shape": ["batch" if dynamic_batch else 1, preprocessing.channels,
                                                *preprocessing.image_size],
                  "dtype": "float32", "layout": "NCHW",
                  "meaning": "images decoded and resized as in `preprocessing`, scaled to [0, 1], then (x - mean) / std"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch" if dynamic_batch else 1, len(record["classes"])],
                   "meaning": "logits in the order of `classes`; softmax gives probabilities"},
        "dynamic_batch": dynamic_batch, "source": source}}
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=export_format.suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(temporary_name)
    try:
        example = parity_inputs(preprocessing, 2 if dynamic_batch else 1)  # torch.export specializes a batch of 1
        try:
            with torch.no_grad():
                export_format.write(model, example, temporary, json.dumps(metadata, sort_keys=True), dynamic_batch)
        except Exception as error:  # noqa: BLE001 - exporters raise many types; the reason is what matters
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise ExportError(f"cannot export {record['architecture']['name']} as {export_format.name}: {reason} "
                              f"(rerun with --debug for the exporter's full message, or try another --format)") from error
        if export_format.check is not None:
            export_format.check(temporary)
        exported = export_format.load(temporary)
        parity = check_parity(model, exported, preprocessing, dynamic_batch, tolerance,
                              label=f"the {export_format.name} export of {record['architecture']['name']}")
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp's 0600 otherwise: as cnnkit.files.atomic_write
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    checks = ["onnx.checker (full_check)"] if export_format.check is not None else []
    atomic_write_text(sidecar_path(path), json.dumps({**metadata, "parity": parity, "checks": checks + ["parity"]},
                                                     indent=2, sort_keys=True) + "\n")
    return ExportResult(path, export_format.name, sidecar_path(path), parity, time.perf_counter() - started)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The cnnkit metadata embedded in an exported file (.onnx, .torchscript.pt, .pt2)."""
    from cnnkit.export.formats import format_of_file

    export_format = format_of_file(path)
    if export_format is None:
        raise ExportError(f"{path}: not an exported model (.onnx, .torchscript.pt or .pt2)")
    if not Path(path).is_file():
        raise ExportError(f"exported model {path} does not exist")
    from cnnkit.engine.checkpoint import MODEL_KEYS, upgrade_record

    record = upgrade_record(export_format.read_metadata(Path(path)), path, MODEL_KEYS)
    export = record.get("export")
    if not isinstance(export, dict) or not isinstance(export.get("dynamic_batch"), bool):
        raise ExportError(f"{path}: its cnnkit metadata has no valid 'export' entry (dynamic_batch); the file is "
                          "damaged or was not written by `cnnkit export`: export the run again")
    return record
