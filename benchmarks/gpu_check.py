"""The GPU check (issue 23): one command that runs cnnkit's CUDA path end to end and prints what it measured.

Prepared on a machine with network and the data (the GPU machine has none), then run on the GPU machine:

    .venv/bin/python benchmarks/gpu_check.py --prepare /tmp/gpu-data          # Fashion-MNIST IDX + a small scenes set
    .venv/bin/python benchmarks/gpu_check.py --data /tmp/gpu-data             # on the GPU: at most ~8 minutes
    .venv/bin/python benchmarks/gpu_check.py --prepare D --quick && \\
        .venv/bin/python benchmarks/gpu_check.py --data D --device cpu --quick  # the script's smoke test on a CPU

What it runs, each step on its own (a failing step is a row with its error, the others still run):

  fastnet on Fashion-MNIST, 2 epochs each in fp32, bf16, fp16 + GradScaler, and fp32 under torch.compile:
      training images/s (the last epoch's, all ranks summed), test accuracy
  resume: the fp32 run stopped after epoch 1 and resumed: max |difference| of its weights to the uninterrupted run
  yolo_fastnet, Faster R-CNN and Mask R-CNN (ResNet-18 FPN) on the scenes set: one epoch of a tiny training split
      (a few optimizer steps), then evaluation on its test split (mAP@.5)
  CUDA vs CPU: the fp32 run's checkpoint loaded on both; max |difference| of the test probabilities
  ONNX export of the fp32 run: max |difference| to PyTorch (the exporter's parity check)

Writes benchmarks/results/gpu_check.json and .md (gpu_check-quick.* with --quick) and prints the table. With
--quick, --prepare writes 4 000 training and 1 000 test images and 24/8/8 scenes; the runs take 1 epoch.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

import _common

NAME = "gpu_check"
FASHION_FOLDER, SCENES_FOLDER = "fashion-mnist", "scenes"
IDX_HEADER = {"images": 16, "labels": 8}  # bytes before the data: magic, count (, rows, cols) as big-endian int32


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepare", metavar="DIR", help="write the data the check needs into DIR, then stop")
    parser.add_argument("--data", metavar="DIR", help="the folder --prepare wrote")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (the smoke test)")
    parser.add_argument("--quick", action="store_true", help="small data, 1 epoch: a smoke test of the script")
    parser.add_argument("--out", default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--results-dir", default=None)
    return parser.parse_args()


# ------------------------------------------------------------------ preparing (CPU machine, with the data)
def _write_idx_subset(source: Path, target: Path, kind: str, count: int | None) -> None:
    """Copy an IDX file (gzip or plain) to `target` (.gz), keeping its first `count` items (None: all)."""
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rb") as file:
        data = file.read()
    header = bytearray(data[:IDX_HEADER[kind]])
    item_bytes = 1 if kind == "labels" else int.from_bytes(header[8:12], "big") * int.from_bytes(header[12:16], "big")
    total = int.from_bytes(header[4:8], "big")
    count = total if count is None else min(count, total)
    header[4:8] = count.to_bytes(4, "big")
    with gzip.open(target, "wb", compresslevel=1) as file:
        file.write(bytes(header) + data[IDX_HEADER[kind]:IDX_HEADER[kind] + count * item_bytes])


def prepare(folder: Path, quick: bool) -> None:
    from cnnkit.data.fashion_mnist import find_fashion_mnist
    from cnnkit.data.scenes import make_scenes
    from cnnkit.scenes_config import ScenesConfig

    found = find_fashion_mnist()
    if found is None:
        sys.exit("Fashion-MNIST not found: download it first (`cnnkit train` does), or set CNNKIT_DATA")
    fashion = folder / FASHION_FOLDER
    fashion.mkdir(parents=True, exist_ok=True)
    for name, path in found.items():
        kind = "labels" if "labels" in name else "images"
        count = None if not quick else (4000 if name.startswith("train") else 1000)
        _write_idx_subset(path, fashion / name, kind, count)
    config = ScenesConfig(train=24, val=8, test=8) if quick else ScenesConfig(train=64, val=32, test=32)
    if (folder / SCENES_FOLDER).exists():
        shutil.rmtree(folder / SCENES_FOLDER)
    # The scenes take their garments from the whole Fashion-MNIST (its item pools need every image).
    make_scenes(folder / SCENES_FOLDER, config, fashion_mnist_root=next(iter(found.values())).parent, progress=False)
    print(f"prepared {folder}: {fashion} and {folder / SCENES_FOLDER}; copy the folder to the GPU machine")


# ------------------------------------------------------------------ the check (the GPU machine)
def _train(out: Path, name: str, **settings):
    import cnnkit

    return cnnkit.train(out=str(out), name=name, report=False, progress=False, seed=0, **settings)


def _last_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.jsonl").read_text().splitlines()[-1])


def _step(rows: list[dict], name: str, function) -> None:
    started = time.perf_counter()
    row = {"step": name}
    try:
        row.update(function() or {})
        row["status"] = "ok"
    except Exception as error:  # noqa: BLE001 - one failing step is a row with its error; the others still run
        row["status"] = f"FAILED: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        traceback.print_exc()
    row["seconds"] = round(time.perf_counter() - started, 1)
    rows.append(row)
    print(f"{name}: {row}", flush=True)


def _max_weight_difference(first: Path, second: Path) -> float:
    from safetensors.torch import load_file

    a, b = load_file(str(first)), load_file(str(second))
    return max((float((a[k].double() - b[k].double()).abs().max()) for k in a if k.startswith("model.")
                and a[k].is_floating_point() and a[k].numel()), default=0.0)


def _test_images(data: Path, count: int) -> torch.Tensor:
    """The first `count` Fashion-MNIST test images, uint8 (N, 1, 28, 28)."""
    with gzip.open(data / FASHION_FOLDER / "t10k-images-idx3-ubyte.gz", "rb") as file:
        raw = file.read()
    return torch.frombuffer(bytearray(raw[16:16 + count * 784]), dtype=torch.uint8).view(-1, 1, 28, 28)


def check(data: Path, device: str, quick: bool, out: Path) -> tuple[list[dict], dict]:
    import cnnkit
    from cnnkit.export import export_run, load_predictor

    epochs = 1 if quick else 2
    fashion = str(data / FASHION_FOLDER)
    common = dict(data=fashion, model="fastnet", epochs=epochs, device=device)
    rows: list[dict] = []
    runs: dict[str, Path] = {}

    def classify(name: str, **settings):
        def run():
            result = _train(out, name, **common, **settings)
            runs[name] = result.run_dir
            metrics = _last_metrics(result.run_dir)
            test = cnnkit.load(result.run_dir, device=device).evaluate("test")
            return {"images_per_second": round(metrics["train_images_per_second"]),
                    "accuracy": round(test["accuracy"], 4), "train_seconds": round(sum(
                        json.loads(line)["epoch_seconds"] for line in
                        (result.run_dir / "metrics.jsonl").read_text().splitlines()), 1)}
        return run

    cuda = device.startswith("cuda")
    variants = [("fastnet fp32", dict(precision="fp32")), ("fastnet bf16", dict(precision="bf16"))]
    if cuda:
        variants += [("fastnet fp16 + GradScaler", dict(precision="fp16")),
                     ("fastnet fp32 torch.compile", dict(precision="fp32", compile=True))]
    for name, settings in variants:
        _step(rows, name, classify(name.replace(" ", "-").replace("+", "").replace(".", ""), **settings))

    def resume():
        stopped = _train(out, "resumed", **common, precision="fp32", stop_after_epoch=1)
        resumed = cnnkit.train(resume=stopped.run_dir, progress=False)
        difference = _max_weight_difference(resumed.run_dir / "last.safetensors",
                                            runs["fastnet-fp32"] / "last.safetensors")
        return {"max_difference": difference, "note": "weights vs the uninterrupted fp32 run"}

    if epochs > 1:
        _step(rows, "resume after epoch 1", resume)
    scenes = str(data / SCENES_FOLDER)
    for name, task, model in [("yolo_fastnet", "detect", "yolo_fastnet"),
                              ("Faster R-CNN", "detect", "fasterrcnn_resnet18_fpn"),
                              ("Mask R-CNN", "instance", "maskrcnn_resnet18_fpn")]:
        def detect(task=task, model=model, name=name):
            result = _train(out, name.replace(" ", "-"), task=task, model=model, data=scenes, epochs=1, device=device,
                            batch_size=8)  # a tiny split: a few optimizer steps
            metrics = _last_metrics(result.run_dir)
            test = cnnkit.load(result.run_dir, device=device).evaluate("test")
            score = next((value for key, value in test.items() if "map" in key and "50" in key), None)
            return {"images_per_second": round(metrics["train_images_per_second"], 1),
                    "accuracy": None if score is None else round(float(score), 4), "note": "test mAP@.5, 1 tiny epoch"}
        _step(rows, f"{name} ({task})", detect)

    def cuda_vs_cpu():
        images = _test_images(data, 256)
        on_device = load_predictor(runs["fastnet-fp32"], backend="torch", device=device).predict_proba(images)
        on_cpu = load_predictor(runs["fastnet-fp32"], backend="torch", device="cpu").predict_proba(images)
        return {"max_difference": float((torch.as_tensor(on_device) - torch.as_tensor(on_cpu)).abs().max()),
                "note": f"test probabilities, {device} vs cpu, 256 images"}

    _step(rows, "same checkpoint: device vs CPU", cuda_vs_cpu)

    def onnx():
        result = export_run(runs["fastnet-fp32"], "onnx", dynamic_batch=True)
        return {"max_difference": max(result.parity["max_abs_diff"].values()), "note": "ONNX Runtime vs PyTorch"}

    _step(rows, "ONNX export", onnx)
    gpu = {"name": torch.cuda.get_device_name(0), "capability": list(torch.cuda.get_device_capability(0)),
           "memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)} if cuda else None
    return rows, {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda, "device": device}


def table(rows: list[dict]) -> str:
    headers = ["step", "images/s", "accuracy", "max difference", "seconds", "status"]
    body = [[row["step"], row.get("images_per_second", ""), row.get("accuracy", ""),
             "" if row.get("max_difference") is None else f"{row['max_difference']:.3g}", row["seconds"],
             row["status"]] for row in rows]
    return _common.markdown_table(headers, body)


def main() -> None:
    args = parse_args()
    if args.prepare:
        prepare(Path(args.prepare), args.quick)
        return
    if not args.data:
        sys.exit("give --data DIR (written by --prepare DIR on a machine with the data)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run with --device cpu --quick for the smoke test")
    header = _common.run_header(args.quick)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    started = time.perf_counter()
    rows, environment = check(Path(args.data), args.device, args.quick, out)
    environment["total_seconds"] = round(time.perf_counter() - started, 1)
    gpu = environment["gpu"]
    title = f"GPU check on {gpu['name']}" if gpu else f"GPU check, smoke test on {args.device}"
    body = (f"\n{table(rows)}\n\ntorch {environment['torch']}, CUDA {environment['cuda']}, "
            f"total {environment['total_seconds']} s; runs in {out}\n")
    _common.finish(NAME, title, header, {"environment": environment, "rows": rows}, body, args.results_dir)
    if any(row["status"] != "ok" for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
