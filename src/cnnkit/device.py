"""Where and in what precision a run computes: device and autocast dtype resolution, library versions.

Ground floor: imports torch and nothing from cnnkit but its errors, so the engine, the tasks, export and
the API share one answer to "which device" and "which precision".
"""

from __future__ import annotations

import os
import platform

import torch

from cnnkit.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """`auto` -> CUDA when there is a GPU, else the CPU; a named device is checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA GPU is available; use device=cpu or auto")
    return device


def training_device(name: str) -> torch.device:
    """`resolve_device`, with a bare "cuda" pinned to this process's GPU under torchrun (LOCAL_RANK)."""
    device = resolve_device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None means fp32, no autocast)."""
    if precision == "fp32":
        return None
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("precision=fp16 needs a CUDA device; on the CPU use precision=bf16 or fp32")
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    # auto: bf16 where the hardware runs it natively (AVX-512 BF16 / AMX on CPU, Ampere+ on CUDA).
    if device.type == "cuda":
        return torch.bfloat16 if cuda_bf16_native(device) else torch.float16
    if device.type == "cpu" and cpu_bf16_native():
        return torch.bfloat16
    return None


def cpu_bf16_native() -> bool:
    """Whether this CPU computes bf16 in hardware: AVX-512 BF16 or AMX on x86; oneDNN's own check elsewhere.

    Not oneDNN's `_is_mkldnn_bf16_supported()` alone: on x86 it is true for any AVX-512 CPU, where bf16 is
    emulated. Measured on a 2-core Intel Xeon (family 6 model 207) whose AVX-512 lacks BF16 and AMX: a fastnet
    training step (batch 256, channels_last, 2 threads) did 1,608 images/s in fp32 and 489 in bf16, 3.3x slower
    (2026-12-07); on the AVX-512-BF16 AMD EPYC boxes bf16 roughly doubles it.
    """
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    checks = [check for check in checks if check is not None]
    return any(check() for check in checks) if checks else True


def cuda_bf16_native(device: torch.device) -> bool:
    """Whether `device`'s GPU runs bf16 in hardware: compute capability 8.0 (Ampere) or later.

    Not `torch.cuda.is_bf16_supported()`, which also counts bf16 that is emulated on older GPUs (V100 and T4
    report True there): fp16 with a GradScaler is the fast choice on those.
    """
    return torch.cuda.get_device_capability(device) >= (8, 0)


def configure_backends(device: torch.device) -> None:
    """Turn on what GPUs reward: cuDNN's autotuner and TF32 tensor-core matmuls/convolutions (Ampere+).

    cuDNN benchmarks its convolution algorithms once per input shape and keeps the fastest (cnnkit's batches
    have fixed shapes); TF32 keeps fp32's range with a 10-bit mantissa, the PyTorch-recommended speed/precision
    trade for training. Nothing changes for a CPU device, so CPU results stay bit-identical.
    """
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def precision_name(dtype: torch.dtype | None) -> str:
    """"bfloat16", "float16" or "fp32", as the training header prints it."""
    return str(dtype).replace("torch.", "") if dtype else "fp32"


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast for `dtype` on `device`, or a no-op context for fp32."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def versions() -> dict[str, str]:
    """cnnkit's, PyTorch's, torchvision's and Python's versions, as checkpoints record them."""
    import torchvision

    from cnnkit import __version__

    return {"cnnkit": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}
