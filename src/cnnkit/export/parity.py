"""The parity check every export passes: the exported model and PyTorch agree on the same inputs.

An export is only useful if it computes what the trained model computes. Exporters can go wrong
silently: tracing freezes Python control flow on the example input, an operator is translated with a
different default, a runtime fuses layers in another order. So each export is run on the same inputs
as the PyTorch model, at batch 1 and batch 4, and the largest absolute difference of the logits must
stay within `DEFAULT_TOLERANCE` (1e-4, fp32). Otherwise `ParityError` says by how much, and the file is
not written.

The inputs are random uint8 images, normalized with the run's own mean/std: the value range the model
sees in use, with no dataset needed. A static-batch export (batch dimension fixed to 1) is fed the four
images one at a time and compared with PyTorch's batch of four.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from cnnkit.data.preprocess import Preprocessing
from cnnkit.export.errors import ParityError

DEFAULT_TOLERANCE = 1e-4
PARITY_BATCHES = (1, 4)


def parity_inputs(preprocessing: Preprocessing, batch: int, seed: int = 0) -> torch.Tensor:
    """Random uint8 images of the model's size, normalized like real ones: float32 (batch, C, H, W)."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, preprocessing.channels, *preprocessing.image_size),
                           generator=generator, dtype=torch.uint8)
    return preprocessing.normalize(images)


def check_parity(reference: nn.Module, candidate: Callable[[torch.Tensor], torch.Tensor],
                 preprocessing: Preprocessing, dynamic_batch: bool, tolerance: float = DEFAULT_TOLERANCE,
                 label: str = "the exported model") -> dict:
    """Compare `candidate` with the PyTorch `reference` at batch 1 and 4; raise ParityError past `tolerance`.

    Args:
        reference: The PyTorch model, in eval mode, on the CPU.
        candidate: The exported model loaded back: float32 (B, C, H, W) -> logits (B, K).
        preprocessing: The run's preprocessing (input size, channels, mean/std).
        dynamic_batch: Whether the candidate takes any batch size; if not, it gets one image at a time.
        tolerance: Largest max-abs difference of the logits allowed.
        label: How error messages name the candidate, e.g. "the ONNX file runs/x/export/best.onnx".

    Returns:
        {"tolerance", "max_abs_diff": {"batch_1": float, "batch_4": float}, "inputs": description}.
    """
    differences: dict[str, float] = {}
    for batch in PARITY_BATCHES:
        inputs = parity_inputs(preprocessing, batch, seed=batch)
        with torch.no_grad():
            expected = reference(inputs).float()
            if dynamic_batch or batch == 1:
                actual = candidate(inputs)
            else:
                actual = torch.cat([candidate(inputs[index:index + 1]) for index in range(batch)])
        if tuple(actual.shape) != tuple(expected.shape):
            raise ParityError(f"{label} returns shape {tuple(actual.shape)} at batch {batch}; PyTorch returns "
                              f"{tuple(expected.shape)}", {}, tolerance)
        differences[f"batch_{batch}"] = float((actual.float() - expected).abs().max())
    worst = max(differences.values())
    if not worst <= tolerance:  # also catches NaN
        shown = ", ".join(f"batch {key.split('_')[1]}: {value:.3g}" for key, value in differences.items())
        raise ParityError(f"{label} disagrees with the PyTorch model: max abs difference of the logits {shown} "
                          f"(tolerance {tolerance:g}, fp32). It was not kept. Check for Python control flow that "
                          "depends on the input (tracing freezes it), or try another --format.",
                          differences, tolerance)
    return {"tolerance": tolerance, "max_abs_diff": differences,
            "passed": True,
            "inputs": "random uint8 images normalized with the run's mean/std (seeds 1 and 4)"}
