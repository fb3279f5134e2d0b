"""`cnnkit runs [DIR]`: the run directories under DIR (default runs/) with task, model, data, best metric, date.

Reads only config.yaml, last.json and metrics.jsonl (no torch): it answers at once, even for hundreds of runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cnnkit.errors import CnnkitError


def add_runs(commands) -> None:
    parser = commands.add_parser(
        "runs", help="list the runs in a directory: task, model, data, best metric, date",
        description="List the run directories under DIR (default runs/), newest first: task, model, data,\n"
                    "epochs done, the best value of the monitored metric and its epoch, and when the run last wrote.",
        epilog="examples:\n  cnnkit runs\n  cnnkit runs experiments/ --json", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", nargs="?", default="runs", metavar="DIR")
    parser.add_argument("--json", action="store_true", help="print JSON: one entry per run")


def run_runs(args) -> int:
    root = Path(args.directory)
    if not root.is_dir():
        raise CnnkitError(f"{root}: no such directory (runs are written under --out, default runs/)")
    rows = [row for row in (describe_run(folder) for folder in sorted(root.iterdir()) if folder.is_dir()) if row]
    rows.sort(key=lambda row: row["modified"], reverse=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no runs in {root}")
        return 0
    headers = ("run", "task", "model", "data", "epochs", "best", "date")
    table = [(row["run"], row["task"], row["model"], row["data"], row["epochs"], row["best_text"],
              time.strftime("%Y-%m-%d %H:%M", time.localtime(row["modified"]))) for row in rows]
    widths = [max(len(str(value)) for value in column) for column in zip(headers, *table)]
    for line in (headers, *table):
        print("  ".join(str(value).ljust(width) for value, width in zip(line, widths)).rstrip())
    return 0


def describe_run(folder: Path) -> dict | None:
    """What `cnnkit runs` shows of one run directory, or None if `folder` is not one."""
    import yaml

    config_path = folder / "config.yaml"
    if not config_path.is_file():
        return None
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except (yaml.YAMLError, OSError):
        config = {}
    if not isinstance(config, dict):
        config = {}
    state, monitor = {}, config.get("monitor")
    try:
        last = json.loads((folder / "last.json").read_text())
        state, monitor = last.get("trainer_state", {}), last.get("monitor", monitor)
    except (OSError, ValueError, AttributeError):
        pass
    best_value, best_epoch = state.get("best_value"), state.get("best_epoch")
    best_text = "-" if best_value is None else f"{monitor or 'best'} {best_value:.4f} (epoch {best_epoch})"
    modified = max((path.stat().st_mtime for path in folder.iterdir() if path.is_file()), default=0.0)
    return {"run": folder.name, "path": str(folder), "task": config.get("task", "classify"),
            "model": config.get("model", "?"), "data": config.get("data", "?"),
            "epochs": f"{state.get('epoch', 0)}/{config.get('epochs', '?')}", "monitor": monitor,
            "best_value": best_value, "best_epoch": best_epoch, "best_text": best_text, "modified": modified}
