"""CPU inference speed of every path cnnkit can serve with: latency at batch 1, throughput at batch 32, agreement.

What it measures, for three models:

  fastnet             1x28x28, 10 classes: the default Fashion-MNIST net; trained weights with --fastnet-run RUN
                      (then agreement is measured on the 10,000 Fashion-MNIST test images), else random weights
  resnet50            3x224x224, 1000 classes, random weights (torchvision's initialisation, BatchNorm statistics
                      calibrated on random images, see calibrate_batchnorm; agreement depends on them: see below)
  mobilenet_v3_large  3x224x224, 1000 classes, random weights

and these paths (--paths selects some):

  eager_fp32       model.eval(), torch.inference_mode(), NCHW: the baseline every speed-up is relative to
  eager_bf16_cl    + torch.autocast("cpu", bfloat16) and channels_last model and input (cnnkit's training default)
  compile_fp32     torch.compile(model) (inductor, default mode), fp32; compile time reported, not timed
  onnxruntime      the model exported by cnnkit.export (ONNX, dynamic batch, parity-checked to 1e-4), ONNX Runtime CPU
  openvino         the same ONNX file compiled by OpenVINO for the CPU with INFERENCE_PRECISION_HINT f32 (the
                   2026-12-05 results were measured with a per-batch static-shape compilation since reverted)
  openvino_bf16    the same with OpenVINO's default on this CPU, bf16 (shown because OpenVINO picks it silently)

Every path gets torch.get_num_threads() threads (default: one per core; --threads N). On a machine shared with
another job, use fewer threads than cores: PyTorch's OpenMP threads wait for each other at every operator, and
with one of two cores busy eager mobilenet_v3_large at 2 threads took 20 ms to 1.6 s per image instead of 11 ms.
Each measurement records the CPU time other processes used meanwhile ("others' load", in cores).

Timing: --rounds rounds (default 3) after one warm-up round that is not recorded (oneDNN primitive creation,
torch.compile's compilation, OpenVINO's first-inference setup). In each round every (model, path) pair is
measured, in the listed order in even rounds and reversed in odd rounds, so no path always runs first; the
machine may be shared, so the best round is kept. Latency: batch 1, calls for --budget seconds (at least
--min-calls), p50 and p99 of the per-call times. Throughput: batch 32 for the same budget, images/s.

Fraction of peak: achieved FLOP/s = 2 x MACs per image (cnnkit.inspect.count_macs) x images/s, divided by the
CPU's peak: threads used (at most the usable cores) x FLOPs/cycle x clock. fp32 FLOPs/cycle by the CPU in
/proc/cpuinfo (--flops-per-cycle overrides): AMD Zen 4 (family 25) executes AVX-512 as two 256-bit halves on two
FMA pipes, 32 fp32 FLOPs/cycle/core; Zen 5 (family 26) has two full 512-bit FMA pipes, 64 (a single direct
convolution of fastnet measured 204 GFLOP/s on one such machine, above a Zen 4 peak at its 2.6 GHz); an Intel CPU
with AVX-512 two 512-bit FMA ports, 64 (Xeon Scalable Gold/Platinum; one-port parts have half), else 32 (AVX2).
bf16 peak: with AMX (amx_bf16), 1024 FLOPs/cycle/core (the tile unit's 512 bf16 multiply-adds per cycle);
otherwise twice fp32 (AVX512_BF16 dot products). Clock: --ghz, default the "cpu MHz" of /proc/cpuinfo (nominal:
if the CPU boosts higher, the fractions are overstated). bf16 paths are compared with the bf16 peak. As a check
of those numbers, the run also measures torch.mm on 4096x4096 matrices (fp32 and bf16, same threads), a rate
close to what the CPU can reach.

Correctness: each path's top-1 class vs eager fp32 on the agreement images (Fashion-MNIST test with
--fastnet-run; otherwise --agreement-images random images), and the max abs difference of the logits. An fp32
path is correct when its logits match eager fp32 within 1e-4 (the export parity bar); a bf16 path when its
top-1 agreement is at least 99.5%. With random weights, logits of different classes are nearly tied, so a
bf16 path's agreement there says little: the bf16 verdict rests on the trained fastnet.

    .venv/bin/python benchmarks/inference.py --fastnet-run runs/RUN         # full: 13 min at --threads 1
    .venv/bin/python benchmarks/inference.py --models resnet50 --paths eager_fp32,openvino
    .venv/bin/python benchmarks/inference.py --quick                         # smoke test: fastnet, 1 round

Writes benchmarks/results/inference.json and .md (inference-quick.* with --quick).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

import _common
from cnnkit.data.preprocess import Preprocessing
from cnnkit.export import export_model
from cnnkit.export.runtimes import onnxruntime_model, openvino_model
from cnnkit.inspect import count_macs
from cnnkit.registry import create_model

NAME = "inference"
THROUGHPUT_BATCH = 32
FP32_TOLERANCE = 1e-4
BF16_MIN_AGREEMENT = 0.995
# fp32 FLOPs per cycle per core by x86 CPU family (/proc/cpuinfo), see the module docstring; bf16 is twice that.
AMD_FP32_FLOPS_PER_CYCLE = {25: 32, 26: 64}  # 0x19 Zen 3/4: two 256-bit FMA pipes; 0x1A Zen 5: two 512-bit pipes
AMX_BF16_FLOPS_PER_CYCLE = 1024  # Intel AMX: 512 bf16 multiply-adds per cycle per core
# The floor the issue set (measured elsewhere on this machine): batch-1 speed-up over eager fp32.
FLOOR = {("resnet50", "onnxruntime"): 1.4, ("mobilenet_v3_large", "onnxruntime"): 4.4,
         ("resnet50", "openvino"): 2.7, ("mobilenet_v3_large", "openvino"): 5.7}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    channels: int
    size: int
    num_classes: int


MODELS = {"fastnet": ModelSpec("fastnet", 1, 28, 10), "resnet50": ModelSpec("resnet50", 3, 224, 1000),
          "mobilenet_v3_large": ModelSpec("mobilenet_v3_large", 3, 224, 1000)}


@dataclass(frozen=True)
class InferencePath:
    name: str
    precision: str
    description: str


PATHS = {path.name: path for path in (
    InferencePath("eager_fp32", "fp32", "PyTorch eager, fp32, NCHW"),
    InferencePath("eager_bf16_cl", "bf16", "PyTorch eager, bf16 autocast + channels_last"),
    InferencePath("compile_fp32", "fp32", "torch.compile (inductor), fp32"),
    InferencePath("onnxruntime", "fp32", "ONNX Runtime CPU, fp32"),
    InferencePath("openvino", "fp32", "OpenVINO CPU, fp32 (INFERENCE_PRECISION_HINT f32)"),
    InferencePath("openvino_bf16", "bf16", "OpenVINO CPU, bf16 (its default on this CPU)"),
)}


def split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--fastnet-run", metavar="RUN_DIR", help="a trained fastnet run (e.g. make demo's) for "
                        "fastnet's weights and Fashion-MNIST test images for agreement")
    parser.add_argument("--rounds", type=int, default=3, help="recorded rounds after the warm-up (default 3)")
    parser.add_argument("--budget", type=float, default=1.5, help="seconds per measurement (default 1.5)")
    parser.add_argument("--min-calls", type=int, default=5, help="calls per measurement at least (default 5)")
    parser.add_argument("--agreement-images", type=int, default=512,
                        help="random images for agreement when no Fashion-MNIST run is given (default 512)")
    parser.add_argument("--ghz", type=float, default=None, help="clock for the peak FLOP rate (default: cpuinfo)")
    parser.add_argument("--flops-per-cycle", type=int, default=None,
                        help="fp32 FLOPs per cycle per core for the peak (default: by CPU family, see above)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (default: torch's default)")
    parser.add_argument("--quick", action="store_true", help="smoke test: fastnet only, 1 round, 0.2 s budgets, "
                        "64 agreement images")
    parser.add_argument("--results-dir", default=None, help="where the .json/.md go (default: benchmarks/results)")
    args = parser.parse_args()
    args.model_names, args.path_names = split_list(args.models), split_list(args.paths)
    for names, known, option in ((args.model_names, MODELS, "--models"), (args.path_names, PATHS, "--paths")):
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            parser.error(f"{option}: unknown or empty {unknown or names}; choose from {', '.join(known)}")
    if "eager_fp32" not in args.path_names:
        args.path_names.insert(0, "eager_fp32")  # the baseline of every ratio and agreement
    if args.quick:
        args.model_names = ["fastnet"] if args.models == parser.get_default("models") else args.model_names
        args.rounds, args.budget, args.min_calls, args.agreement_images = 1, 0.2, 2, 64
    return args


# ---------------------------------------------------------------- models and data
def load_model(spec: ModelSpec, fastnet_run: str | None) -> tuple[nn.Module, Preprocessing, list[str], str]:
    """(model in eval mode, preprocessing, class names, where the weights came from)."""
    if spec.name == "fastnet" and fastnet_run:
        import cnnkit

        classifier = cnnkit.load(fastnet_run, device="cpu")
        return classifier.model, classifier.preprocessing, classifier.classes, f"trained: {fastnet_run}"
    torch.manual_seed(0)
    model = create_model(spec.name, num_classes=spec.num_classes, in_chans=spec.channels, input_size=spec.size)
    mean, std = ((0.286,), (0.353,)) if spec.channels == 1 else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    preprocessing = Preprocessing(spec.channels, (spec.size, spec.size), mean, std)
    calibrate_batchnorm(model, torch.randn(16, spec.channels, spec.size, spec.size))
    return (model.eval(), preprocessing, [str(index) for index in range(spec.num_classes)],
            "random (seed 0), BatchNorm statistics calibrated on 16 random images")


def calibrate_batchnorm(model: nn.Module, inputs: torch.Tensor) -> None:
    """Set BatchNorm running statistics from one batch, as training would.

    With freshly initialised statistics (mean 0, variance 1) eval-mode BatchNorm does not normalize, and
    activations of a random deep net shrink layer after layer (mobilenet_v3_large's logits: std 2.5e-10),
    towards subnormal floats that some kernels process far more slowly, and logits so close that top-1
    agreement is noise. Calibrated, the activations have a trained network's scale (logit std 0.01).
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average: this one batch's statistics
    model.train()
    with torch.no_grad():
        model(inputs)
    model.eval()


def agreement_images(spec: ModelSpec, preprocessing: Preprocessing, fastnet_run: str | None, count: int,
                     quick: bool):
    """(normalized float inputs, description) for the top-1 agreement check.

    A multiple of 32 images: torch.compile(dynamic=False) would compile once more for a smaller last batch.
    """
    if spec.name == "fastnet" and fastnet_run:
        from cnnkit.data.fashion_mnist import load_fashion_mnist

        _, test = load_fashion_mnist(download=False)
        images = test.images[:count if quick else len(test.images) // THROUGHPUT_BATCH * THROUGHPUT_BATCH]
        return preprocessing.normalize(images), f"Fashion-MNIST test ({len(images)} images)"
    count = max(THROUGHPUT_BATCH, count // THROUGHPUT_BATCH * THROUGHPUT_BATCH)
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (count, spec.channels, spec.size, spec.size), generator=generator, dtype=torch.uint8)
    return preprocessing.normalize(images), f"{count} random uint8 images"


# ---------------------------------------------------------------- the paths
def make_path(name: str, model: nn.Module, onnx_file: Path | None) -> tuple[Callable[[torch.Tensor], torch.Tensor], float]:
    """(infer: normalized float (B, C, H, W) -> fp32 logits, setup seconds) for one path."""
    started = time.perf_counter()
    if name == "eager_fp32":
        infer = model
    elif name == "eager_bf16_cl":
        fast = copy.deepcopy(model).to(memory_format=torch.channels_last)

        def infer(inputs):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fast(inputs.contiguous(memory_format=torch.channels_last)).float()
    elif name == "compile_fp32":
        # dynamic=False: one static graph per batch size (1 and 32), compiled in the warm-up round. With the
        # default, the second size triggers a dynamic-shape graph, and batch 1 then ran at 138 ms for fastnet.
        infer = torch.compile(model, dynamic=False)
    elif name == "onnxruntime":
        infer = onnxruntime_model(onnx_file)
    elif name == "openvino":
        infer = openvino_model(onnx_file, precision="fp32")
    else:
        infer = openvino_model(onnx_file, precision="bf16")
    return infer, time.perf_counter() - started


def timed_calls(infer, inputs: torch.Tensor, budget: float, min_calls: int) -> list[float]:
    """Seconds per call, calling until `budget` seconds have passed and at least `min_calls` ran."""
    times, started = [], time.perf_counter()
    with torch.inference_mode():
        while len(times) < min_calls or time.perf_counter() - started < budget:
            begin = time.perf_counter()
            infer(inputs)
            times.append(time.perf_counter() - begin)
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def cpu_ticks() -> tuple[int, int] | None:
    """(busy clock ticks of the whole machine, ticks of this process) from /proc, or None off Linux."""
    try:
        machine = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    return sum(machine) - machine[3] - machine[4], int(own[11]) + int(own[12])  # minus idle, iowait; utime + stime


def others_load(before: tuple[int, int] | None, after: tuple[int, int] | None, seconds: float) -> float | None:
    """CPU cores that other processes used on average between two cpu_ticks() readings."""
    if before is None or after is None or seconds <= 0:
        return None
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / os.sysconf("SC_CLK_TCK") / seconds)


def measure(infer, spec: ModelSpec, args) -> dict:
    one = torch.randn(1, spec.channels, spec.size, spec.size)
    batch = torch.randn(THROUGHPUT_BATCH, spec.channels, spec.size, spec.size)
    started, ticks = time.perf_counter(), cpu_ticks()
    latencies = timed_calls(infer, one, args.budget, args.min_calls)
    batch_times = timed_calls(infer, batch, args.budget, max(2, args.min_calls // 2))
    return {"p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * percentile(latencies, 0.99),
            "latency_calls": len(latencies), "images_per_s": THROUGHPUT_BATCH / statistics.median(batch_times),
            "throughput_calls": len(batch_times),
            "others_load": others_load(ticks, cpu_ticks(), time.perf_counter() - started)}


def logits_of(infer, inputs: torch.Tensor) -> torch.Tensor:
    """fp32 logits of all `inputs`, in batches of 32."""
    with torch.inference_mode():
        return torch.cat([infer(inputs[start:start + THROUGHPUT_BATCH]).float()
                          for start in range(0, len(inputs), THROUGHPUT_BATCH)])


def agreement(infer, reference_logits: torch.Tensor, inputs: torch.Tensor) -> dict:
    logits = logits_of(infer, inputs)
    return {"top1_agreement": float((logits.argmax(1) == reference_logits.argmax(1)).float().mean()),
            "max_abs_logit_diff": float((logits - reference_logits).abs().max())}


# ---------------------------------------------------------------- the run
def peak_flops(args, machine: dict) -> dict:
    """The nominal fp32 and bf16 peak of the threads used (see the module docstring), and torch.mm's rate."""
    info = _common._cpuinfo()
    flags = set(info.get("flags", "").split())
    ghz = args.ghz or float(info.get("cpu MHz", 0)) / 1000 or 2.6
    family = int(info.get("cpu family", 0) or 0)
    if args.flops_per_cycle:
        per_cycle = args.flops_per_cycle
    elif info.get("vendor_id") == "AuthenticAMD":
        per_cycle = AMD_FP32_FLOPS_PER_CYCLE.get(family, 32)
    else:
        per_cycle = 64 if "avx512f" in flags else 32
    bf16_per_cycle = AMX_BF16_FLOPS_PER_CYCLE if "amx_bf16" in flags else 2 * per_cycle
    cores = min(machine["usable_cpus"], torch.get_num_threads())
    return {"ghz": ghz, "cores": cores, "cpu_vendor": info.get("vendor_id"), "cpu_family": family,
            "fp32_flops_per_cycle": per_cycle, "bf16_flops_per_cycle": bf16_per_cycle,
            "fp32": cores * per_cycle * ghz * 1e9, "bf16": cores * bf16_per_cycle * ghz * 1e9,
            "matmul": {"fp32": matmul_rate(torch.float32), "bf16": matmul_rate(torch.bfloat16)}}


def matmul_rate(dtype: torch.dtype, size: int = 4096, repeats: int = 5) -> float:
    """The best FLOP/s of torch.mm on two size x size matrices in `dtype` (one warm-up call not counted)."""
    left, right = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    torch.mm(left, right)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(left, right)
        best = min(best, time.perf_counter() - started)
    return 2 * size ** 3 / best


def prepare(spec: ModelSpec, args, workdir: Path) -> dict:
    """Everything one model needs: its paths set up, MACs counted, reference logits for agreement."""
    model, preprocessing, classes, weights = load_model(spec, args.fastnet_run)
    state = {"spec": spec, "weights": weights, "macs": count_macs(model, (spec.channels, spec.size, spec.size)),
             "paths": {}, "setup_s": {}, "failures": {}}
    onnx_file = None
    if any(name.startswith(("onnxruntime", "openvino")) for name in args.path_names):
        record = {"task": "classify", "classes": classes, "preprocessing": preprocessing.to_dict(),
                  "architecture": {"name": spec.name, "args": {}}}
        started = time.perf_counter()
        onnx_file = export_model(model, record, "onnx", workdir / f"{spec.name}.onnx", dynamic_batch=True).path
        state["setup_s"]["onnx_export"] = time.perf_counter() - started
    for name in args.path_names:
        try:
            state["paths"][name], state["setup_s"][name] = make_path(name, model, onnx_file)
        except Exception as error:  # noqa: BLE001 - one path that cannot run must not hide the others
            state["failures"][name] = f"{type(error).__name__}: {error}"
    state["agreement_inputs"], state["agreement_data"] = agreement_images(spec, preprocessing, args.fastnet_run,
                                                                          args.agreement_images, args.quick)
    state["reference_logits"] = logits_of(model, state["agreement_inputs"])
    return state


def run(args) -> tuple[dict, list]:
    states, rounds = [], []
    with tempfile.TemporaryDirectory(prefix="cnnkit-inference-") as folder:
        for name in args.model_names:
            print(f"setting up {name} ...", flush=True)
            states.append(prepare(MODELS[name], args, Path(folder)))
        for round_index in range(args.rounds + 1):  # round 0: warm-up, not recorded
            label = "warm-up" if round_index == 0 else f"round {round_index}/{args.rounds}"
            results = {}
            for state in states:
                names = list(state["paths"])
                for name in names if round_index % 2 == 0 else reversed(names):
                    started = time.perf_counter()
                    try:
                        results[(state["spec"].name, name)] = measure(state["paths"][name], state["spec"], args)
                    except Exception as error:  # noqa: BLE001 - recorded in the table
                        state["failures"][name] = f"{type(error).__name__}: {error}"
                        state["paths"].pop(name)
                    if round_index == 0:
                        state["setup_s"][f"{name}_warmup"] = time.perf_counter() - started
                print(f"{label}: {state['spec'].name} done", flush=True)
            if round_index > 0:
                rounds.append(results)
        for state in states:
            state["agreement"] = {name: agreement(infer, state["reference_logits"], state["agreement_inputs"])
                                  for name, infer in state["paths"].items()}
    return {state["spec"].name: state for state in states}, rounds


def best_of(rounds: list, key: tuple) -> dict | None:
    """The round with the lowest p50 for latency and the highest images/s for throughput (least disturbed)."""
    measured = [results[key] for results in rounds if key in results]
    if not measured:
        return None
    fastest = min(measured, key=lambda result: result["p50_ms"])
    return {"p50_ms": fastest["p50_ms"], "p99_ms": fastest["p99_ms"],
            "images_per_s": max(result["images_per_s"] for result in measured),
            "p50_ms_all_rounds": [result["p50_ms"] for result in measured],
            "others_load_all_rounds": [result.get("others_load") for result in measured],
            "images_per_s_all_rounds": [result["images_per_s"] for result in measured]}


def is_correct(path: InferencePath, agreement_result: dict) -> bool:
    if path.precision == "fp32":
        return agreement_result["max_abs_logit_diff"] <= FP32_TOLERANCE
    return agreement_result["top1_agreement"] >= BF16_MIN_AGREEMENT


def fastest(entries: dict) -> tuple[str | None, str | None]:
    """(lowest batch-1 p50, highest batch-32 images/s) among `entries`."""
    if not entries:
        return None, None
    return (min(entries, key=lambda name: entries[name]["p50_ms"]),
            max(entries, key=lambda name: entries[name]["images_per_s"]))


def summarize(states: dict, rounds: list, peak: dict) -> tuple[dict, str]:
    payload, sections, verdicts = {}, [], []
    loads = [result["others_load"] for results in rounds for result in results.values()
             if result.get("others_load") is not None]
    others_load = statistics.mean(loads) if loads else float("nan")
    for model_name, state in states.items():
        base = best_of(rounds, (model_name, "eager_fp32"))
        rows, entries = [], {}
        for name in state["paths"]:
            path, best, agree = PATHS[name], best_of(rounds, (model_name, name)), state["agreement"][name]
            flops = 2 * state["macs"] * best["images_per_s"]
            entry = {**best, **agree, "precision": path.precision, "correct": is_correct(path, agree),
                     "speedup_batch1": base["p50_ms"] / best["p50_ms"],
                     "speedup_batch32": best["images_per_s"] / base["images_per_s"],
                     "gflops_batch32": flops / 1e9, "fraction_of_peak_batch32": flops / peak[path.precision],
                     "gflops_batch1": 2 * state["macs"] / (best["p50_ms"] / 1000) / 1e9,
                     "setup_s": state["setup_s"].get(name), "warmup_s": state["setup_s"].get(f"{name}_warmup")}
            entries[name] = entry
            rows.append([name, f"{entry['p50_ms']:.2f}", f"{entry['p99_ms']:.2f}", f"{entry['speedup_batch1']:.2f}x",
                         f"{entry['images_per_s']:,.0f}", f"{entry['speedup_batch32']:.2f}x",
                         f"{entry['gflops_batch32']:.1f} ({100 * entry['fraction_of_peak_batch32']:.0f}%)",
                         f"{100 * entry['top1_agreement']:.2f}%", f"{entry['max_abs_logit_diff']:.1e}",
                         "yes" if entry["correct"] else "**no**"])
        for name, failure in state["failures"].items():
            rows.append([name, "failed", "", "", "", "", "", "", "", failure[:80]])
        correct = {name: entry for name, entry in entries.items() if entry["correct"]}
        fastest_1, fastest_32 = fastest(correct)
        fp32_1, fp32_32 = fastest({name: entry for name, entry in correct.items() if entry["precision"] == "fp32"})
        payload[model_name] = {"weights": state["weights"], "macs": state["macs"], "agreement_data": state["agreement_data"],
                               "paths": entries, "failures": state["failures"],
                               "fastest_correct": {"batch1": fastest_1, "batch32": fastest_32},
                               "fastest_correct_fp32": {"batch1": fp32_1, "batch32": fp32_32},
                               "onnx_export_s": state["setup_s"].get("onnx_export")}
        spec = state["spec"]
        sections.append(
            f"### {model_name} ({spec.channels}x{spec.size}x{spec.size}, {state['macs'] / 1e9:.3f} GMACs/image; "
            f"weights {state['weights']}; agreement on {state['agreement_data']})\n\n"
            + _common.markdown_table(["path", "p50 ms (b1)", "p99 ms (b1)", "vs eager (b1)", "images/s (b32)",
                                      "vs eager (b32)", "GFLOP/s (b32, % of peak)", "top-1 agreement",
                                      "max abs logit diff", "correct"], rows)
            + f"\n\nFastest correct path: batch 1 **{fastest_1}**, batch 32 **{fastest_32}**; among the fp32 paths "
              f"(those `--backend auto` may pick): batch 1 **{fp32_1}**, batch 32 **{fp32_32}**.\n")
        for (floor_model, floor_path), floor in FLOOR.items():
            if floor_model == model_name and floor_path in entries:
                reached = entries[floor_path]["speedup_batch1"]
                verdicts.append(f"- {model_name} {floor_path}: {reached:.2f}x eager fp32 at batch 1 (floor {floor}x): "
                                f"{'met' if reached >= floor else '**not met**'}")
    matmul = peak["matmul"]
    body = (f"Peak assumed: {peak['cores']} cores (the threads used) x {peak['fp32_flops_per_cycle']} fp32 / "
            f"{peak['bf16_flops_per_cycle']} bf16 FLOPs/cycle ({peak['cpu_vendor']} family {peak['cpu_family']}) x "
            f"{peak['ghz']:.2f} GHz = {peak['fp32'] / 1e9:.0f} GFLOP/s fp32, {peak['bf16'] / 1e9:.0f} GFLOP/s bf16 "
            f"(bf16 paths are compared with the bf16 peak). torch.mm 4096x4096 on the same threads reached "
            f"{matmul['fp32'] / 1e9:.0f} GFLOP/s fp32 ({100 * matmul['fp32'] / peak['fp32']:.0f}% of that peak) and "
            f"{matmul['bf16'] / 1e9:.0f} GFLOP/s bf16 ({100 * matmul['bf16'] / peak['bf16']:.0f}%). "
            f"Others' load (CPU cores used by other processes while a path was measured, mean over all "
            f"measurements): {others_load:.2f}. Correct: fp32 paths within 1e-4 of eager fp32's logits, bf16 paths "
            ">= 99.5% top-1 agreement.\n\n" + "\n".join(sections))
    if verdicts:
        body += "\n### The issue's floor (batch-1 speed-up over eager fp32)\n\n" + "\n".join(verdicts) + "\n"
    return payload, body


def main() -> None:
    args = parse_args()
    _common.set_threads(args.threads)
    header = _common.run_header(args.quick)
    peak = peak_flops(args, header["machine"])
    states, rounds = run(args)
    payload, body = summarize(states, rounds, peak)
    settings = {key: getattr(args, key) for key in ("model_names", "path_names", "rounds", "budget", "min_calls",
                                                    "agreement_images", "fastnet_run")}
    _common.finish(NAME, "Inference speed on this CPU: eager, bf16, torch.compile, ONNX Runtime, OpenVINO", header,
                   {"settings": settings, "peak": peak, "models": payload, "rounds": [
                       {f"{model}/{path}": result for (model, path), result in results.items()} for results in rounds]},
                   body, args.results_dir)


if __name__ == "__main__":
    main()
