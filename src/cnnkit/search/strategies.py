"""Search strategies over a `SearchDirectory`: random search, regularised (aging) evolution, successive halving.

Each is a seeded loop that proposes candidates and asks the directory for their records; it ends when the
directory raises BudgetExhausted. Seeded proposals make a resumed search replay the same candidates (answered
from candidates.jsonl) before training new ones.

- random: Bergstra and Bengio 2012; the baseline that Li and Talwalkar 2019 and Yang et al. 2020 ("NAS
  evaluation is frustratingly hard") found hard to beat.
- evolution: Real, Aggarwal, Huang and Le 2019, "Regularized Evolution for Image Classifier Architecture
  Search" (aging evolution): a population of P, tournaments of S, the best of each tournament mutated, the
  oldest member removed.
- halving: Jamieson and Talwalkar 2016 / Li et al. 2017 (Hyperband's inner loop): n candidates at the
  smallest proxy, the best 1/eta promoted to eta times the epochs, repeated; then a new bracket.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from cnnkit.errors import ConfigError
from cnnkit.search.directory import BudgetExhausted, SearchDirectory

MAX_PROPOSALS = 100_000  # a space this exhausted under the constraints ends the search


def _score(record: dict[str, Any]) -> float:
    return record["score"] if record.get("score") is not None else float("-inf")


def sample(space, directory: SearchDirectory, rng: random.Random) -> dict[str, Any]:
    """A random candidate of the space that satisfies the directory's constraints."""
    from cnnkit.search.spaces import MAX_SAMPLING_TRIES

    for _ in range(MAX_SAMPLING_TRIES):
        arch = space.sample(rng)
        if directory.allows(arch):
            return arch
    bounds = ", ".join(map(str, directory.constraints))
    raise ConfigError(f"no candidate of the {space.name} space satisfies {bounds} in {MAX_SAMPLING_TRIES} "
                      "samples; loosen the constraint")


def random_search(space, directory: SearchDirectory, epochs: int, seed: int, **_) -> None:
    rng = random.Random(seed)
    for _ in range(MAX_PROPOSALS):
        batch = [sample(space, directory, rng) for _ in range(directory.workers)]
        try:
            directory.evaluate_many(batch, epochs)
        except BudgetExhausted:
            return


def evolution(space, directory: SearchDirectory, epochs: int, seed: int, population_size: int = 8,
              tournament_size: int = 3, **_) -> None:
    rng = random.Random(seed)
    population: deque[dict[str, Any]] = deque()
    try:
        while len(population) < population_size:
            population.extend(directory.evaluate_many([sample(space, directory, rng)], epochs))
        for _ in range(MAX_PROPOSALS):
            contestants = rng.sample(list(population), min(tournament_size, len(population)))
            parent = max(contestants, key=_score)
            for _ in range(1000):
                child = space.mutate(parent["arch"], rng)
                if directory.allows(child):
                    break
            else:
                child = sample(space, directory, rng)
            population.extend(directory.evaluate_many([child], epochs))
            population.popleft()  # aging: the oldest goes, however good it was
    except BudgetExhausted:
        return


def successive_halving(space, directory: SearchDirectory, epochs: int, seed: int, eta: int = 3,
                       bracket_size: int = 9, rungs: int = 3, **_) -> None:
    rng = random.Random(seed)
    try:
        for _ in range(MAX_PROPOSALS):
            survivors = [sample(space, directory, rng) for _ in range(bracket_size)]
            for rung in range(rungs):
                records = directory.evaluate_many(survivors, epochs * eta ** rung)
                if len(records) < len(survivors):
                    return  # the budget ended inside this rung
                ranked = sorted(records, key=_score, reverse=True)
                keep = max(1, len(ranked) // eta)
                survivors = [record["arch"] for record in ranked[:keep]]
                if len(ranked) == 1:
                    break
    except BudgetExhausted:
        return


STRATEGIES = {"random": random_search, "evolution": evolution, "halving": successive_halving}


def run_strategy(name: str, space, directory: SearchDirectory, epochs: int, seed: int, **options) -> None:
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose {', '.join(STRATEGIES)} (or darts for --space cells)")
    STRATEGIES[name](space, directory, epochs, seed, **options)
