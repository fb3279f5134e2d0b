"""What a search found: the Pareto front, error EDFs, the proxy's rank correlation, the winner and report.md.

EDF (Radosavovic et al. 2019, "On Network Design Spaces for Visual Recognition", and 2020): the empirical
distribution function of the error of the sampled models, F(e) = share of models with error < e. Plotted
per range of each design parameter (its lower, middle and upper third of sampled values), so the curve
further left shows the range where good models are more likely.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cnnkit.files import atomic_write_text


def ok_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [record for record in records if record.get("status") == "ok" and record.get("score") is not None]


def final_rung(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each architecture once, at the largest proxy budget it was trained with (successive halving)."""
    best: dict[str, dict[str, Any]] = {}
    for record in ok_records(records):
        name = repr(sorted(record["arch"].items()))
        if name not in best or record["epochs"] > best[name]["epochs"]:
            best[name] = record
    return list(best.values())


def pareto_front(records: list[dict[str, Any]], cost: str = "macs") -> list[dict[str, Any]]:
    """The records no other record beats on both score (higher) and cost (lower), by increasing cost."""
    front, best_score = [], -math.inf
    for record in sorted(records, key=lambda r: (r[cost], -r["score"])):
        if record["score"] > best_score:
            front.append(record)
            best_score = record["score"]
    return front


def rank(values: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank (as scipy.stats.rankdata)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(first: list[float], second: list[float]) -> float | None:
    """Spearman's rank correlation: Pearson's correlation of the ranks (None below 3 pairs or for constants)."""
    if len(first) != len(second) or len(first) < 3:
        return None
    a, b = rank(first), rank(second)
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    covariance = sum((x - mean_a) * (y - mean_b) for x, y in zip(a, b))
    spread = math.sqrt(sum((x - mean_a) ** 2 for x in a) * sum((y - mean_b) ** 2 for y in b))
    return covariance / spread if spread else None


def edf_groups(records: list[dict[str, Any]], parameter: str) -> list[tuple[str, list[float]]]:
    """(label, sorted errors) for the lower, middle and upper third of `parameter`'s sampled values."""
    values = sorted({_parameter(record, parameter) for record in records})
    if len(values) < 2:
        return [(f"{parameter}={values[0]:g}" if values else parameter, sorted(1 - r["score"] for r in records))]
    cuts = [values[len(values) // 3], values[2 * len(values) // 3]] if len(values) >= 3 else [values[1]]
    edges = [-math.inf, *cuts, math.inf]
    groups = []
    for low, high in zip(edges[:-1], edges[1:]):
        members = [r for r in records if low <= _parameter(r, parameter) < high]
        if members:
            shown = [_parameter(r, parameter) for r in members]
            groups.append((f"{parameter} {min(shown):g}-{max(shown):g} ({len(members)})",
                           sorted(1 - r["score"] for r in members)))
    return groups


def _parameter(record: dict[str, Any], parameter: str) -> float:
    return float(record["params"] if parameter == "params" else record["arch"][parameter])


def write_plots(root: Path, records: list[dict[str, Any]], edf_parameters: tuple[str, ...],
                full: list[dict[str, Any]]) -> list[str]:
    """pareto.png, edf.png and (with full runs) proxy_vs_full.png in `root`; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    front = pareto_front(records)
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.scatter([r["macs"] / 1e6 for r in records], [100 * r["score"] for r in records], s=14, alpha=0.6,
                 label="candidates")
    axis.plot([r["macs"] / 1e6 for r in front], [100 * r["score"] for r in front], "r.-", label="Pareto front")
    axis.set_xlabel("MMACs per image")
    axis.set_ylabel("proxy validation accuracy %")
    axis.legend()
    figure.tight_layout()
    figure.savefig(root / "pareto.png", dpi=100)
    plt.close(figure)
    written.append("pareto.png")

    parameters = [p for p in (*edf_parameters, "params") if p == "params" or p in records[0]["arch"]]
    columns = 3
    rows = math.ceil((len(parameters) + 1) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    panels = [("all", [("all models", sorted(1 - r["score"] for r in records))])]
    panels += [(parameter, edf_groups(records, parameter)) for parameter in parameters]
    for axis, (title, groups) in zip(axes.flat, panels):
        for label, errors in groups:
            axis.step([100 * e for e in errors], [(i + 1) / len(errors) for i in range(len(errors))], where="post",
                      label=label)
        axis.set_title(f"EDF of error: {title}", fontsize=9)
        axis.set_xlabel("proxy error %", fontsize=8)
        axis.legend(fontsize=6)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(root / "edf.png", dpi=90)
    plt.close(figure)
    written.append("edf.png")

    pairs = proxy_full_pairs(records, full)
    if pairs:
        figure, axis = plt.subplots(figsize=(5, 4))
        axis.scatter([100 * p for p, _ in pairs], [100 * f for _, f in pairs])
        axis.set_xlabel("proxy validation accuracy %")
        axis.set_ylabel("full-recipe validation accuracy %")
        figure.tight_layout()
        figure.savefig(root / "proxy_vs_full.png", dpi=100)
        plt.close(figure)
        written.append("proxy_vs_full.png")
    return written


def proxy_full_pairs(records: list[dict[str, Any]], full: list[dict[str, Any]]) -> list[tuple[float, float]]:
    by_key = {record["key"]: record for record in records}
    return [(by_key[f["key"]]["score"], f["score"]) for f in full
            if f.get("score") is not None and f["key"] in by_key]


def write_report(root: Path, options: dict[str, Any], records: list[dict[str, Any]], full: list[dict[str, Any]],
                 winner: dict[str, Any] | None, edf_parameters: tuple[str, ...], extra_lines=()) -> Path:
    """report.md (with the PNG plots beside it)."""
    trained = ok_records(records)
    final = final_rung(records)
    lines = [f"# Architecture search: {options['space']} space, {options['strategy']} strategy", "",
             f"- data: {options['data']} (proxy: {options.get('proxy_images')} training images, "
             f"{options.get('proxy_epochs')} epoch(s); score = validation accuracy of the subset's held-out part, "
             "the test split is never read)",
             f"- candidates trained: {len(records)} ({len(records) - len(trained)} failed), "
             f"{sum(r['seconds'] for r in records):.0f} s of training (budget {options.get('budget')})",
             f"- constraints: {', '.join(options.get('constraints') or []) or 'none'}", ""]
    if final:
        lines += write_plots_section(root, final, edf_parameters, full)
    lines += list(extra_lines)
    pairs = proxy_full_pairs(final, full)
    if pairs:
        rho = spearman([p for p, _ in pairs], [f for _, f in pairs])
        lines += ["## Proxy vs full training", ""]
        if rho is None:
            lines += [f"{len(pairs)} models retrained: too few (or too equal) for a rank correlation.", ""]
        else:
            lines += [f"Spearman rank correlation of proxy and full-recipe validation accuracy over {len(pairs)} "
                      f"models ({options.get('full_epochs')} epochs on the full training split): **{rho:.2f}**. "
                      "Near 0, the proxy's ranking is noise and so is the search.", ""]
        lines += ["| candidate | MMACs | proxy acc % | full acc % |", "|---|---|---|---|"]
        by_key = {r["key"]: r for r in final}
        for f in full:
            if f["key"] in by_key:
                lines.append(f"| {f['key']} | {by_key[f['key']]['macs'] / 1e6:.2f} | "
                             f"{100 * by_key[f['key']]['score']:.2f} | {100 * f['score']:.2f} |")
        lines += ["", "![proxy vs full](proxy_vs_full.png)", ""]
    if winner is not None:
        lines += ["## Winner", "", f"`{winner['key']}`: {winner['description']}", "",
                  f"{winner['macs'] / 1e6:.2f} MMACs, {winner['params']:,} parameters, proxy accuracy "
                  f"{100 * winner['score']:.2f}%" + (f", full-recipe validation accuracy "
                                                    f"{100 * winner['full_score']:.2f}%"
                                                    if winner.get("full_score") is not None else ""), "",
                  f"Train it: `cnnkit train --config {root / 'winner_recipe.yaml'}` "
                  + (f"(or `cnnkit train --model {root / 'winner.yaml'}` with your own settings)."
                     if options["space"] != "cells" else ""), ""]
    path = root / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def write_plots_section(root: Path, final: list[dict[str, Any]], edf_parameters: tuple[str, ...],
                        full: list[dict[str, Any]]) -> list[str]:
    write_plots(root, final, edf_parameters, full)
    front = pareto_front(final)
    lines = ["## Pareto front (proxy accuracy vs MACs)", "", "![Pareto front](pareto.png)", "",
             "| candidate | MMACs | params | proxy acc % | epochs | architecture |", "|---|---|---|---|---|---|"]
    for record in front:
        lines.append(f"| {record['key']} | {record['macs'] / 1e6:.2f} | {record['params']:,} | "
                     f"{100 * record['score']:.2f} | {record['epochs']} | {record['description']} |")
    timed = [record for record in final if record.get("latency_ms") is not None]
    if timed:
        lines += ["", "## Pareto front (proxy accuracy vs CPU latency)", "",
                  "Latency: one image, batch 1, fp32, median of 30 forward passes after the search, on this machine.",
                  "", "| candidate | latency ms | MMACs | proxy acc % |", "|---|---|---|---|"]
        for record in pareto_front(timed, cost="latency_ms"):
            lines.append(f"| {record['key']} | {record['latency_ms']:.2f} | {record['macs'] / 1e6:.2f} | "
                         f"{100 * record['score']:.2f} |")
    lines += ["", "## Error EDFs per parameter range", "",
              "F(e): the share of sampled models with proxy error below e; the curve further left is the better "
              "range of that parameter.", "", "![EDF](edf.png)", ""]
    return lines
