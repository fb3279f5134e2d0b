"""Face-recognition losses side by side on an open-set benchmark, and gallery search latency.

The data: the glyph identity benchmark (cnnkit.data.glyphs: an identity is a character, its images the
character in every installed font, with seeded distortions; test identities are never trained on), made
once into --data (default /tmp/cnnkit-glyphs). Each loss trains the same backbone (--model, default
fastnet) with the same recipe and budget (--epochs, each run stopped by --minutes if given), then
`cnnkit evaluate` measures the test identities: TAR@FAR=1e-3 and 1e-2, EER, AUC, LFW-style 10-fold
accuracy, rank-1, rank-5, mAP.

Gallery: exact cosine search (one matrix product, cnnkit.tasks.embed.Gallery.search) over 1, 10k and 1M
random unit vectors of the run's embedding size: median latency of one query over --repeats calls.

    .venv/bin/python benchmarks/embedding.py                                 # arcface, triplet, softmax
    .venv/bin/python benchmarks/embedding.py --losses arcface --epochs 30 --minutes 20
    .venv/bin/python benchmarks/embedding.py --budget --minutes 20          # each loss trains for 20 minutes
    .venv/bin/python benchmarks/embedding.py --quick                         # smoke test: tiny everything

Writes benchmarks/results/embedding.json and .md (embedding-quick.* with --quick).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import _common

NAME = "embedding"
LOSSES = {"softmax": {"embed_loss": "softmax"}, "triplet": {"embed_loss": "triplet", "images_per_identity": 4},
          "arcface": {"embed_loss": "arcface", "margin_scale": 30.0}}  # s=30: 64 over-sharpens ~100 identities
SHOWN = ("rank1", "rank5", "map", "tar_at_far_0.001", "tar_at_far_0.01", "eer", "auc", "verification_accuracy")
GOALS = {"rank1": 0.95, "tar_at_far_0.001": 0.90}  # issue 19's goals for ArcFace


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/tmp/cnnkit-glyphs", help="glyph benchmark folder (made if missing)")
    parser.add_argument("--losses", nargs="+", choices=list(LOSSES), default=list(LOSSES))
    parser.add_argument("--model", default="fastnet", help="trunk of the embedder (default fastnet)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per loss (default 20)")
    parser.add_argument("--minutes", type=float, default=20.0, help="stop a run after this many minutes (default 20)")
    parser.add_argument("--budget", action="store_true",
                        help="train each loss for --minutes with `budget=` (epochs and LR schedule planned for "
                             "the time) instead of --epochs")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=20, help="gallery search: calls per size (default 20)")
    parser.add_argument("--extra-train", metavar="DIR",
                        help="a CJK glyph set (made there if missing: `cnnkit data make-glyphs DIR --characters cjk "
                             "--distinct-pictures --variants 3`) whose identities, train and test, all join the "
                             "training split; the test identities stay --data's")
    parser.add_argument("--out", default="/tmp/cnnkit-embedding-runs", help="parent of the run directories")
    parser.add_argument("--quick", action="store_true", help="smoke test: few identities, 1 epoch, small galleries")
    parser.add_argument("--results-dir", help="where the result files go (default benchmarks/results)")
    return parser.parse_args()


def make_data(path: Path, quick: bool) -> str:
    from cnnkit.data.glyphs import GlyphsConfig, find_fonts, fonts_hash, make_glyphs

    if not (path / "README.txt").is_file():
        config = GlyphsConfig(variants=1) if quick else GlyphsConfig()
        characters = "ABCDEFGHJKLMNPRSTUVWXYZ" if quick else None
        make_glyphs(path, config, fonts=find_fonts(), **({"characters": characters} if characters else {}))
    readme = (path / "README.txt").read_text().splitlines()
    digest = next((line.split(": ", 1)[1] for line in readme if line.startswith("fonts digest: ")), None)
    if digest is None:  # made before the README recorded it: the digest of the fonts its README lists
        names = set(next(line for line in readme if line.startswith("fonts: "))[len("fonts: "):].split(", "))
        digest = fonts_hash([face for face in find_fonts() if face.name in names])
    return f"{readme[0]} (fonts {digest})"


def with_extra_training(base: Path, extra: Path) -> Path:
    """BASE's test split, and BASE's training identities plus every identity of EXTRA (hard links)."""
    import os

    from cnnkit.data.glyphs import CJK_CHARACTERS, GlyphsConfig, make_glyphs

    if not (extra / "README.txt").is_file():
        make_glyphs(extra, GlyphsConfig(variants=3, distinct_pictures=True), characters=CJK_CHARACTERS)
    combined = base.with_name(f"{base.name}+{extra.name}")
    if (combined / "README.txt").is_file():
        return combined
    sources = [base / "train", extra / "train", extra / "test"]
    identities = [folder for source in sources for folder in sorted(source.iterdir()) if folder.is_dir()]
    if len({folder.name for folder in identities}) != len(identities):
        raise SystemExit(f"{base} and {extra} share identities: choose an extra set of other characters")
    for split, folders in (("train", identities), ("test", sorted((base / "test").iterdir()))):
        for folder in folders:
            (combined / split / folder.name).mkdir(parents=True)
            for file in folder.iterdir():
                os.link(file, combined / split / folder.name / file.name)
    readme = (base / "README.txt").read_text().splitlines()[0] + f" + every identity of {extra} in training"
    (combined / "README.txt").write_text(readme + "\n" + (extra / "README.txt").read_text())
    return combined


def cnnkit(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnkit", *map(str, arguments)], capture_output=True, text=True)


def train_and_evaluate(loss: str, args, data: Path) -> dict:
    settings = {**LOSSES[loss], "num_threads": args.threads, "seed": args.seed, "report": "false",
                "progress": "false", "batch_size": 32 if args.quick else 128}
    name = f"{loss}-{args.model}" + ("-quick" if args.quick else "")
    started = time.perf_counter()
    epochs = 1 if args.quick else args.epochs
    if args.budget:
        settings["budget"] = f"{args.minutes * 60:.0f}s"
    command = ["train", "--task", "embed", "--data", data, "--model", args.model, "--epochs", epochs, "--out", args.out,
               "--name", name, *[f"{key}={value}" for key, value in settings.items()]]
    process = subprocess.Popen([sys.executable, "-m", "cnnkit", *map(str, command)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=args.minutes * 60 + (300 if args.budget else 120))
    except subprocess.TimeoutExpired:  # the budget: the run keeps what its completed epochs saved
        process.terminate()
        output, _ = process.communicate()
    seconds = time.perf_counter() - started
    run = Path(args.out) / name
    if not (run / "best.safetensors").is_file():
        raise SystemExit(f"{loss}: training failed:\n{output[-3000:]}")
    epochs_done = len((run / "metrics.jsonl").read_text().splitlines())
    evaluation = cnnkit("evaluate", run, "--json")
    if evaluation.returncode:
        raise SystemExit(f"{loss}: evaluate failed: {evaluation.stderr}")
    metrics = json.loads(evaluation.stdout)
    print(f"{loss}: {epochs_done} epochs in {seconds / 60:.1f} min; " +
          ", ".join(f"{key} {metrics.get(key, float('nan')):.4f}" for key in SHOWN), flush=True)
    return {"loss": loss, "epochs": epochs_done, "train_minutes": seconds / 60, "run_dir": str(run),
            **{key: metrics.get(key) for key in (*SHOWN, "identities", "count", "pairs", "genuine_pairs")}}


def gallery_latency(dimension: int, sizes: list[int], repeats: int) -> list[dict]:
    import torch

    from cnnkit.tasks.embed import Gallery

    rows = []
    for size in sizes:
        generator = torch.Generator().manual_seed(size)
        gallery = Gallery(torch.nn.functional.normalize(torch.randn(size, dimension, generator=generator), dim=1),
                          [f"id{i}" for i in range(size)])
        query = torch.nn.functional.normalize(torch.randn(1, dimension, generator=generator), dim=1)
        gallery.search(query, 5)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            gallery.search(query, 5)
            times.append((time.perf_counter() - started) * 1000)
        rows.append({"size": size, **{f"ms_{k}": v for k, v in _common.summarize(times).items() if k != "n"}})
        print(f"gallery of {size}: median {rows[-1]['ms_median']:.3f} ms per query", flush=True)
    return rows


def main() -> None:
    args = parse_args()
    header = _common.run_header(args.quick)
    _common.set_threads(args.threads)
    data = Path(args.data + ("-quick" if args.quick else ""))
    description = make_data(data, args.quick)
    if args.extra_train:
        data = with_extra_training(data, Path(args.extra_train))
        description = (data / "README.txt").read_text().splitlines()[0] + \
            f"; extra training identities: {(data / 'README.txt').read_text().splitlines()[1]}"
    rows = [train_and_evaluate(loss, args, data) for loss in args.losses]
    sizes = [1, 1000] if args.quick else [1, 10_000, 1_000_000]
    latency = gallery_latency(128, sizes, 3 if args.quick else args.repeats)
    table = _common.markdown_table(
        ["loss", "epochs", "minutes", *SHOWN],
        [[r["loss"], r["epochs"], f"{r['train_minutes']:.1f}", *[f"{r[k]:.4f}" for k in SHOWN]] for r in rows])
    verdicts = []
    arcface = next((r for r in rows if r["loss"] == "arcface"), None)
    if arcface:
        for key, goal in GOALS.items():
            verdicts.append(f"- ArcFace {key} {arcface[key]:.4f} against the goal {goal}: "
                            f"{'met' if arcface[key] >= goal else 'NOT met'}")
        others = [r for r in rows if r["loss"] != "arcface"]
        if others:
            ahead = all(arcface["tar_at_far_0.001"] > r["tar_at_far_0.001"] for r in others)
            verdicts.append(f"- ArcFace ahead of {', '.join(r['loss'] for r in others)} on TAR@FAR=1e-3: "
                            f"{'yes' if ahead else 'no'}")
    latency_table = _common.markdown_table(["gallery size", "median ms / query", "min", "max"],
                                           [[r["size"], f"{r['ms_median']:.3f}", f"{r['ms_min']:.3f}",
                                             f"{r['ms_max']:.3f}"] for r in latency])
    body = (f"Data: {description}; test identities never trained on.\n\n{table}\n\n" + "\n".join(verdicts) +
            f"\n\nExact gallery search (128-d, top 5, one query, {args.threads} threads):\n\n{latency_table}\n")
    _common.finish(NAME, "Embedding losses on the glyph identity benchmark", header,
                   {"data": description, "results": rows, "gallery": latency}, body, args.results_dir)


if __name__ == "__main__":
    main()
