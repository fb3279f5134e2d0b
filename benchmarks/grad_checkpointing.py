"""Gradient checkpointing: the memory it saves and the time it costs, measured on this CPU.

For each model, two variants (plain, grad_checkpointing=True via cnnkit.layers.enable_grad_checkpointing)
each run in a FRESH subprocess (so one variant's freed-but-kept heap never flatters the other):
build the model, one random batch, then training steps (forward + cross-entropy + backward + SGD step,
fp32, channels_last off). Memory: the process's peak resident set (ru_maxrss) minus its resident set
just before the first step: what a training step adds on top of weights and input. Time: median of the
timed steps after --warmup untimed ones. The variants alternate order over --rounds rounds; the best
(least disturbed) round of each is kept.

    .venv/bin/python benchmarks/grad_checkpointing.py            # resnet50@160, vit_small@224, wrn16_4@28
    .venv/bin/python benchmarks/grad_checkpointing.py --quick    # smoke test

Writes benchmarks/results/grad_checkpointing.json and .md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import _common

NAME = "grad_checkpointing"
MODELS = [("resnet50", "3x160x160", 16), ("vit_small_patch16_224", "3x224x224", 16), ("wrn16_4", "1x28x28", 256)]
QUICK_MODELS = [("resnet18", "3x64x64", 4)]


def child(model_name: str, input_size: str, batch: int, checkpointing: bool, steps: int, warmup: int) -> dict:
    """One variant, in this (fresh) process."""
    import resource
    import statistics
    import time

    import torch
    import torch.nn.functional as F

    from cnnkit.inspect import parse_input_size
    from cnnkit.layers.checkpointing import enable_grad_checkpointing
    from cnnkit.registry import create_model

    channels, height, width = parse_input_size(input_size)
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, in_chans=channels, input_size=(height, width))
    if checkpointing:
        enable_grad_checkpointing(model)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images, labels = torch.randn(batch, channels, height, width), torch.randint(0, 10, (batch,))
    page = resource.getpagesize()
    with open("/proc/self/statm") as file:
        before_kib = int(file.read().split()[1]) * page / 1024
    times = []
    for step in range(warmup + steps):
        started = time.perf_counter()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append(time.perf_counter() - started)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"step_memory_mib": (peak_kib - before_kib) / 1024, "step_seconds": statistics.median(times)}


def measure(model_name: str, input_size: str, batch: int, checkpointing: bool, steps: int, warmup: int,
            threads: int | None) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {str(_common.BENCHMARKS_DIR)!r}); import torch; "
            + (f"torch.set_num_threads({threads}); " if threads else "")
            + f"import grad_checkpointing as g; print(json.dumps(g.child({model_name!r}, {input_size!r}, {batch}, "
              f"{checkpointing}, {steps}, {warmup})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--results-dir", default=None)
    args = parser.parse_args()
    header = _common.run_header(args.quick)
    models = QUICK_MODELS if args.quick else MODELS
    rounds = 1 if args.quick else args.rounds
    rows, payload = [], {"models": []}
    for model_name, input_size, batch in models:
        best: dict[bool, dict] = {}
        for round_index in range(rounds):
            order = (False, True) if round_index % 2 == 0 else (True, False)
            for checkpointing in order:
                result = measure(model_name, input_size, batch, checkpointing, args.steps, args.warmup, args.threads)
                print(f"{model_name} checkpointing={checkpointing}: {result}", flush=True)
                kept = best.get(checkpointing)
                if "error" in result or kept is None or result["step_seconds"] < kept.get("step_seconds", 1e9):
                    best[checkpointing] = {**(kept or {}), **result} if "error" not in result else result
                if "error" not in result:  # memory: the smallest peak seen (the least heap noise)
                    best[checkpointing]["step_memory_mib"] = min(result["step_memory_mib"],
                                                                 (kept or result)["step_memory_mib"])
        plain, saved = best[False], best[True]
        entry = {"model": model_name, "input": input_size, "batch": batch, "plain": plain, "checkpointing": saved}
        payload["models"].append(entry)
        if "error" in plain or "error" in saved:
            rows.append([model_name, input_size, batch, plain.get("error", ""), saved.get("error", ""), "", "", "", ""])
            continue
        rows.append([model_name, input_size, batch, f"{plain['step_memory_mib']:.0f}",
                     f"{saved['step_memory_mib']:.0f}",
                     f"{100 * (1 - saved['step_memory_mib'] / plain['step_memory_mib']):.0f}%",
                     f"{plain['step_seconds']:.2f}", f"{saved['step_seconds']:.2f}",
                     f"{100 * (saved['step_seconds'] / plain['step_seconds'] - 1):+.0f}%"])
    body = ("Peak memory a training step adds (MiB, ru_maxrss minus the resident set before the step) and the "
            "median step time, fp32, one fresh process per variant, best of "
            f"{rounds} round(s).\n\n" + _common.markdown_table(
                ["model", "input", "batch", "plain MiB", "checkpointed MiB", "memory saved", "plain s/step",
                 "checkpointed s/step", "time cost"], rows))
    _common.finish(NAME, "Gradient checkpointing: memory saved and time cost", header, payload, body,
                   args.results_dir)


if __name__ == "__main__":
    main()
