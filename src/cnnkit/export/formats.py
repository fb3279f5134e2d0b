"""The export formats: how each writes a model with cnnkit's metadata, loads it back and reads the metadata.

| format         | file               | metadata (JSON, key/name "cnnkit")      | runs with                         |
|----------------|--------------------|-----------------------------------------|-----------------------------------|
| `onnx`         | `.onnx`            | ModelProto.metadata_props["cnnkit"]     | ONNX Runtime, OpenVINO, others    |
| `torchscript`  | `.torchscript.pt`  | extra file `cnnkit.json` in the archive | torch.jit.load (C++ libtorch too) |
| `torch-export` | `.pt2`             | extra file `cnnkit.json` in the archive | torch.export.load                 |

The metadata is the checkpoint's own record (task, architecture, class names, preprocessing, training
config, versions) plus an "export" entry describing the input and output, so an exported file is as
self-describing as the run it came from. Every format takes one float32 input (B, C, H, W), already
normalized with the stored mean/std, and returns the logits (B, K) (softmax gives probabilities).

Which exporter, by trying (torch 2.14): ONNX is written by `torch.onnx.export(dynamo=True)`, the
torch.export-based exporter, PyTorch's default since 2.9. It exported fastnet, resnet50,
mobilenet_v3_large, googlenet, vit_small, swin_t, coatnet_0, efficientnet_b0, ghostnet, densenet121,
convnext_tiny, lenet5 and a YAML-spec CNN, each matching PyTorch within 3.1e-5 in ONNX Runtime. The older
TorchScript-based exporter (dynamo=False) also worked on the three benchmark models and is 8x faster to
export (resnet50: 0.5 s vs 4 s), but it is deprecated and its graphs have more nodes (169 vs 122).

TorchScript uses `torch.jit.trace`, which PyTorch has deprecated in favour of torch.export (its
FutureWarnings are silenced here); tracing records the one path the example input took through Python
control flow, which is the kind of silent error the parity check exists to catch. torch.export needs a
batch of 2 in the example to keep the batch dimension dynamic (it specializes sizes 0 and 1).

TorchScript and .pt2 files are code (`runs_code`): torch.jit.load runs the archive's TorchScript
(`__setstate__` at load, `forward` at predict) and torch.export.load unpickles with weights_only=False.
cnnkit.export.load_predictor loads them only when told to trust them. Their metadata is read from the zip
archive directly (`<archive>/extra/cnnkit.json`), without loading anything, so `cnnkit predict` can name
the task of a file it then refuses.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from cnnkit.export.errors import ExportError
from cnnkit.export.runtimes import onnxruntime_model

METADATA_KEY = "cnnkit"
METADATA_FILE = "cnnkit.json"
MAX_METADATA_BYTES = 16 * 2**20  # a record is a few kB; more is not cnnkit's
INPUT_NAME, OUTPUT_NAME = "input", "logits"


@dataclass(frozen=True)
class ExportFormat:
    """One format: `write(model, example, path, metadata_json, dynamic_batch)`, `load(path) -> module`,
    `read_metadata(path) -> dict`, and `check(path)` for format-level validation (onnx.checker).
    `runs_code`: loading the file runs code its author wrote (TorchScript, pickles)."""

    name: str
    suffix: str
    exporter: str
    write: Callable[[nn.Module, torch.Tensor, Path, str, bool], None]
    load: Callable[[Path], nn.Module]
    read_metadata: Callable[[Path], dict[str, Any]]
    check: Callable[[Path], None] | None = None
    runs_code: bool = False


def _batch_dim(dynamic_batch: bool):
    """dynamic_shapes for the one input: a named dynamic batch dimension, or None (all sizes fixed)."""
    return ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None


def _parse(text: str | bytes | None, path: Path) -> dict[str, Any]:
    if not text:
        raise ExportError(f"{path} has no cnnkit metadata: it was not written by `cnnkit export`; "
                          "export the run again, or use the run directory instead")
    if len(text) > MAX_METADATA_BYTES:
        raise ExportError(f"{path}: its cnnkit metadata is {len(text):,} bytes, more than a record can be "
                          f"({MAX_METADATA_BYTES:,}); export the run again")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        reason = str(error)[:200] if isinstance(error, ValueError) else "nested too deeply"
        raise ExportError(f"{path}: its cnnkit metadata is not valid JSON ({reason}); the file is damaged or "
                          "was not written by `cnnkit export`: export the run again") from None


def _read_archive_metadata(path: Path) -> dict[str, Any]:
    """The cnnkit.json of a TorchScript or .pt2 zip archive, read without loading (running) anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [info for info in archive.infolist()
                     if info.filename.count("/") == 2 and info.filename.endswith(f"/extra/{METADATA_FILE}")]
            if not names:
                return _parse(None, path)
            if names[0].file_size > MAX_METADATA_BYTES:
                return _parse(b" " * (MAX_METADATA_BYTES + 1), path)
            with archive.open(names[0]) as file:
                text = file.read(MAX_METADATA_BYTES + 1)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as error:
        raise ExportError(f"{path} is not a readable TorchScript or .pt2 archive ({error}); export the run again") from None
    return _parse(text, path)


# ---------------------------------------------------------------- ONNX
def _write_onnx(model: nn.Module, example: torch.Tensor, path: Path, metadata: str, dynamic_batch: bool) -> None:
    program = torch.onnx.export(model, (example,), dynamo=True, verbose=False, input_names=[INPUT_NAME],
                                output_names=[OUTPUT_NAME], dynamic_shapes=_batch_dim(dynamic_batch))
    program.model.metadata_props[METADATA_KEY] = metadata
    program.save(str(path))


def _read_onnx_metadata(path: Path) -> dict[str, Any]:
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise ExportError(f"{path} is not a readable ONNX file ({error}); export the run again") from None
    return _parse({entry.key: entry.value for entry in proto.metadata_props}.get(METADATA_KEY), path)


def _check_onnx(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)  # full_check: also ONNX shape inference
    except onnx.checker.ValidationError as error:
        raise ExportError(f"the exported ONNX model fails onnx.checker: {error}") from None


# ---------------------------------------------------------------- TorchScript
def _write_torchscript(model: nn.Module, example: torch.Tensor, path: Path, metadata: str, dynamic_batch: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.trace is deprecated": documented above
        traced = torch.jit.trace(model, example, check_trace=False)  # the parity check is the better check
        torch.jit.save(traced, str(path), _extra_files={METADATA_FILE: metadata})


def _load_torchscript(path: Path, extra_files: dict[str, Any] | None = None) -> nn.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu", _extra_files=extra_files or {}).eval()
    except Exception as error:  # noqa: BLE001 - RuntimeError with the C++ reason
        raise ExportError(f"{path} is not a readable TorchScript file ({str(error).splitlines()[0]})") from None


# ---------------------------------------------------------------- torch.export
def _write_torch_export(model: nn.Module, example: torch.Tensor, path: Path, metadata: str,
                        dynamic_batch: bool) -> None:
    program = torch.export.export(model, (example,), dynamic_shapes=_batch_dim(dynamic_batch))
    torch.export.save(program, str(path), extra_files={METADATA_FILE: metadata})


def _load_program(path: Path, extra_files: dict[str, Any] | None = None):
    try:
        return torch.export.load(str(path), extra_files=extra_files)
    except Exception as error:  # noqa: BLE001 - zip, JSON and deserialization errors
        raise ExportError(f"{path} is not a readable torch.export (.pt2) file ({str(error).splitlines()[0]})") from None


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat("onnx", ".onnx", "torch.onnx.export(dynamo=True)", _write_onnx, onnxruntime_model,
                         _read_onnx_metadata, _check_onnx),
    "torchscript": ExportFormat("torchscript", ".torchscript.pt", "torch.jit.trace", _write_torchscript,
                                _load_torchscript, _read_archive_metadata, runs_code=True),
    "torch-export": ExportFormat("torch-export", ".pt2", "torch.export.export", _write_torch_export,
                                 lambda path: _load_program(path).module(), _read_archive_metadata, runs_code=True),
}


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise ExportError(f"unknown export format {name!r}; choose from {', '.join(FORMATS)}")
    return FORMATS[name]


def format_of_file(path: str | Path) -> ExportFormat | None:
    """The format of an exported file by its name (.onnx, .torchscript.pt or .pt, .pt2), or None."""
    name = Path(path).name.lower()
    if name.endswith(".onnx"):
        return FORMATS["onnx"]
    if name.endswith(".pt2"):
        return FORMATS["torch-export"]
    if name.endswith((".torchscript.pt", ".torchscript", ".pt")):
        return FORMATS["torchscript"]
    return None
