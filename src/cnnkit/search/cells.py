"""The `cells` space: DARTS cells (cnnkit.models.darts) found by first-order DARTS, against random cells.

First-order DARTS (Liu et al. 2019, section 2.3 with xi = 0): the proxy subset is split in two halves; each
step updates the architecture parameters alpha with Adam on a batch of the second half, then the weights
with SGD on a batch of the first half. This bilevel loop is DARTS itself, so it is written here rather than
run by the Trainer; the derived cells are then trained and scored like every other candidate (the classify
task's setup and the Trainer), together with random cells of the same width and depth and, with DARTS, of
the same parameter count within 10% (rejection sampling): the baseline every NAS paper should beat (Li and
Talwalkar 2019; Yang et al. 2020).

Against DARTS's collapse to skip connections (Zela et al. 2020; Chen et al. 2019): the derived normal cell
keeps at most `max_skips` = 2 skip connections (P-DARTS's cap; the weaker extra skips take their edge's best
other operation), and the search stops early once the uncapped normal cell would hold more (DARTS+'s
criterion). darts.json records, per epoch, the derived cells and their skip counts.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from cnnkit.data import load_dataset
from cnnkit.files import atomic_write_text
from cnnkit.models.darts import DartsNetwork, SearchNetwork, derive_edges, random_genotype

MAX_SKIPS = 2
PARAM_TOLERANCE = 0.1  # random cells compared with DARTS's: within 10% of its parameters


class CellSpace:
    """Candidates {"genotype": {...}, "origin": "darts" | "random"}: darts_net of `channels` x `layers` cells."""

    name = "cells"
    edf_parameters = ()

    def __init__(self, channels: int = 8, layers: int = 5):
        self.channels, self.layers = channels, layers

    def spec(self, arch: dict[str, Any], input_size: int | None = None) -> dict:
        return {"genotype": arch["genotype"], "channels": self.channels, "layers": self.layers}

    def model_settings(self, arch: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The registered model and its arguments (a DARTS network is not a YAML layer list)."""
        return "darts_net", {"model_args": self.spec(arch)}

    def costs(self, arch: dict[str, Any], in_chans: int, input_size: int, num_classes: int) -> dict[str, int]:
        from cnnkit.inspect.summary import count_macs

        with torch.device("meta"):
            model = DartsNetwork(arch["genotype"], self.channels, self.layers, num_classes, in_chans)
        macs = count_macs(model, (in_chans, input_size, input_size))
        return {"macs": macs, "params": sum(p.numel() for p in model.parameters()), "measured_macs": macs}

    def macs(self, arch: dict[str, Any], in_chans: int, input_size: int, num_classes: int) -> int:
        return self.costs(arch, in_chans, input_size, num_classes)["macs"]

    def train_overrides(self, arch: dict[str, Any]) -> dict[str, Any]:
        return {}

    def build(self, arch: dict[str, Any], in_chans: int, input_size: int, num_classes: int) -> DartsNetwork:
        return DartsNetwork(arch["genotype"], self.channels, self.layers, num_classes, in_chans)

    def describe(self, arch: dict[str, Any]) -> str:
        normal = ", ".join(f"{op}@{source}" for op, source in arch["genotype"]["normal"])
        return f"{arch['origin']} cell (normal: {normal})"


def _batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator):
    order = torch.randperm(len(images), generator=generator)
    for start in range(0, len(order) - batch_size + 1, batch_size):
        index = order[start:start + batch_size]
        yield images[index], labels[index]


def darts_search(data: str, epochs: int, channels: int, layers: int, seed: int, batch_size: int = 64,
                 max_skips: int = MAX_SKIPS, log: Callable = print) -> dict[str, Any]:
    """First-order DARTS on the training split of `data`; returns the derived genotype and the history."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train = load_dataset(data).train
    images = train.images.float() / 255.0
    images = (images - images.mean()) / images.std()  # (N, C, H, W), one mean/std: the search only ranks ops
    half = len(images) // 2
    order = torch.randperm(len(images), generator=generator)
    weights_part, alpha_part = order[:half], order[half:]
    model = SearchNetwork(channels, layers, len(train.classes), images.shape[1])
    steps = epochs * (half // batch_size)
    weight_optimizer = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(weight_optimizer, max(1, steps), eta_min=1e-3)
    alpha_optimizer = torch.optim.Adam(model.arch_parameters(), lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    history, started = [], time.perf_counter()
    for epoch in range(epochs):
        model.train()
        losses = []
        alpha_batches = _batches(images[alpha_part], train.labels[alpha_part], batch_size, generator)
        for (x, y), (x_alpha, y_alpha) in zip(_batches(images[weights_part], train.labels[weights_part],
                                                       batch_size, generator), alpha_batches):
            alpha_optimizer.zero_grad()
            F.cross_entropy(model(x_alpha), y_alpha).backward()  # first order: the gradient at the current weights
            alpha_optimizer.step()
            weight_optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.weight_parameters(), 5.0)
            weight_optimizer.step()
            schedule.step()
            losses.append(loss.item())
        normal, reduce = model.mixing_weights()
        uncapped = derive_edges(normal)
        skips = sum(op == "skip_connect" for op, _ in uncapped)
        history.append({"epoch": epoch + 1, "loss": statistics.fmean(losses) if losses else math.nan,
                        "skips_uncapped": skips, "normal_uncapped": uncapped,
                        "seconds": time.perf_counter() - started})
        log(f"darts epoch {epoch + 1}/{epochs}: loss {history[-1]['loss']:.3f}, skip connections in the "
            f"normal cell: {skips}")
        if skips > max_skips:
            log(f"darts: stopping early, the normal cell collapses to skip connections ({skips} > {max_skips})")
            break
    normal, reduce = model.mixing_weights()
    genotype = {"normal": derive_edges(normal, max_skips), "reduce": derive_edges(reduce)}
    return {"genotype": genotype, "history": history, "seconds": time.perf_counter() - started,
            "alpha_normal": normal.tolist(), "alpha_reduce": reduce.tolist()}


def matched_genotype(rng: random.Random, directory, params: int, draws: int = 2000) -> dict:
    """A uniformly random genotype whose network has within PARAM_TOLERANCE of `params` parameters (rejection
    sampling, counted on the meta device: nothing is built); the closest of `draws` if none is that close."""
    best, best_gap = None, math.inf
    for _ in range(draws):
        genotype = random_genotype(rng)
        gap = abs(directory.costs({"genotype": genotype, "origin": "random"})["params"] - params) / params
        if gap <= PARAM_TOLERANCE:
            return genotype
        if gap < best_gap:
            best, best_gap = genotype, gap
    return best


def run_cells(space: CellSpace, directory, options: dict[str, Any], proxy: dict[str, Any], log: Callable) -> list[str]:
    """DARTS's cell (strategy darts) and random cells (both strategies); returns the report's lines."""
    from cnnkit.search.directory import BudgetExhausted

    epochs = options["proxy_epochs"]
    darts_record = None
    if options["strategy"] == "darts":
        path = Path(directory.root) / "darts.json"
        if path.is_file():
            found = json.loads(path.read_text())
        else:
            found = darts_search(proxy["data"], options.get("darts_epochs") or 2, space.channels, space.layers,
                                 options["seed"], log=log)
            atomic_write_text(path, json.dumps(found))
        directory.budget_seconds -= found["seconds"]
        darts_record = directory.evaluate({"genotype": found["genotype"], "origin": "darts"}, epochs)
    rng = random.Random(options["seed"])
    count = options.get("random_cells") or (8 if options["strategy"] == "darts" else 10**6)
    target = darts_record["params"] if darts_record is not None else None
    randoms = []
    try:
        for _ in range(count):
            genotype = random_genotype(rng) if target is None else matched_genotype(rng, directory, target)
            randoms.append(directory.evaluate({"genotype": genotype, "origin": "random"}, epochs))
    except BudgetExhausted:
        pass
    scores = [r["score"] for r in randoms if r.get("score") is not None]
    lines = ["## DARTS cell vs random cells", ""]
    if target is not None:
        lines.append(f"Random cells drawn uniformly, keeping those within {100 * PARAM_TOLERANCE:.0f}% of the DARTS "
                     f"network's {target:,} parameters (equal size, same proxy training).")
    if scores:
        lines.append(f"{len(scores)} random cells: median proxy accuracy {100 * statistics.median(scores):.2f}% "
                     f"(range {100 * min(scores):.2f}-{100 * max(scores):.2f}%), median parameters "
                     f"{statistics.median(r['params'] for r in randoms):,.0f}.")
    if darts_record is not None and darts_record.get("score") is not None:
        lines.append(f"DARTS cell: proxy accuracy {100 * darts_record['score']:.2f}%, {darts_record['params']:,} "
                     f"parameters ({darts_record['description']}).")
    return lines + [""]
