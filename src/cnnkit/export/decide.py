"""Which CPU path `--backend auto` takes for THIS run, decided by measurement on the run's own images.

bf16 inference (OpenVINO's bf16 on CPUs with AVX512-BF16 or AMX) is often faster than fp32, but whether it
keeps the fp32 model's answers depends on the model and the data: mobilenet_v3_large agreed with fp32 on
only 96.1% of top-1 answers with random weights (benchmarks/inference.md), a trained fastnet on more. A rule
for every model would be wrong for some; so the choice is measured per run:

1. The run's checkpoint, exported once to ONNX (the parity-checked cache of `cached_onnx`).
2. Up to `images` of the run's own validation images (test if it has no validation split), preprocessed
   as at prediction; PyTorch fp32's top-1 answers are the reference.
3. Each candidate (OpenVINO fp32 and bf16, ONNX Runtime fp32; PyTorch eager as the baseline): its top-1
   agreement with the reference on those images, and its median milliseconds per image at batch 32.
4. The choice: the fastest candidate whose agreement is at least AGREEMENT_FLOOR (fp32 paths are
   parity-checked, so one always qualifies). It is written, with every figure, next to the cache:
   RUN_DIR/export/cache/<checkpoint>.backend.json, keyed by the checkpoint's SHA-256; `auto` uses it while
   the checkpoint is unchanged and falls back to the fp32 order of `AUTO_RUNTIMES` otherwise.

The measurement runs in a child process (`python -m cnnkit.export.decide RUN_DIR`): an earlier attempt to
time runtimes inside `cnnkit export`'s process crashed the test suite (a segfault with OpenVINO and ONNX
Runtime thread pools loaded beside torch's in one process, issue 8), and a crash of the child only costs the
decision, never the export or the caller. `cnnkit export RUN_DIR --choose-backend` runs it.

Also reported: the fraction of the CPU's fp32 peak each path reaches (2 x MACs x images/s over cores x GHz x
32 FLOP/cycle: AVX-512 FMA as two 256-bit halves, Zen 4's rate; an estimate, labelled as one).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from cnnkit.errors import CnnkitError
from cnnkit.files import atomic_write_text

AGREEMENT_FLOOR = 0.995
CANDIDATES = (("openvino", "fp32"), ("openvino", "bf16"), ("onnxruntime", "fp32"))
TIMING_BATCH = 32
FLOP_PER_CYCLE_FP32 = 32


def decision_path(run_dir: Path, checkpoint: str = "best") -> Path:
    return Path(run_dir) / "export" / "cache" / f"{checkpoint}.backend.json"


def recorded_choice(run_dir: Path, checkpoint: str = "best") -> dict | None:
    """The recorded decision if it was measured on this checkpoint (same SHA-256), else None."""
    from cnnkit.export.exporter import file_sha256

    path = decision_path(run_dir, checkpoint)
    try:
        decision = json.loads(path.read_text())
        checkpoint_file = Path(run_dir) / f"{checkpoint}.safetensors"
        if decision["checkpoint_sha256"] == file_sha256(checkpoint_file):
            return decision
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _validation_images(predictor, images: int) -> tuple[torch.Tensor, str]:
    """Up to `images` uint8 (B, C, H, W) images of the run's validation split (else test), as predict sees them."""
    from cnnkit.tasks.base import config_of
    from cnnkit.tasks.classification.data import prepare_data

    config = config_of(predictor.record)
    data = prepare_data(config, predictor.preprocessing)
    for name in ("val", "test"):
        split = getattr(data, name)
        if split is None or len(split) == 0:
            continue
        if hasattr(split, "images"):
            return split.images[:images], name
        return predictor.preprocessing.load([str(p) for p in split.paths[:images]]), name
    raise CnnkitError("the run has neither a validation nor a test split to measure agreement on")


def _time_per_image(predictor, batch: torch.Tensor, rounds: int = 5) -> float:
    predictor.predict_proba(batch)  # warm-up (kernel selection, first allocations)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        predictor.predict_proba(batch)
        times.append(time.perf_counter() - started)
    return statistics.median(times) / len(batch) * 1000


def _peak_fraction(macs: float | None, ms_per_image: float) -> float | None:
    """Fraction of the CPU's fp32 peak FLOP rate (an estimate: see the module docstring)."""
    try:
        megahertz = max(float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
                        if line.startswith("cpu MHz"))
    except (OSError, ValueError):
        return None
    if not macs or not megahertz:
        return None
    peak = torch.get_num_threads() * megahertz * 1e6 * FLOP_PER_CYCLE_FP32
    return 2 * macs * (1000 / ms_per_image) / peak


def choose_backend(run_dir: str | Path, checkpoint: str = "best", images: int = 512) -> dict:
    """Measure every candidate on the run's images, record the choice (see the module docstring), return it."""
    from cnnkit.export.backends import _classifier, cached_onnx
    from cnnkit.export.exporter import file_sha256
    from cnnkit.export.runtimes import onnxruntime_model, openvino_model
    from cnnkit.tasks import load_run

    run_dir = Path(run_dir)
    reference_predictor = load_run(run_dir, device="cpu", checkpoint=checkpoint)
    if not hasattr(reference_predictor, "predict_proba"):
        raise CnnkitError(f"{run_dir} is a {reference_predictor.record.get('task')} run; the backend choice is "
                          "measured for classifiers (top-1 agreement)")
    batch, split = _validation_images(reference_predictor, images)
    reference = reference_predictor.predict_proba(batch).argmax(dim=1)
    onnx_file = cached_onnx(run_dir, checkpoint, log=lambda message: None)
    macs = _macs(reference_predictor)
    rows = [{"runtime": "torch", "precision": "fp32", "agreement": 1.0,
             "ms_per_image": _time_per_image(reference_predictor, batch[:TIMING_BATCH])}]
    for runtime, precision in CANDIDATES:
        try:
            model = (openvino_model(onnx_file, precision=precision) if runtime == "openvino"
                     else onnxruntime_model(onnx_file))
        except Exception as error:  # noqa: BLE001 - a runtime that cannot load this model is not a candidate
            rows.append({"runtime": runtime, "precision": precision, "error": str(error).splitlines()[0][:200]})
            continue
        predictor = _classifier(model, reference_predictor.record, run_dir)
        agreement = float((predictor.predict_proba(batch).argmax(dim=1) == reference).float().mean())
        rows.append({"runtime": runtime, "precision": precision, "agreement": agreement,
                     "ms_per_image": _time_per_image(predictor, batch[:TIMING_BATCH])})
    for row in rows:
        if "ms_per_image" in row:
            row["peak_fraction_estimate"] = _peak_fraction(macs, row["ms_per_image"])
    qualified = [row for row in rows if row.get("agreement", 0) >= AGREEMENT_FLOOR and row["runtime"] != "torch"]
    choice = min(qualified, key=lambda row: row["ms_per_image"]) if qualified else rows[0]
    decision = {"checkpoint": checkpoint, "checkpoint_sha256": file_sha256(run_dir / f"{checkpoint}.safetensors"),
                "runtime": choice["runtime"], "precision": choice["precision"], "agreement_floor": AGREEMENT_FLOOR,
                "images": len(batch), "split": split, "timing_batch": min(TIMING_BATCH, len(batch)),
                "threads": torch.get_num_threads(), "macs_per_image": macs, "candidates": rows}
    atomic_write_text(decision_path(run_dir, checkpoint), json.dumps(decision, indent=1))
    return decision


def _macs(predictor) -> float | None:
    try:
        from torch.utils.flop_counter import FlopCounterMode

        shape = (1, predictor.preprocessing.channels, *predictor.preprocessing.image_size)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            predictor.model(torch.zeros(shape))
        return counter.get_total_flops() / 2
    except Exception:  # noqa: BLE001 - the peak fraction is optional
        return None


def choose_backend_in_child(run_dir: str | Path, checkpoint: str = "best", images: int = 512,
                            timeout: float = 900) -> dict | None:
    """`choose_backend` in a child process (see the module docstring); None, with a note, if it failed."""
    command = [sys.executable, "-m", "cnnkit.export.decide", str(run_dir), "--checkpoint", checkpoint,
               "--images", str(images)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    except subprocess.TimeoutExpired:
        print(f"cnnkit: the backend measurement took over {timeout:.0f} s; `auto` keeps fp32", file=sys.stderr)
        return None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"cnnkit: the backend measurement failed (exit {result.returncode}: {last}); `auto` keeps fp32",
              file=sys.stderr)
        return None
    return recorded_choice(Path(run_dir), checkpoint)


def describe(decision: dict) -> str:
    lines = [f"backend for --backend auto: {decision['runtime']} {decision['precision']} (top-1 agreement with "
             f"PyTorch fp32 >= {decision['agreement_floor']:.1%} on {decision['images']} {decision['split']} images, "
             "fastest at batch 32)"]
    for row in decision["candidates"]:
        if "error" in row:
            lines.append(f"  {row['runtime']} {row['precision']}: unavailable ({row['error']})")
            continue
        peak = row.get("peak_fraction_estimate")
        lines.append(f"  {row['runtime']:<12} {row['precision']}: agreement {row['agreement']:.4f}, "
                     f"{row['ms_per_image']:.3f} ms/image" + (f", ~{peak:.1%} of fp32 peak" if peak else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cnnkit.export.decide", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best")
    parser.add_argument("--images", type=int, default=512)
    args = parser.parse_args(argv)
    try:
        print(describe(choose_backend(args.run_dir, args.checkpoint, args.images)))
    except CnnkitError as error:  # a clear line, never a traceback (the run's data gone, not a classifier ...)
        print(f"cnnkit: cannot choose a backend for {args.run_dir}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
