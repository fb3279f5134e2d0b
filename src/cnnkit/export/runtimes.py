"""An ONNX file run by ONNX Runtime or OpenVINO on the CPU, behind the nn.Module interface.

    model = onnxruntime_model("runs/RUN/export/best.onnx")     # or openvino_model(...)
    logits = model(inputs)                                     # float32 (B, C, H, W) -> (B, K), like PyTorch

Wrapping the engines as an nn.Module lets the rest of cnnkit use them unchanged: `Classifier` (predict,
predict_proba, evaluate) and the parity check call `model(inputs)` and get a tensor back. The engines do
the work; this module only moves arrays in and out (zero-copy from torch to numpy).

Threads: both engines get `torch.get_num_threads()` intra-op threads, the same budget PyTorch has, so
`OMP_NUM_THREADS` and `torch.set_num_threads` govern every backend alike and comparisons are fair.

Precision: OpenVINO's CPU plugin runs in bf16 by default on CPUs with AVX512-BF16 or AMX (Zen 4 is one);
`openvino_model` asks for fp32 explicitly (INFERENCE_PRECISION_HINT f32) unless `precision="bf16"`, because
the fp32 path is the one checked against PyTorch to 1e-4. ONNX Runtime's CPU provider computes in fp32.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

import numpy
import torch
import torch.nn as nn

from cnnkit.export.errors import ExportError

RUNTIMES = ("onnxruntime", "openvino")
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}


def one_image_at_a_time(model: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
    """model(inputs) for a model whose batch dimension is fixed to 1: one call per image, outputs concatenated."""
    return torch.cat([model(inputs[index:index + 1]) for index in range(len(inputs))])


class SingleImageModel(nn.Module):
    """Wraps a PyTorch model exported with its batch fixed to 1 (a .pt2 file's guard rejects other sizes)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return one_image_at_a_time(self.model, inputs)


class RuntimeModel(nn.Module):
    """Calls `run` (numpy float32 (B, C, H, W) -> numpy logits) as if it were a PyTorch model.

    Args:
        run: The engine's inference function.
        fixed_batch: The batch size the file was exported with (1), or None for a dynamic batch;
            a fixed-batch model is fed one image at a time.
        runtime: The engine's name, "onnxruntime" or "openvino".
        source: The ONNX file it runs.
    """

    def __init__(self, run: Callable[[numpy.ndarray], numpy.ndarray], fixed_batch: int | None, runtime: str,
                 source: str | Path):
        super().__init__()
        description = f"{runtime}: {source}"
        if fixed_batch not in (None, 1):
            raise ExportError(f"{description}: the batch dimension is fixed to {fixed_batch}; cnnkit runs files "
                              "with batch 1 or a dynamic batch (re-export with or without --dynamic-batch)")
        self.run, self.fixed_batch, self.runtime, self.description = run, fixed_batch, runtime, description

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.fixed_batch is not None and len(inputs) > 1:
            return one_image_at_a_time(self, inputs)
        array = inputs.detach().to("cpu", torch.float32).contiguous().numpy()  # shares memory with `inputs`
        return torch.from_numpy(numpy.asarray(self.run(array)))

    def extra_repr(self) -> str:
        return self.description


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def onnxruntime_model(path: str | Path, threads: int | None = None) -> RuntimeModel:
    """An ONNX file in an ONNX Runtime CPU session (all graph optimizations on, fp32)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # No spin-waiting between runs: spinning threads take the cores from PyTorch, OpenVINO and the server's
    # other work (measured: eager resnet50 in the same process went from 37 ms to 1.5 s per image on 2 cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types per failure
        raise ExportError(f"ONNX Runtime cannot load {path}: {_first_line(error)}") from None
    model_input = session.get_inputs()[0]
    batch = model_input.shape[0]

    def run(array: numpy.ndarray) -> numpy.ndarray:
        return session.run(None, {model_input.name: array})[0]  # session.run is thread-safe

    return RuntimeModel(run, batch if isinstance(batch, int) else None, "onnxruntime", path)


def openvino_model(path: str | Path, threads: int | None = None, precision: str = "fp32") -> RuntimeModel:
    """An ONNX file compiled by OpenVINO for the CPU, in fp32 (default) or bf16."""
    import openvino

    if precision not in OPENVINO_PRECISIONS:
        raise ExportError(f"OpenVINO precision must be one of {', '.join(OPENVINO_PRECISIONS)}, got {precision!r}")
    config = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],
              "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
    try:
        compiled = openvino.Core().compile_model(str(path), "CPU", config)
    except Exception as error:  # noqa: BLE001 - OpenVINO raises RuntimeError with long C++ messages
        raise ExportError(f"OpenVINO cannot compile {path}: {_first_line(error)}") from None
    shape = compiled.input(0).get_partial_shape()
    batch = None if shape[0].is_dynamic else shape[0].get_length()
    local = threading.local()  # an infer request is not thread-safe: one per thread

    def run(array: numpy.ndarray) -> numpy.ndarray:
        if not hasattr(local, "request"):
            local.request = compiled.create_infer_request()
        return local.request.infer({0: array})[0]  # a copy (share_outputs=False), safe to keep

    return RuntimeModel(run, batch, "openvino" if precision == "fp32" else f"openvino-{precision}", path)


def runtime_model(runtime: str, path: str | Path, threads: int | None = None) -> RuntimeModel:
    """`onnxruntime_model` or `openvino_model` (fp32) by name."""
    if runtime == "onnxruntime":
        return onnxruntime_model(path, threads)
    if runtime == "openvino":
        return openvino_model(path, threads)
    raise ExportError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
