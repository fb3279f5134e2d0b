"""An ONNX file run by ONNX Runtime or OpenVINO on the CPU, behind the nn.Module interface.

    model = onnxruntime_model("runs/RUN/export/best.onnx")     # or openvino_model(...)
    logits = model(inputs)                                     # float32 (B, C, H, W) -> (B, K), like PyTorch

Wrapping the engines as an nn.Module lets the rest of cnnkit use them unchanged: `Classifier` (predict,
predict_proba, evaluate) and the parity check call `model(inputs)` and get a tensor back. The engines do
the work; this module only moves arrays in and out (zero-copy from torch to numpy).

Threads: both engines get `torch.get_num_threads()` intra-op threads, the same budget PyTorch has, so
`OMP_NUM_THREADS` and `torch.set_num_threads` govern every backend alike and comparisons are fair.

Settings, each chosen by interleaved measurement on this machine (2 cores shared with another 1-thread job;
/tmp micro-benchmarks, best p50 of 3-5 rounds at batch 1; numbers in the comments where each is set):
- ONNX Runtime does not spin-wait (the default, `spinning=False`): with the second core busy, spinning doubled
  its batch-1 latency; see `onnxruntime_model`.
- OpenVINO compiles the model at a static batch size for each size it is given (up to `OPENVINO_STATIC_BATCHES`
  sizes, then one dynamic-batch compilation); see `openvino_model`.
- Tried and not adopted (no gain beyond the noise, about 5%): ORT `session.set_denormal_as_zero`,
  `session.dynamic_block_base=4` (3-6% slower), a static-batch ONNX file for ORT (50.04 vs 50.17 ms resnet50,
  4.07 vs 4.01 ms mobilenet_v3_large, 1 thread); OpenVINO PERFORMANCE_HINT THROUGHPUT (5.07 vs 4.79 ms),
  ENABLE_CPU_PINNING False (4.61 vs 4.79 ms, within the rounds' spread of 4.6-5.7), CPU_DENORMALS_OPTIMIZATION
  (4.72 ms); the legacy TorchScript-based ONNX exporter (same op types: HardSwish, HardSigmoid and Conv stay whole
  in the dynamo export; 3.90 vs 3.93 ms in OpenVINO, 4.30 vs 4.07 ms in ORT, mobilenet_v3_large).

Precision: OpenVINO's CPU plugin runs in bf16 by default on CPUs with AVX512-BF16 or AMX (Zen 4 is one);
`openvino_model` asks for fp32 explicitly (INFERENCE_PRECISION_HINT f32) unless `precision="bf16"`, because
the fp32 path is the one checked against PyTorch to 1e-4. ONNX Runtime's CPU provider computes in fp32.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import numpy
import torch
import torch.nn as nn

from cnnkit.export.errors import ExportError

RUNTIMES = ("onnxruntime", "openvino")
OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16"}
# Distinct batch sizes OpenVINO compiles a static-shape model for (Classifier.predict sends 256-image chunks
# and a smaller last one; the server sends 1): enough for those, bounded so odd sizes cannot pile up copies.
OPENVINO_STATIC_BATCHES = 4


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
        engine: The engine's own object (an onnxruntime.InferenceSession, or the OpenVINO runner with its
            compiled models), for inspection.
    """

    def __init__(self, run: Callable[[numpy.ndarray], numpy.ndarray], fixed_batch: int | None, runtime: str,
                 source: str | Path, engine: Any = None):
        super().__init__()
        description = f"{runtime}: {source}"
        if fixed_batch not in (None, 1):
            raise ExportError(f"{description}: the batch dimension is fixed to {fixed_batch}; cnnkit runs files "
                              "with batch 1 or a dynamic batch (re-export with or without --dynamic-batch)")
        self.run, self.fixed_batch, self.runtime, self.description = run, fixed_batch, runtime, description
        self.engine = engine

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.fixed_batch is not None and len(inputs) > 1:
            return one_image_at_a_time(self, inputs)
        array = inputs.detach().to("cpu", torch.float32).contiguous().numpy()  # shares memory with `inputs`
        return torch.from_numpy(numpy.asarray(self.run(array)))

    def extra_repr(self) -> str:
        return self.description


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def onnxruntime_model(path: str | Path, threads: int | None = None, spinning: bool = False) -> RuntimeModel:
    """An ONNX file in an ONNX Runtime CPU session (all graph optimizations on, fp32).

    Args:
        path: The .onnx file.
        threads: Intra-op threads; default torch.get_num_threads().
        spinning: Let the worker threads spin-wait for work instead of sleeping. Off by default: it only pays
            on cores nobody else uses. Measured here at 2 threads, batch 1, with the other core busy (another
            process's 1-thread job), ORT's p50 with spinning vs without: mobilenet_v3_large 11.5 vs 5.6 ms,
            resnet50 94.0 vs 52.6 ms. Spinning threads also take the cores from PyTorch and OpenVINO in the
            same process (earlier measurement: eager resnet50 went from 37 ms to 1.5 s per image), which the
            server's Grad-CAM model shares. With one thread there are no workers and it makes no difference.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types per failure
        raise ExportError(f"ONNX Runtime cannot load {path}: {_first_line(error)}") from None
    model_input = session.get_inputs()[0]
    batch = model_input.shape[0]

    def run(array: numpy.ndarray) -> numpy.ndarray:
        return session.run(None, {model_input.name: array})[0]  # session.run is thread-safe

    return RuntimeModel(run, batch if isinstance(batch, int) else None, "onnxruntime", path, session)


def openvino_model(path: str | Path, threads: int | None = None, precision: str = "fp32") -> RuntimeModel:
    """An ONNX file compiled by OpenVINO for the CPU, in fp32 (default) or bf16.

    A dynamic-batch file is compiled once per batch size it is given, at that static size (batch 1 at load
    time, others when first seen; after `OPENVINO_STATIC_BATCHES` sizes, one dynamic-batch compilation serves
    the rest). Static shapes let the CPU plugin plan memory and pick kernels for the exact size. Measured
    (1 thread, interleaved, best p50 of 3-5 rounds), dynamic vs static compilation: batch 1 mobilenet_v3_large
    5.42 vs 4.79 ms and 4.37 vs 4.14 ms (two runs), resnet50 53.3 vs 51.5 ms, fastnet 0.37 vs 0.35 ms; batch 32
    mobilenet_v3_large 191 vs 175 ms, resnet50 1637 vs 1654 ms (no difference). A compilation takes 0.16 s
    (resnet50) and one copy of the weights.
    """
    if precision not in OPENVINO_PRECISIONS:
        raise ExportError(f"OpenVINO precision must be one of {', '.join(OPENVINO_PRECISIONS)}, got {precision!r}")
    config = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],
              "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
    runner = _OpenVINORunner(path, config)
    runner.compiled_for(1)  # errors at load time, and no compilation in the first request's latency
    return RuntimeModel(runner, runner.fixed_batch, "openvino" if precision == "fp32" else f"openvino-{precision}",
                        path, runner)


class _OpenVINORunner:
    """numpy (B, C, H, W) -> logits with one OpenVINO compilation per batch size (see `openvino_model`).

    `compiled` maps a batch size to its CompiledModel (None: the dynamic-batch one). Thread-safe: compiling
    is under a lock, and each thread has its own infer requests.
    """

    def __init__(self, path: str | Path, config: dict):
        import openvino

        self.openvino, self.path, self.config, self.core = openvino, path, config, openvino.Core()
        try:
            self.model = self.core.read_model(str(path))
        except Exception as error:  # noqa: BLE001 - OpenVINO raises RuntimeError with long C++ messages
            raise ExportError(f"OpenVINO cannot read {path}: {_first_line(error)}") from None
        self.shape = self.model.input(0).get_partial_shape()
        self.fixed_batch = None if self.shape[0].is_dynamic else self.shape[0].get_length()
        self.reshapable = self.fixed_batch is None and all(size.is_static for size in list(self.shape)[1:])
        self.compiled: dict[int | None, Any] = {}
        self._lock, self._local = threading.Lock(), threading.local()

    def compiled_for(self, batch: int):
        with self._lock:
            static = self.reshapable and (batch in self.compiled or len(self.compiled) < OPENVINO_STATIC_BATCHES)
            key = batch if static else None
            if key not in self.compiled:
                model = self.model
                if key is not None:
                    model = self.model.clone()
                    model.reshape({model.input(0): self.openvino.PartialShape([key, *list(self.shape)[1:]])})
                try:
                    self.compiled[key] = self.core.compile_model(model, "CPU", self.config)
                except Exception as error:  # noqa: BLE001
                    raise ExportError(f"OpenVINO cannot compile {self.path}: {_first_line(error)}") from None
            return self.compiled[key]

    def __call__(self, array: numpy.ndarray) -> numpy.ndarray:
        compiled = self.compiled_for(len(array))
        requests = self._local.__dict__.setdefault("requests", {})  # an infer request is not thread-safe
        if id(compiled) not in requests:
            requests[id(compiled)] = compiled.create_infer_request()
        return requests[id(compiled)].infer({0: array})[0]  # a copy (share_outputs=False), safe to keep


def runtime_model(runtime: str, path: str | Path, threads: int | None = None) -> RuntimeModel:
    """`onnxruntime_model` or `openvino_model` (fp32) by name."""
    if runtime == "onnxruntime":
        return onnxruntime_model(path, threads)
    if runtime == "openvino":
        return openvino_model(path, threads)
    raise ExportError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
