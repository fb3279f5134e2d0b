"""`search(...)`: one architecture search from options to report; the function `cnnkit search` calls."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import yaml

from cnnkit.errors import ConfigError
from cnnkit.files import atomic_write_text
from cnnkit.search.directory import SearchDirectory, append_jsonl, dump_spec, load_options, model_of, read_jsonl
from cnnkit.search.proxy import measure_latency, train_candidate, write_proxy_data
from cnnkit.search.report import final_rung, write_report
from cnnkit.search.spaces import Constraint, space_by_name
from cnnkit.search.strategies import run_strategy

# Proxy runs: a held-out fifth of the subset (1,000 of 5,000 images: 0.1-point resolution) and batch 64, so
# one epoch of 4,000 images still makes 62 optimizer steps (measured: a 1.3 MMACs RegNet reaches 64% validation
# accuracy after them, chance being 10%). Overridden by the user's key=value settings.
PROXY_DEFAULTS = {"val_fraction": 0.2, "batch_size": 64}


def parse_budget(text: str | float | int) -> float:
    """Seconds from '90s', '10m', '1.5h' or a plain number of seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(text).lower())
    if not match:
        raise ConfigError(f"budget {text!r}: write a duration such as 90s, 10m or 1.5h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def search(root: str | Path, *, space: str = "regnet", strategy: str = "random", data: str = "fashion-mnist",
           budget: str | float = "10m", constraints: list[str] = (), proxy_epochs: int = 1,
           proxy_images: int = 5000, seed: int = 0, workers: int = 1, full: int = 0, full_epochs: int = 10,
           full_pick: str = "spread",
           max_candidates: int | None = None, settings: dict[str, Any] | None = None, resume: bool = False,
           base: str = "fastnet", darts_epochs: int = 2, random_cells: int = 8, trainer: Callable = train_candidate,
           latency_repeats: int = 30, log: Callable = print) -> dict[str, Any]:
    """Run (or resume) a search in `root`; returns {"records", "full", "winner", "report"}.

    Args:
        root: The search directory (see cnnkit.search.directory).
        space: "regnet", "fastnet", "scaling" or "cells".
        strategy: "random", "evolution" or "halving" ("grid" for scaling, "darts" or "random" for cells).
        data: The dataset, as `cnnkit train --data`.
        budget: Training time the search may spend ("10m"), counted over resumed runs too.
        constraints: Cost bounds such as "macs<=19M".
        proxy_epochs, proxy_images: The proxy: epochs (the first rung for halving) on a subset of this size.
        full: Retrain this many candidates with `full_epochs` on all the data, for the proxy-vs-full rank
            correlation and a better-founded winner.
        full_pick: Which ones: "spread" (evenly over the proxy ranking: the correlation means something) or
            "top" (the best at the largest proxy budget: the budget goes to finding the winner).
        max_candidates: Stop after this many trained candidates.
        settings: TrainConfig keys for every run (e.g. num_threads=2); the proxy adds PROXY_DEFAULTS.
        resume: Continue the search in `root` with its recorded options.
        base: The scaled network for space=scaling.
        darts_epochs, random_cells: space=cells: epochs of the DARTS search; random cells trained beside its cell.
        trainer: train(model, data, run_dir, settings) -> metrics (cnnkit.search.proxy.train_candidate).
        latency_repeats: forward passes timed per candidate (the median is its latency).
    """
    root = Path(root)
    options = {"space": space, "strategy": strategy, "data": data, "budget": budget,
               "constraints": list(constraints), "proxy_epochs": proxy_epochs, "proxy_images": proxy_images,
               "seed": seed, "workers": workers, "full": full, "full_epochs": full_epochs, "full_pick": full_pick,
               "max_candidates": max_candidates, "settings": dict(settings or {}), "base": base,
               "darts_epochs": darts_epochs, "random_cells": random_cells}
    strategies = {"regnet": ("random", "evolution", "halving"), "fastnet": ("random", "evolution", "halving"),
                  "scaling": ("grid",), "cells": ("darts", "random")}
    if not resume and options["strategy"] not in strategies.get(options["space"], (options["strategy"],)):
        raise ConfigError(f"--space {options['space']} searches with {' or '.join(strategies[options['space']])}, "
                          f"not {options['strategy']!r}")
    if full_pick not in ("spread", "top"):
        raise ConfigError(f"full_pick {full_pick!r}: choose spread or top")
    for text in options["constraints"]:  # mistakes answer before anything is written
        Constraint(text)
    parse_budget(options["budget"])
    options = load_options(root, options, resume)
    bounds = [Constraint(text) for text in options["constraints"]]
    proxy = write_proxy_data(options["data"], root / "proxy_data", options["proxy_images"], options["seed"])
    log(f"search {root}: {options['space']} space, {options['strategy']} strategy, proxy {proxy['images']} images "
        f"x {options['proxy_epochs']} epoch(s), budget {options['budget']}")
    settings = {**PROXY_DEFAULTS, **options["settings"], "seed": options["seed"]}
    space_object = space_by_name(options["space"], base=options["base"]) if options["space"] == "scaling" \
        else space_by_name(options["space"])
    directory = SearchDirectory(root, space_object, trainer, proxy, settings, parse_budget(options["budget"]),
                                options["max_candidates"], bounds, options["workers"])
    extra_lines: list[str] = []
    if options["space"] == "scaling":
        from cnnkit.search.scaling import compound_scaling

        extra_lines = compound_scaling(space_object, directory, options["proxy_epochs"], log)
    elif options["space"] == "cells":
        from cnnkit.search.cells import run_cells

        extra_lines = run_cells(space_object, directory, options, proxy, log)
    else:
        run_strategy(options["strategy"], space_object, directory, options["proxy_epochs"], options["seed"])
    records = list(directory.records.values())
    log(f"{len(records)} candidates ({directory.reused} from candidates.jsonl), "
        f"{directory.seconds_spent:.0f} s of training")
    records = with_latency(root, records, space_object, proxy, directory, latency_repeats)
    full_records = retrain(root, records, options, trainer, log, space_object)
    winner = pick_winner(records, full_records)
    if winner is not None:
        write_winner(root, winner, options, space_object)
    report = write_report(root, options, records, full_records, winner, space_object.edf_parameters, extra_lines)
    log(f"report: {report}")
    return {"records": records, "full": full_records, "winner": winner, "report": report}


def with_latency(root: Path, records: list[dict[str, Any]], space, proxy: dict[str, Any],
                 directory: SearchDirectory, repeats: int = 30) -> list[dict[str, Any]]:
    """The records with `latency_ms` (batch 1, CPU, fp32, median of 30), measured once per candidate after the
    search (not while other candidates train) and kept in latency.json."""
    import json

    path = root / "latency.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    for record in final_rung(records):
        if record["key"] not in known:
            size = directory._input_size(record["arch"])
            model = space.build(record["arch"], proxy["channels"], size, len(proxy["classes"]))
            known[record["key"]] = round(measure_latency(model, (proxy["channels"], size, size), repeats), 4)
    atomic_write_text(path, json.dumps(known, indent=1))
    return [{**record, "latency_ms": known[record["key"]]} if record["key"] in known else record
            for record in records]


def retrain(root: Path, records: list[dict[str, Any]], options: dict[str, Any], trainer: Callable,
            log: Callable, space) -> list[dict[str, Any]]:
    """Train `options["full"]` candidates with the full recipe: evenly spread over the proxy ranking, or the
    best at the largest proxy budget (`full_pick="top"`)."""
    path = root / "full.jsonl"
    done = {record["key"]: record for record in read_jsonl(path)}
    count = options.get("full") or 0
    top = options.get("full_pick") == "top"
    ranked = sorted(final_rung(records), key=lambda r: (r["epochs"], r["score"]) if top else r["score"], reverse=True)
    if count and ranked:
        count = min(count, len(ranked))
        picks = ranked[:count] if top else [ranked[round(i * (len(ranked) - 1) / max(1, count - 1))]
                                            for i in range(count)]
        for record in picks:
            if record["key"] in done:
                continue
            model, extra = model_of(space, record["arch"], root / record["spec_file"])
            settings = {**options["settings"], **_carried(record["settings"]), **extra,
                        "epochs": options["full_epochs"], "seed": options["seed"]}
            log(f"full recipe: {record['key']} ({options['full_epochs']} epochs on {options['data']})")
            metrics = trainer(model, options["data"], root / "full" / record["key"], settings)
            done[record["key"]] = {"key": record["key"], "score": metrics.get("val_accuracy"),
                                   "seconds": metrics["seconds"], "epochs": options["full_epochs"]}
            append_jsonl(path, done[record["key"]])
    return list(done.values())


def pick_winner(records: list[dict[str, Any]], full: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The best full-recipe candidate if any were retrained, else the best at the largest proxy budget."""
    final = final_rung(records)
    if not final:
        return None
    full_scores = {f["key"]: f["score"] for f in full if f.get("score") is not None}
    retrained = [r for r in final if r["key"] in full_scores]
    if retrained:
        best = max(retrained, key=lambda r: full_scores[r["key"]])
        return {**best, "full_score": full_scores[best["key"]]}
    largest = max(r["epochs"] for r in final)
    return max((r for r in final if r["epochs"] == largest), key=lambda r: r["score"])


def _carried(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that belong to the candidate rather than to the proxy (scaling's resolution)."""
    return {key: value for key, value in settings.items() if key == "image_size"}


def write_winner(root: Path, winner: dict[str, Any], options: dict[str, Any], space) -> None:
    """winner.yaml (the network as a cnnkit YAML spec; DARTS cells: winner_genotype.yaml) and winner_recipe.yaml
    (network + data + the full recipe's epochs)."""
    path = root / ("winner_genotype.yaml" if hasattr(space, "model_settings") else "winner.yaml")
    atomic_write_text(path, f"# {winner['description']}\n" + dump_spec(winner["spec"]))
    model, extra = model_of(space, winner["arch"], path.resolve())
    recipe = {"model": model, "data": options["data"], "epochs": options["full_epochs"], **options["settings"],
              **_carried(winner["settings"]), **extra}
    atomic_write_text(root / "winner_recipe.yaml",
                      f"# the winner of the search in {root}: {winner['macs'] / 1e6:.2f} MMACs, proxy accuracy "
                      f"{100 * winner['score']:.2f}%\n# cnnkit train --config {root / 'winner_recipe.yaml'}\n"
                      + yaml.safe_dump(recipe, sort_keys=False))
