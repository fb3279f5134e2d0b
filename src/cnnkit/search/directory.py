"""The search directory: every candidate trained so far, appended as one JSON line when it finishes.

    SEARCH_DIR/
      search.json         the options (a resumed search must use the same space, strategy and seed)
      candidates.jsonl    one line per finished candidate: architecture, spec, MACs, params, score, seconds
      full.jsonl          candidates retrained with the full recipe (proxy-vs-full rank correlation)
      proxy_data/         the proxy's training subset (see cnnkit.search.proxy)
      specs/KEY.yaml      each candidate's network as a cnnkit YAML spec
      runs/KEY/           each candidate's training run (config.yaml, metrics.jsonl, checkpoints)
      winner.yaml, winner_recipe.yaml, report.md, *.png

Resuming after a kill: the strategies are seeded, so a resumed search proposes the same candidates in the
same order; a candidate whose key (architecture + proxy budget) is in candidates.jsonl is answered from
there without training, a half-trained one (a run folder without a line) is trained again from scratch.
The budget counts the seconds recorded in candidates.jsonl, so a kill loses only the candidate in flight.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import yaml

from cnnkit.errors import CnnkitError, ConfigError
from cnnkit.files import atomic_write_text


class BudgetExhausted(Exception):
    """Raised by `SearchDirectory.evaluate` when the time or candidate budget is spent."""


def dump_spec(spec: dict) -> str:
    """A spec as YAML without anchors and aliases (cnnkit's YAML reader refuses them; a spec that repeats a
    layer object, e.g. `[conv, bn, gelu] * 2`, would otherwise get them)."""
    return yaml.safe_dump(json.loads(json.dumps(spec)), sort_keys=False)


def candidate_key(arch: dict[str, Any], budget: dict[str, Any]) -> str:
    text = json.dumps({"arch": arch, "budget": budget}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a JSONL file; a line cut short by a kill is dropped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as file:  # one write of one line: a kill leaves at most a truncated last line
        file.write(json.dumps(record) + "\n")
        file.flush()


class SearchDirectory:
    """Candidates of one search: evaluated once each, recorded, reused on resume.

    Args:
        root: The search directory.
        space: The search space (cnnkit.search.spaces).
        trainer: train(model, data, run_dir, settings) -> metrics with "val_accuracy" and "seconds".
        data: {"data": proxy data path, "channels", "image_size", "classes"} (cnnkit.search.proxy).
        settings: TrainConfig keys of the proxy runs (epochs is set per candidate).
        budget_seconds: Training seconds the search may spend (recorded seconds, resumed runs included).
        max_candidates: Stop after this many trained candidates (None: no limit).
        constraints: Cost bounds every candidate satisfies (checked before training).
        workers: Processes that train candidates side by side (`evaluate_many`).
    """

    def __init__(self, root: Path, space, trainer: Callable, data: dict[str, Any], settings: dict[str, Any],
                 budget_seconds: float, max_candidates: int | None = None, constraints=(), workers: int = 1):
        self.root, self.space, self.trainer, self.data, self.settings = Path(root), space, trainer, data, settings
        self.budget_seconds, self.max_candidates, self.constraints = budget_seconds, max_candidates, list(constraints)
        self.workers = max(1, workers)
        self.root.mkdir(parents=True, exist_ok=True)
        self.path = self.root / "candidates.jsonl"
        self.records: dict[str, dict[str, Any]] = {record["key"]: record for record in read_jsonl(self.path)}
        self.reused = 0  # candidates answered from candidates.jsonl in this process (resume)

    # --- budget --------------------------------------------------------------------------------------
    @property
    def seconds_spent(self) -> float:
        return sum(record["seconds"] for record in self.records.values())

    def exhausted(self) -> bool:
        if self.max_candidates is not None and len(self.records) >= self.max_candidates:
            return True
        return self.seconds_spent >= self.budget_seconds

    # --- costs and constraints -----------------------------------------------------------------------
    def costs(self, arch: dict[str, Any]) -> dict[str, int]:
        from cnnkit.search.spaces import spec_cost

        size = self._input_size(arch)
        if hasattr(self.space, "costs"):  # not a YAML spec (DARTS cells)
            return self.space.costs(arch, self.data["channels"], size, len(self.data["classes"]))
        spec = self.space.spec(arch, size)
        params, measured = spec_cost(spec, self.data["channels"], size, len(self.data["classes"]))
        return {"macs": self.space.macs(arch, self.data["channels"], size, len(self.data["classes"])),
                "params": params, "measured_macs": measured}

    def allows(self, arch: dict[str, Any]) -> bool:
        """Whether the candidate satisfies every constraint (MACs from the space: no network is built)."""
        if not self.constraints:
            return True
        size = self._input_size(arch)
        costs = {"macs": self.space.macs(arch, self.data["channels"], size, len(self.data["classes"]))}
        if any(constraint.metric == "params" for constraint in self.constraints):
            costs = self.costs(arch)
        return all(constraint.allows(costs) for constraint in self.constraints)

    def _input_size(self, arch: dict[str, Any]) -> int:
        return int(self.space.train_overrides(arch).get("image_size") or self.data["image_size"])

    # --- evaluation ----------------------------------------------------------------------------------
    def evaluate(self, arch: dict[str, Any], epochs: int) -> dict[str, Any]:
        """The candidate's record: from candidates.jsonl when it was trained before, else trained now.

        Raises:
            BudgetExhausted: when the budget is spent (before training anything new).
        """
        return self.evaluate_many([arch], epochs)[0]

    def evaluate_many(self, archs: list[dict[str, Any]], epochs: int) -> list[dict[str, Any]]:
        """Records of several candidates; new ones train side by side on `workers` processes."""
        jobs, new_keys = [], []
        for arch in archs:
            key = candidate_key(arch, {"epochs": epochs, "images": self.data.get("images")})
            if key in self.records:
                self.reused += 1
            elif key not in new_keys:
                if self.exhausted() or (self.max_candidates is not None
                                        and len(self.records) + len(jobs) >= self.max_candidates):
                    break
                jobs.append(self._prepare(arch, key, epochs))
                new_keys.append(key)
        if not jobs and any(candidate_key(arch, {"epochs": epochs, "images": self.data.get("images")})
                            not in self.records for arch in archs):
            raise BudgetExhausted
        if self.workers > 1 and len(jobs) > 1:
            # spawn, not fork: a forked child of a process that already ran torch's thread pool can hang.
            with ProcessPoolExecutor(min(self.workers, len(jobs)), mp_context=get_context("spawn")) as pool:
                results = list(pool.map(_train_job, [(self.trainer, job) for job in jobs]))
        else:
            results = [_train_job((self.trainer, job)) for job in jobs]
        for job, result in zip(jobs, results):
            record = {**job["record"], **result}
            append_jsonl(self.path, record)
            self.records[record["key"]] = record
        keys = [candidate_key(arch, {"epochs": epochs, "images": self.data.get("images")}) for arch in archs]
        return [self.records[key] for key in keys if key in self.records]

    def _prepare(self, arch: dict[str, Any], key: str, epochs: int) -> dict[str, Any]:
        size = self._input_size(arch)
        spec = self.space.spec(arch, size)
        spec_path = self.root / "specs" / f"{key}.yaml"
        spec_path.parent.mkdir(exist_ok=True)
        atomic_write_text(spec_path, dump_spec(spec))
        run_dir = self.root / "runs" / key
        if run_dir.exists():  # killed while training: start this candidate again
            shutil.rmtree(run_dir)
        settings = {**self.settings, **self.space.train_overrides(arch), "epochs": epochs}
        model, extra = model_of(self.space, arch, spec_path)
        settings.update(extra)
        if self.workers > 1 and settings.get("num_threads"):
            settings["num_threads"] = max(1, settings["num_threads"] // self.workers)
        record = {"key": key, "space": self.space.name, "arch": arch, "epochs": epochs,
                  "train_images": self.data.get("images"), "description": self.space.describe(arch),
                  **self.costs(arch), "spec_file": f"specs/{key}.yaml", "run": f"runs/{key}",
                  "settings": settings, "spec": spec}
        return {"record": record, "model": model, "data": self.data["data"], "run_dir": run_dir,
                "settings": settings}


def model_of(space, arch: dict[str, Any], spec_path: Path) -> tuple[str, dict[str, Any]]:
    """(--model value, extra settings) that train a candidate: its YAML spec file, or a registered model and
    its model_args (DARTS cells)."""
    if hasattr(space, "model_settings"):
        return space.model_settings(arch)
    return str(spec_path), {}


def _train_job(item) -> dict[str, Any]:
    """Train one candidate (in this process or a worker); a candidate that cannot train is recorded as failed."""
    trainer, job = item
    try:
        metrics = trainer(job["model"], job["data"], job["run_dir"], job["settings"])
    except (CnnkitError, RuntimeError) as error:  # e.g. out of memory: the search goes on without it
        return {"status": "failed", "error": f"{type(error).__name__}: {error}", "score": None, "seconds": 0.0}
    return {"status": "ok", "score": metrics.get("val_accuracy"), "val_loss": metrics.get("val_loss"),
            "seconds": metrics["seconds"]}


def load_options(root: Path, options: dict[str, Any], resume: bool) -> dict[str, Any]:
    """The options of a search directory: written on the first run; a resumed run must not change what the
    recorded candidates mean (space, strategy, seed, data, proxy)."""
    path = Path(root) / "search.json"
    if not path.is_file():
        if resume:
            raise ConfigError(f"cannot resume {root}: no search.json there (start a search with --out/--name)")
        Path(root).mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(options, indent=1))
        return options
    recorded = json.loads(path.read_text())
    if not resume:
        fixed = ("space", "strategy", "seed", "data", "proxy_epochs", "proxy_images", "base", "darts_epochs")
        changed = [key for key in fixed if options.get(key) != recorded.get(key)]
        if changed:
            raise ConfigError(f"{root} holds a search with other settings ({', '.join(changed)}); resume it "
                              f"with `cnnkit search --resume {root}` or choose another --name")
    merged = {**recorded, **{key: value for key, value in options.items()
                             if key in ("budget", "max_candidates", "workers", "full", "full_epochs", "full_pick")
                             and value is not None}} if resume else {**recorded, **options}
    atomic_write_text(path, json.dumps(merged, indent=1))
    return merged
