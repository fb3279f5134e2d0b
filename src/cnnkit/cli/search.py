"""`cnnkit search`: architecture search on your data within a time budget (cnnkit.search)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnkit.errors import ConfigError


def add_search(commands) -> None:
    parser = commands.add_parser(
        "search", help="architecture search: RegNet or FastNet design spaces, compound scaling or DARTS cells, "
                       "in a time budget",
        description="Search a space of networks on your data: each candidate is trained briefly (the proxy: a few\n"
                    "epochs on a subset) and recorded in SEARCH_DIR/candidates.jsonl; the search writes the Pareto\n"
                    "front (accuracy vs MACs), error EDF plots, report.md and the winner as winner.yaml (a cnnkit\n"
                    "YAML network) with winner_recipe.yaml. A killed search continues with --resume SEARCH_DIR\n"
                    "without retraining finished candidates.\n\n"
                    "spaces and strategies:\n"
                    "  regnet   RegNetX design space (depth, w_0, w_a, w_m, group width, bottleneck); random,\n"
                    "           evolution (aging) or halving (successive halving over proxy epochs)\n"
                    "  fastnet  FastNet's own design space: stem width, each stage's width and convolutions (fastnet\n"
                    "           itself is one point); random, evolution or halving\n"
                    "  scaling  EfficientNet compound scaling of fastnet: (alpha, beta, gamma) grid, then phi=-1..2\n"
                    "  cells    DARTS cell space: darts (first-order differentiable search) or random cells",
        epilog="examples:\n"
               "  cnnkit search --space regnet --strategy random --budget 10m --constraint 'macs<=19M'\n"
               "  cnnkit search --space regnet --strategy evolution --budget 30m --full 8 num_threads=2\n"
               "  cnnkit search --space fastnet --strategy halving --budget 40m --constraint 'macs<=11.3M' --full 4\n"
               "  cnnkit search --resume searches/regnet-random-fashion-mnist\n"
               "  cnnkit train --config searches/regnet-random-fashion-mnist/winner_recipe.yaml\n\n"
               "on a cluster: see the cnnkit.search module docstring (Optuna with a shared storage, or Ray Tune).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", choices=("regnet", "fastnet", "scaling", "cells"), default="regnet")
    parser.add_argument("--strategy", default=None,
                        help="random | evolution | halving (regnet, fastnet); darts | random (cells); default "
                             "random/darts")
    parser.add_argument("--data", default="fashion-mnist", help="the dataset, as for cnnkit train")
    parser.add_argument("--budget", default="10m", help="training time to spend: 90s, 10m, 1.5h (default 10m)")
    parser.add_argument("--constraint", action="append", default=[], metavar="METRIC<=VALUE",
                        help="e.g. macs<=19M or params<=300k (repeatable); candidates outside are never trained")
    parser.add_argument("--proxy-epochs", type=int, default=1, help="proxy training epochs (default 1)")
    parser.add_argument("--proxy-images", type=int, default=5000,
                        help="proxy training subset size, 0 for all (default 5000)")
    parser.add_argument("--max-candidates", type=int, help="stop after this many trained candidates")
    parser.add_argument("--full", type=int, default=0, metavar="K",
                        help="retrain K candidates spread over the proxy ranking with the full recipe: the "
                             "proxy-vs-full rank correlation, and the winner picked by full training")
    parser.add_argument("--full-epochs", type=int, default=10, help="epochs of the full recipe (default 10)")
    parser.add_argument("--full-pick", choices=("spread", "top"), default="spread",
                        help="which K to retrain: spread over the proxy ranking (for the correlation, default) or "
                             "the top K at the largest proxy budget (to pick the winner)")
    parser.add_argument("--darts-epochs", type=int, default=2, help="--space cells: epochs of the DARTS search")
    parser.add_argument("--random-cells", type=int, default=8,
                        help="--space cells --strategy darts: random cells trained as the baseline (default 8)")
    parser.add_argument("--workers", type=int, default=1, help="processes training candidates side by side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="searches", help="parent folder of search directories")
    parser.add_argument("--name", help="search directory name (default SPACE-STRATEGY-DATA)")
    parser.add_argument("--resume", metavar="SEARCH_DIR", help="continue a search with its recorded settings")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="cnnkit train settings for every candidate, e.g. num_threads=2 batch_size=64")


def run_search(args) -> int:
    from cnnkit.cli.train import check_settings
    from cnnkit.config import parse_key_values

    settings = parse_key_values(args.overrides)
    check_settings(None, {**settings, "data": args.data})  # a mistyped setting answers now, not after the data is written
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    strategy = args.strategy or {"cells": "darts", "scaling": "grid"}.get(args.space, "random")
    if args.resume:
        root = Path(args.resume)
    else:
        data_name = Path(args.data).name if "/" in args.data else args.data
        root = Path(args.out) / (args.name or f"{args.space}-{strategy}-{data_name}")
    from cnnkit.search import search

    result = search(root, space=args.space, strategy=strategy, data=args.data, budget=args.budget,
                    constraints=args.constraint, proxy_epochs=args.proxy_epochs, proxy_images=args.proxy_images,
                    seed=args.seed, workers=args.workers, full=args.full, full_epochs=args.full_epochs,
                    full_pick=args.full_pick,
                    max_candidates=args.max_candidates, settings=settings, resume=bool(args.resume),
                    darts_epochs=args.darts_epochs, random_cells=args.random_cells)
    winner = result["winner"]
    if winner is not None:
        print(f"winner: {winner['description']}: {winner['macs'] / 1e6:.2f} MMACs, proxy accuracy "
              f"{100 * winner['score']:.2f}%")
        print(f"train it: cnnkit train --config {root / 'winner_recipe.yaml'}")
    else:
        print(f"no candidate finished within the budget; see {root / 'candidates.jsonl'}")
    return 0
