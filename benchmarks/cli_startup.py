"""How fast `cnnkit` answers: --help, and usage or setting mistakes (issue 24, goal: help < 0.3 s, errors < 0.5 s).

Each command runs as a whole process (`python -m cnnkit ...`, as a user types it) --runs times after one
warm-up; the median wall time is the figure. The commands never reach torch: the CLI checks its arguments
and settings first and imports torch only to do the work (cnnkit.cli). tests/test_first_hour.py holds the
same commands to a generous bound; this script records the real figure.

    python benchmarks/cli_startup.py            # writes benchmarks/results/cli_startup.{json,md}
    python benchmarks/cli_startup.py --runs 3 --quick
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

from _common import QUICK_NOTE, finish, markdown_table, run_header, summarize

# (what it shows, argv after `cnnkit`, goal in seconds)
COMMANDS = [
    ("top-level help", ["--help"], 0.3),
    ("train --help", ["train", "--help"], 0.3),
    ("version", ["--version"], 0.3),
    ("misspelt setting", ["train", "epcohs=3"], 0.5),
    ("setting that is not a number", ["train", "lr=abc"], 0.5),
    ("non-finite setting", ["train", "lr=.inf"], 0.5),
    ("missing data folder", ["train", "--data", "no/such/folder"], 0.5),
    ("resume a missing run", ["train", "--resume", "no-such-run"], 0.5),
    ("unknown option", ["train", "--epohcs", "3"], 0.5),
    ("predict: missing image", ["predict", ".", "missing.png"], 0.5),
]


def time_command(argv: list[str], runs: int, cwd: str) -> tuple[list[float], int]:
    """Wall seconds of `runs` whole-process runs after one warm-up, and the exit status."""
    seconds, status = [], 0
    for index in range(runs + 1):
        started = time.perf_counter()
        status = subprocess.run([sys.executable, "-m", "cnnkit", *argv], cwd=cwd, capture_output=True).returncode
        if index:  # the first run warms the file cache
            seconds.append(time.perf_counter() - started)
    return seconds, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="counted runs per command (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 runs: a smoke test of the script")
    parser.add_argument("--results-dir", help="default benchmarks/results/")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    header = run_header(args.quick)
    rows, table = [], []
    with tempfile.TemporaryDirectory() as folder:
        for label, argv, goal in COMMANDS:
            seconds, status = time_command(argv, runs, folder)
            stats = summarize(seconds)
            rows.append({"what": label, "argv": argv, "exit_status": status, "goal_s": goal, "wall_s": stats})
            table.append([label, "`cnnkit " + " ".join(argv) + "`", status, f"{stats['median']:.3f}",
                          f"{stats['min']:.3f}-{stats['max']:.3f}", goal,
                          "yes" if stats["median"] < goal else "NO"])
    body = ("Whole-process wall time of `python -m cnnkit ...` (median of "
            f"{runs} runs after a warm-up){QUICK_NOTE if args.quick else ''}.\n\n"
            + markdown_table(["what", "command", "exit", "median s", "min-max s", "goal s", "met"], table) + "\n")
    finish("cli_startup", "CLI start-up: help and mistakes", header, {"runs": runs, "rows": rows}, body,
           args.results_dir)


if __name__ == "__main__":
    main()
