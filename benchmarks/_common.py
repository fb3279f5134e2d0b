"""Shared helpers of the benchmark scripts: machine description, statistics, result files.

Not a benchmark (hence the underscore): the scripts in this folder import it as a sibling module
(`python benchmarks/NAME.py` puts benchmarks/ first on sys.path).

Every result file records what is needed to judge and repeat the number: the date, the exact
command line, the git commit (and whether src/ had uncommitted changes), the CPU model and core
count, the torch version and thread count, and the load average before and after (a busy machine
makes every timing here meaningless; the load average is the cheapest evidence of that).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"

# CPU features that decide which kernels (and which autocast dtype) torch uses.
QUICK_NOTE = " (quick smoke run: the verdict means nothing)"
_INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty off Linux)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.split("\n\n", 1)[0].splitlines():
        key, separator, value = line.partition(":")
        if separator:
            fields[key.strip()] = value.strip()
    return fields


def _lscpu_model() -> str | None:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in output.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def _git(*arguments: str) -> str | None:
    try:
        result = subprocess.run(["git", *arguments], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def machine_info() -> dict[str, Any]:
    """CPU, core count, memory, OS, library versions and torch's thread settings, as a dict."""
    import torch
    import torchvision

    import cnnkit

    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    try:
        from cnnkit.device import cpu_bf16_native

        bf16_native = cpu_bf16_native()
    except (AttributeError, RuntimeError):
        bf16_native = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": info.get("model name") or _lscpu_model() or platform.processor() or "unknown",
        "cpu_family_model": f"family {info.get('cpu family', '?')} model {info.get('model', '?')}",
        "cpu_flags": [flag for flag in _INTERESTING_FLAGS if flag in flags],
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cnnkit": cnnkit.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
        "mkldnn_bf16_native": bf16_native,
        "cuda_available": torch.cuda.is_available(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def command_line() -> str:
    """The command as typed from the current directory (the interpreter path made relative)."""
    executable = sys.executable
    try:
        relative = os.path.relpath(executable)
        if not relative.startswith(".."):
            executable = relative
    except ValueError:
        pass
    return shlex.join([executable, *sys.argv])


def run_header(quick: bool) -> dict[str, Any]:
    """Date, command, git state and machine: the part every result file starts with."""
    dirty = _git("status", "--porcelain", "--", "src")
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_line(),
        "cwd": os.getcwd(),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "src_uncommitted_changes": bool(dirty) if dirty is not None else None,
        "quick": quick,
        "machine": machine_info(),
    }


def set_threads(threads: int | None) -> None:
    """torch.set_num_threads(threads) when given; otherwise leave torch's default (one per core)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def summarize(values: Sequence[float]) -> dict[str, float | int]:
    """n, mean, sample std (0 for one value), min, median, max."""
    values = list(values)
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def header_markdown(title: str, header: dict[str, Any]) -> str:
    machine = header["machine"]
    lines = [f"# {title}", ""]
    if header["quick"]:
        lines += ["**QUICK SMOKE RUN (tiny sizes): checks that the script works; not a measurement.**", ""]
    lines += [
        f"- date: {header['date']}",
        f"- command: `{header['command']}` (in {header['cwd']})",
        f"- commit: {header['git_commit']}" + (" + uncommitted changes in src/" if header["src_uncommitted_changes"] else ""),
        f"- machine: {machine['cpu_model']} ({machine['cpu_family_model']}), {machine['logical_cpus']} logical CPUs "
        f"({machine['usable_cpus']} usable), {machine['memory_gib']} GiB; flags: {' '.join(machine['cpu_flags']) or 'none'}",
        f"- torch {machine['torch']} (torchvision {machine['torchvision']}), torch.get_num_threads() = "
        f"{machine['torch_num_threads']}, native bf16: {machine['mkldnn_bf16_native']}; Python {machine['python']}",
        f"- load average (1/5/15 min) at start: {_format_load(machine.get('load_average_start'))}, "
        f"at end: {_format_load(machine.get('load_average_end'))}",
        "",
    ]
    return "\n".join(lines) + "\n"


def _format_load(values: Sequence[float] | None) -> str:
    return " / ".join(f"{value:.2f}" for value in values) if values else "n/a"


def write_results(name: str, payload: dict[str, Any], markdown: str, results_dir: str | Path | None) -> tuple[Path, Path]:
    """Write NAME.json and NAME.md (NAME-quick.* for --quick runs, so smoke runs never pose as results)."""
    folder = Path(results_dir) if results_dir else RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-quick" if payload.get("quick") else name
    json_path, markdown_path = folder / f"{stem}.json", folder / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    markdown_path.write_text(markdown.rstrip() + "\n")
    return json_path, markdown_path


def finish(name: str, title: str, header: dict[str, Any], payload: dict[str, Any], body_markdown: str,
           results_dir: str | Path | None) -> None:
    """Record the end load average, write both files, and print the Markdown to stdout."""
    header["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    markdown = header_markdown(title, header) + body_markdown
    json_path, markdown_path = write_results(name, {**header, **payload}, markdown, results_dir)
    print("\n" + markdown.rstrip())
    print(f"\nwrote {json_path} and {markdown_path}", flush=True)


def merge_previous(name: str, header: dict[str, Any], rows: list[dict[str, Any]], key: str, order: Sequence[str],
                   results_dir: str | Path | None, fresh: bool = False) -> list[dict[str, Any]]:
    """This run's rows plus the rows of models it did not run, from the existing NAME.json.

    Scripts that measure one model at a time (`--models X`) update X's row and keep the others, so the
    result file can be filled in over several invocations. Every row keeps the header of the run that
    measured it under "run" (date, command, commit, threads, load average), shown by `runs_markdown`.
    With fresh=True (or no file yet) only this run's rows are kept.
    """
    run = {k: header[k] for k in ("date", "command", "git_commit", "src_uncommitted_changes")}
    run["threads"] = header["machine"]["torch_num_threads"]
    run["cpu"] = f"{header['machine']['cpu_model']} ({header['machine']['cpu_family_model']})"
    run["load_average_start"] = header["machine"].get("load_average_start")
    run["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    for row in rows:
        row["run"] = run
    folder = Path(results_dir) if results_dir else RESULTS_DIR
    previous_path = folder / (f"{name}-quick.json" if header["quick"] else f"{name}.json")
    kept: list[dict[str, Any]] = []
    if not fresh and previous_path.is_file():
        try:
            previous = json.loads(previous_path.read_text())
        except (OSError, ValueError):
            previous = {}
        measured = {row[key] for row in rows}
        for row in previous.get("results", []):
            if row.get(key) not in measured:
                machine = previous.get("machine") or {}
                row.setdefault("run", {**{k: previous.get(k) for k in ("date", "command", "git_commit")},
                                       "threads": machine.get("torch_num_threads"),
                                       "load_average_start": machine.get("load_average_start")})
                if "cpu" not in row["run"] and machine.get("cpu_model"):  # rows from before "cpu" was recorded
                    row["run"]["cpu"] = f"{machine['cpu_model']} ({machine.get('cpu_family_model', '?')})"
                kept.append(row)
    position = {model: index for index, model in enumerate(order)}
    return sorted(kept + rows, key=lambda row: position.get(row.get(key), len(position)))


def runs_markdown(rows: Sequence[dict[str, Any]], key: str) -> str:
    """One line per row: which invocation measured it (date, threads, load average, commit, command)."""
    lines = ["Measured by:", ""]
    for row in rows:
        run = row.get("run", {})
        load = run.get("load_average_start"), run.get("load_average_end")
        lines.append(f"- {row[key]}: {run.get('date')}, {run.get('cpu', 'CPU not recorded')}, "
                     f"{run.get('threads', '?')} thread(s), load average "
                     f"{_format_load(load[0])} at start, {_format_load(load[1])} at end, commit "
                     f"{run.get('git_commit')}: `{run.get('command')}`")
    return "\n".join(lines) + "\n"
