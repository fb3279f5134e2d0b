"""Architecture search on Fashion-MNIST (issue 21): what fits in a ~30-minute CPU budget, measured.

Parts (each one run under the shared lock, each under 15 minutes; results in benchmarks/results/search-PART.json,
then `--part write` composes benchmarks/results/search.md and search.json):

    regnet   `cnnkit search --space regnet --strategy random` with macs <= 11.3M (60% of fastnet's 18.8M),
             N candidates on the tiny proxy (5,000 training images, 1 epoch), the EDF plot, then K of them
             spread over the proxy ranking retrained with a longer recipe (FULL_EPOCHS epochs on the whole
             training split) for the proxy-vs-full Spearman correlation; fastnet scored by the same proxy.
    final    the search's winner vs fastnet, each trained with the `make demo` recipe (10 epochs) and evaluated
             once on the test split, one seed (the issue asks for 3; they did not fit).
    scaling  `cnnkit search --space scaling`: the (alpha, beta, gamma) grid at phi = 1, then phi = -1..2.

    flock /tmp/cnnkit-heavy.lock nice -n 5 .venv/bin/python benchmarks/search.py --part regnet
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

RESULTS = _common.REPO_ROOT / "benchmarks" / "results"
WORK = Path(os.environ.get("CNNKIT_SEARCH_BENCH", "/tmp/cnnkit-search-bench"))
THREADS = 2
FASTNET_MACS = 18.8e6  # fastnet at 1x28x28 (benchmarks/results/demo_accuracy.md: 0.0188 GMACs)


def part_regnet(args) -> dict:
    import torch

    from cnnkit.search import search
    from cnnkit.search.proxy import train_candidate
    from cnnkit.search.report import final_rung, proxy_full_pairs, spearman
    from cnnkit.search.run import PROXY_DEFAULTS

    torch.set_num_threads(THREADS)
    root = WORK / "regnet"
    started = time.perf_counter()
    result = search(root, space="regnet", strategy="random", budget="12m", max_candidates=args.candidates,
                    constraints=[f"macs<={0.6 * FASTNET_MACS:.0f}"], proxy_images=5000, proxy_epochs=1,
                    full=args.full, full_epochs=args.full_epochs, settings={"num_threads": THREADS},
                    resume=(root / "search.json").is_file())
    seconds = time.perf_counter() - started
    fastnet_dir = root / "reference-fastnet"
    if not (fastnet_dir / "best.safetensors").is_file():
        import shutil

        shutil.rmtree(fastnet_dir, ignore_errors=True)
        fastnet = train_candidate("fastnet", str(root / "proxy_data"), fastnet_dir,
                                  {**PROXY_DEFAULTS, "epochs": 1, "num_threads": THREADS, "seed": 0})
    else:
        fastnet = json.loads((fastnet_dir / "metrics.jsonl").read_text().splitlines()[-1])
    records = final_rung(result["records"])
    pairs = proxy_full_pairs(records, result["full"])
    return {"search_dir": str(root), "wall_seconds": seconds, "candidates": len(result["records"]),
            "training_seconds": sum(r["seconds"] for r in result["records"]),
            "proxy_scores": sorted(r["score"] for r in records),
            "fastnet_proxy_score": fastnet.get("val_accuracy"),
            "full": result["full"], "spearman": spearman([p for p, _ in pairs], [f for _, f in pairs]),
            "winner": {k: result["winner"][k] for k in ("key", "description", "macs", "params", "score", "full_score")
                       if k in result["winner"]} if result["winner"] else None,
            "report": str(result["report"])}


def _train_and_test(model: str, name: str, out: Path) -> dict:
    """`cnnkit train` with the demo recipe (defaults), then `cnnkit evaluate --json` (the test split, once)."""
    cnnkit = str(Path(sys.executable).parent / "cnnkit")
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    run_dir = out / name
    train = [cnnkit, "train", "--model", model, "--out", str(out), "--name", name, f"num_threads={THREADS}",
             "seed=0", "report=false", "progress=false"]
    started = time.perf_counter()
    if not (run_dir / "best.safetensors").is_file():
        subprocess.run(train, check=True, env=env, cwd=_common.REPO_ROOT)
    train_seconds = time.perf_counter() - started
    evaluation = subprocess.run([cnnkit, "evaluate", str(run_dir), "--json"], check=True, env=env,
                                capture_output=True, text=True, cwd=_common.REPO_ROOT)
    from cnnkit.engine.checkpoint import read_record
    from cnnkit.inspect import count_macs
    from cnnkit.registry import create_model

    record = read_record(run_dir / "best.safetensors")
    model_object = create_model(record["architecture"]["name"], **record["architecture"]["args"])
    return {"model": model, "command": " ".join(train), "test_accuracy": json.loads(evaluation.stdout)["accuracy"],
            "train_seconds": train_seconds, "macs": count_macs(model_object, (1, 28, 28)),
            "params": sum(p.numel() for p in model_object.parameters())}


def part_final(args) -> dict:
    out = WORK / "final"
    winner = WORK / "regnet" / "winner.yaml"
    if not winner.is_file():
        sys.exit("run --part regnet first (no winner.yaml)")
    return {"winner": _train_and_test(str(winner), "winner", out), "fastnet": _train_and_test("fastnet", "fastnet", out),
            "seeds": [0]}


def part_scaling(args) -> dict:
    import torch

    from cnnkit.search import search

    torch.set_num_threads(THREADS)
    root = WORK / "scaling"
    started = time.perf_counter()
    result = search(root, space="scaling", strategy="grid", budget="8m", proxy_images=5000, proxy_epochs=1,
                    settings={"num_threads": THREADS}, resume=(root / "search.json").is_file())
    family = [r for r in result["records"] if r["arch"]["phi"] != 1 or r is result["winner"]]
    return {"search_dir": str(root), "wall_seconds": time.perf_counter() - started,
            "candidates": len(result["records"]), "report": str(result["report"]),
            "grid": [{"arch": r["arch"], "macs": r["macs"], "score": r["score"]} for r in result["records"]],
            "family_lines": [line for line in Path(result["report"]).read_text().splitlines() if line.startswith("|")
                             and ("phi" in line or line[2:3].lstrip("-").isdigit())], "n_family": len(family)}


def write_markdown() -> None:
    raise NotImplementedError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("regnet", "final", "scaling", "write"), required=True)
    parser.add_argument("--candidates", type=int, default=40)
    parser.add_argument("--full", type=int, default=8)
    parser.add_argument("--full-epochs", type=int, default=3)
    args = parser.parse_args()
    if args.part == "write":
        write_markdown()
        return
    header = _common.run_header(quick=False)
    started = time.perf_counter()
    result = {"regnet": part_regnet, "final": part_final, "scaling": part_scaling}[args.part](args)
    import os as _os

    result = {**header, "part": args.part, "seconds": time.perf_counter() - started,
              "load_average_end": list(_os.getloadavg()), **result}
    path = RESULTS / f"search-{args.part}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
