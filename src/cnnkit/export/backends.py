"""Inference backends for `cnnkit predict --backend` and `cnnkit serve`: one Classifier, four engines.

    classifier = load_predictor("runs/RUN", backend="auto")     # or torch, onnxruntime, openvino
    classifier.predict(["shoe.png"], top_k=3)                    # the same API as cnnkit.load(...)

- `torch`: the PyTorch model from the checkpoint (`cnnkit.load`), eager fp32.
- `onnxruntime`, `openvino`: the run exported to ONNX with a dynamic batch, parity-checked (exporter.py),
  and cached in RUN_DIR/export/cache/<checkpoint>.onnx. The cache is reused while the SHA-256 of the
  checkpoint matches the one recorded beside it, and rebuilt otherwise (a resumed run, a new best epoch).
  An exported .onnx file can be given instead of a run directory.
- `auto`: the path measured for this run, when `cnnkit export RUN --choose-backend` recorded one
  (cnnkit.export.decide: the fastest of OpenVINO fp32/bf16 and ONNX Runtime whose top-1 answers agree with
  PyTorch fp32 on >= 99.5% of the run's own validation images; bf16 only where that holds). Otherwise the
  fastest fp32 path measured by benchmarks/inference.py on this CPU (2 Zen 4 cores): `AUTO_RUNTIMES`, the
  first that works, else PyTorch; every fp32 path is parity-checked to 1e-4.
  On a GPU (`--device cuda`) `auto` is PyTorch: these ONNX runtimes are set up for the CPU here.

Exported TorchScript (.torchscript.pt) and torch.export (.pt2) files run with the `torch` backend, and only with
`trust_code=True` (`--trust-code`): loading them runs code their author wrote (torch.jit.load runs TorchScript,
torch.export.load unpickles with weights_only=False), as Hugging Face's `trust_remote_code` says of model code.
The SHA-256 of a trusted file is printed, so what ran can be told apart. ONNX files (a graph, no code) and run
directories (safetensors, never a pickle) need no flag.
Every backend returns the run's task predictor (a `cnnkit.tasks.classification.Classifier`), whose `model` is an nn.Module (a RuntimeModel for the ONNX
engines), so predict, predict_proba and evaluate work the same on all of them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

from cnnkit.errors import CheckpointError, ConfigError
from cnnkit.export.errors import ExportError
from cnnkit.export.runtimes import RUNTIMES, SingleImageModel, runtime_model

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
# Fastest first, from benchmarks/results/inference.md; PyTorch when no ONNX path works.
AUTO_RUNTIMES = ["openvino", "onnxruntime"]


def _note(message: str) -> None:
    print(f"cnnkit: {message}", file=sys.stderr, flush=True)


def cached_onnx(run: str | Path, checkpoint: str = "best", log: Callable[[str], None] = _note) -> Path:
    """The run's checkpoint as a parity-checked, dynamic-batch ONNX file in RUN_DIR/export/cache/, made if stale."""
    from cnnkit.export.exporter import export_run, file_sha256, sidecar_path

    run = Path(run)
    run_dir, checkpoint_file = (run.parent, run) if run.suffix == ".safetensors" else (run, run / f"{checkpoint}.safetensors")
    if not checkpoint_file.is_file():
        raise CheckpointError(f"checkpoint {checkpoint_file} does not exist; pass the run directory that "
                              "`cnnkit train` printed")
    path = run_dir / "export" / "cache" / f"{checkpoint_file.stem}.onnx"
    digest = file_sha256(checkpoint_file)
    try:
        recorded = json.loads(sidecar_path(path).read_text())
        if path.is_file() and recorded["export"]["source"]["sha256"] == digest and recorded["export"]["dynamic_batch"]:
            return path
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or an unreadable one: export again
    try:
        result = export_run(checkpoint_file, "onnx", out=path, dynamic_batch=True, checkpoint=checkpoint_file.stem)
    except OSError as error:  # a read-only run directory, a full disk ...
        raise ExportError(f"cannot write the ONNX cache {path} ({error.strerror or error}); export it elsewhere with "
                          f"`cnnkit export {run_dir} --format onnx --dynamic-batch --out FILE.onnx` and pass "
                          "FILE.onnx instead of the run directory") from None
    log(f"exported {checkpoint_file} to ONNX once for the fast backends: {result.summary()}")
    return path


def _classifier(model, record: dict, run_dir: Path | None):
    """The run's task predictor (a Classifier) around an exported or runtime model, on the CPU."""
    import torch

    from cnnkit.tasks import task_info

    return task_info(record.get("task")).predictor(model, record, run_dir, torch.device("cpu"))


def _runtime_classifier(onnx_file: Path, runtimes: list[str], run_dir: Path | None):
    """A Classifier running `onnx_file` on the first of `runtimes` that loads (the others are noted and skipped)."""
    from cnnkit.export.exporter import read_metadata

    record = read_metadata(onnx_file)
    for index, runtime in enumerate(runtimes):
        try:
            return _classifier(runtime_model(runtime, onnx_file), record, run_dir)
        except (ExportError, ImportError) as error:
            if index == len(runtimes) - 1:
                raise
            _note(f"backend {runtime} unavailable ({error}); trying {runtimes[index + 1]}")
    raise ConfigError("no runtime given")


def check_trusted(path: Path, export_format, trust_code: bool) -> None:
    """Refuse a file that is code unless `trust_code`; print the SHA-256 of one that is trusted."""
    from cnnkit.export.exporter import file_sha256

    if not export_format.runs_code:
        return
    if not trust_code:
        how = ("torch.export.load unpickles it with weights_only=False" if export_format.name == "torch-export"
               else "torch.jit.load runs its TorchScript")
        raise ExportError(f"{path} is a {export_format.name} file, which is code: loading it runs whatever its author "
                          f"wrote ({how}). Pass --trust-code (Python: trust_code=True) only for a file you made or "
                          "trust, or run an ONNX export instead (`cnnkit export RUN_DIR --format onnx`), which needs "
                          "no flag")
    _note(f"trusting the code in {path} (--trust-code): sha256 {file_sha256(path)}")


def _load_exported(path: Path, backend: str, trust_code: bool = False):
    """A Classifier over an exported file: .onnx with a runtime, .torchscript.pt / .pt2 with torch (if trusted)."""
    from cnnkit.export.exporter import read_metadata
    from cnnkit.export.formats import format_of_file

    export_format = format_of_file(path)
    if export_format.name == "onnx":
        if backend == "torch":
            raise ConfigError(f"{path} is an ONNX file: run it with --backend onnxruntime or openvino (or auto), "
                              "or pass the run directory for --backend torch")
        return _runtime_classifier(path, [backend] if backend != "auto" else AUTO_RUNTIMES, None)
    if backend not in ("auto", "torch"):
        raise ConfigError(f"{path} is a {export_format.name} file, which runs with --backend torch; "
                          f"export the run with --format onnx for {backend}")
    record = read_metadata(path)
    check_trusted(path, export_format, trust_code)
    model = export_format.load(path)
    return _classifier(model if record["export"]["dynamic_batch"] else SingleImageModel(model), record, None)


def load_predictor(path: str | Path, backend: str = "auto", device: str = "auto", checkpoint: str = "best",
                   trust_code: bool = False):
    """A Classifier for a run directory, a checkpoint or an exported file, on the chosen backend.

    Args:
        path: A run directory, a .safetensors checkpoint, or an exported .onnx / .torchscript.pt / .pt2 file.
        backend: "auto", "torch", "onnxruntime" or "openvino" (see the module docstring).
        device: For the torch backend: "auto", "cpu", "cuda" ... The ONNX runtimes run on the CPU.
        checkpoint: "best" or "last", for run directories.
        trust_code: Load an exported TorchScript / .pt2 file, which runs code its author wrote (its SHA-256 is
            printed); without it such a file is refused. ONNX files and run directories need no trust.

    Raises:
        ConfigError: An unknown backend, or one that cannot run this kind of file.
        ExportError: A TorchScript / .pt2 file without trust_code.
        CheckpointError, ExportError: The run or file is unreadable, or the export failed its checks
            (with `auto`, a failed export falls back to PyTorch with a note instead).
    """
    from cnnkit.device import resolve_device
    from cnnkit.export.formats import format_of_file
    from cnnkit.tasks import load_run as load

    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    path = Path(path)
    if format_of_file(path) is not None:
        if not path.is_file():
            raise ExportError(f"exported model {path} does not exist")
        return _load_exported(path, backend, trust_code)
    if backend in RUNTIMES and device not in ("auto", "cpu"):
        raise ConfigError(f"--backend {backend} runs on the CPU; leave --device at auto or cpu")
    if backend == "torch" or (backend == "auto" and resolve_device(device).type != "cpu"):
        return load(path, device=device, checkpoint=checkpoint)
    run_dir = path if path.is_dir() else path.parent
    if backend == "auto":
        from cnnkit.export.decide import recorded_choice

        decision = recorded_choice(run_dir, checkpoint)  # measured on this run's images (cnnkit.export.decide)
        if decision is not None and decision["runtime"] == "torch":
            return load(path, device="cpu", checkpoint=checkpoint)
        try:
            onnx_file = cached_onnx(path, checkpoint)
        except ExportError as error:  # includes ParityError: auto only takes paths that match PyTorch
            _note(f"using PyTorch: the ONNX export did not succeed ({error})")
            return load(path, device="cpu", checkpoint=checkpoint)
        if decision is not None:
            from cnnkit.export.exporter import read_metadata
            from cnnkit.export.runtimes import onnxruntime_model, openvino_model

            try:
                model = (openvino_model(onnx_file, precision=decision["precision"]) if decision["runtime"] == "openvino"
                         else onnxruntime_model(onnx_file))
                return _classifier(model, read_metadata(onnx_file), run_dir)
            except (ExportError, ImportError) as error:
                _note(f"the recorded backend {decision['runtime']} {decision['precision']} is unavailable ({error}); "
                      "using the fp32 order")
        return _runtime_classifier(onnx_file, AUTO_RUNTIMES, run_dir)
    return _runtime_classifier(cached_onnx(path, checkpoint), [backend], run_dir)


def recorded_task(path: str | Path) -> str:
    """The task (cnnkit.task_table's name) of a run directory, checkpoint or exported file.

    A path that does not exist counts as the default task's: loading it then says what is missing.
    """
    from cnnkit.engine.checkpoint import read_record
    from cnnkit.export.exporter import read_metadata
    from cnnkit.export.formats import format_of_file
    from cnnkit.task_table import DEFAULT_TASK

    path = Path(path)
    if format_of_file(path) is not None:
        return read_metadata(path)["task"]
    checkpoint = path / "best.safetensors" if path.is_dir() else path
    if checkpoint.suffix != ".safetensors" or not checkpoint.is_file():
        return DEFAULT_TASK
    return read_record(checkpoint)["task"]
