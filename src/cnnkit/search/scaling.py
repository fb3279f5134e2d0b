"""Compound scaling (Tan and Le 2019, "EfficientNet", section 3.3) of FastNet.

depth d = alpha^phi, width w = beta^phi, resolution r = gamma^phi, with alpha * beta^2 * gamma^2 ~ 2 so that
each step of phi about doubles the MACs. Step 1: a grid of (alpha, beta, gamma) in steps of 0.1 with
|alpha * beta^2 * gamma^2 - 2| <= 0.1, each trained at phi = 1 (the paper's step 1). Step 2: the best
(alpha, beta, gamma) at phi = -1, 0, 1, 2 (the family; the paper goes to phi = 7 on ImageNet).

The base is FastNet written as a YAML spec (cnnkit.models.fastnet): a stem conv, three stages of
conv -> maxpool -> BN -> GELU -> conv -> BN -> GELU, global max pooling, linear. Depth scales the convolutions
per stage (2 at phi = 0), width the channels (multiples of 8), resolution the training images (`image_size`,
resized by the data pipeline). Deviation from fastnet: the YAML maxpool rounds down (fastnet's rounds up),
so 28 px images reach the last stage at 3x3 instead of 4x4 (0.0177 instead of 0.0188 GMACs).
A user's YAML network as the base is not supported yet: which layers to repeat is not defined for any spec.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from cnnkit.errors import ConfigError
from cnnkit.models.anynet import make_divisible
from cnnkit.search.directory import BudgetExhausted

BASE_WIDTHS = (24, 32, 64, 128)  # fastnet's stem and stages
BASE_CONVS_PER_STAGE = 2
PHIS = (-1, 0, 1, 2)


def grid(step: float = 0.1, tolerance: float = 0.1) -> list[tuple[float, float, float]]:
    """(alpha, beta, gamma) >= 1 with |alpha * beta^2 * gamma^2 - 2| <= tolerance, closest to 2 first."""
    values = [round(1 + step * i, 2) for i in range(int(round(1 / step)) + 1)]
    points = [(a, b, g) for a in values for b in values for g in values if abs(a * b * b * g * g - 2) <= tolerance]
    return sorted(points, key=lambda p: (abs(p[0] * p[1] ** 2 * p[2] ** 2 - 2), p))


class ScalingSpace:
    """Candidates {"alpha", "beta", "gamma", "phi"}: FastNet scaled in depth, width and resolution."""

    name = "scaling"
    edf_parameters = ("alpha", "beta", "gamma", "phi")

    def __init__(self, base: str = "fastnet", input_size: int = 28):
        if base != "fastnet":
            raise ConfigError(f"--space scaling scales fastnet; base {base!r} is not supported yet (a YAML "
                              "network does not say which of its layers to repeat for depth)")
        self.input_size = input_size

    def scaled(self, arch: dict[str, Any]) -> tuple[int, tuple[int, ...], int]:
        """(convolutions per stage, widths, image size) of a candidate."""
        phi = arch["phi"]
        convs = max(1, round(BASE_CONVS_PER_STAGE * arch["alpha"] ** phi))
        widths = tuple(make_divisible(width * arch["beta"] ** phi, 8) for width in BASE_WIDTHS)
        size = max(8, round(self.input_size * arch["gamma"] ** phi))
        return convs, widths, size

    def spec(self, arch: dict[str, Any], input_size: int | None = None) -> dict:
        convs, widths, size = self.scaled(arch)
        stem, *stages = widths
        layers: list = [{"conv": {"filters": stem}}, "batchnorm", "gelu"]
        for width in stages:
            layers += [{"conv": {"filters": width}}, {"maxpool": {"kernel": 2}}, "batchnorm", "gelu"]
            layers += [{"conv": {"filters": width}}, "batchnorm", "gelu"] * (convs - 1)
        layers += ["globalmaxpool", {"linear": {"units": "num_classes"}}]
        return {"description": f"FastNet compound-scaled: {self.describe(arch)}", "layers": layers}

    def macs(self, arch: dict[str, Any], in_chans: int, input_size: int, num_classes: int) -> int:
        from cnnkit.search.spaces import spec_cost

        return spec_cost(self.spec(arch), in_chans, self.scaled(arch)[2], num_classes)[1]

    def train_overrides(self, arch: dict[str, Any]) -> dict[str, Any]:
        size = self.scaled(arch)[2]
        return {"image_size": size} if size != self.input_size else {}

    def build(self, arch: dict[str, Any], in_chans: int, input_size: int, num_classes: int):
        from cnnkit.models.custom import CustomCNN

        return CustomCNN(self.spec(arch), num_classes=num_classes, in_chans=in_chans, input_size=self.scaled(arch)[2])

    def describe(self, arch: dict[str, Any]) -> str:
        convs, widths, size = self.scaled(arch)
        return (f"alpha={arch['alpha']} beta={arch['beta']} gamma={arch['gamma']} phi={arch['phi']} -> "
                f"{convs} convs/stage, widths {list(widths)}, {size}px")

    def sample(self, rng: random.Random) -> dict[str, Any]:
        alpha, beta, gamma = rng.choice(grid())
        return {"alpha": alpha, "beta": beta, "gamma": gamma, "phi": 1}


def compound_scaling(space: ScalingSpace, directory, epochs: int, log: Callable) -> list[str]:
    """The grid at phi = 1, then the best coefficients at phi = -1..2 (each candidate trained once); returns
    the report's lines (the family's accuracy vs MACs)."""
    try:
        best = None
        for alpha, beta, gamma in grid():
            arch = {"alpha": alpha, "beta": beta, "gamma": gamma, "phi": 1}
            if not directory.allows(arch):
                continue
            record = directory.evaluate(arch, epochs)
            if record.get("score") is not None and (best is None or record["score"] > best["score"]):
                best = record
        if best is not None:
            log(f"best coefficients: {space.describe(best['arch'])}")
    except BudgetExhausted:
        log("budget spent inside the (alpha, beta, gamma) grid: the family uses the best point so far")
        done = [r for r in directory.records.values() if r.get("score") is not None and r["arch"]["phi"] == 1]
        best = max(done, key=lambda r: r["score"]) if done else None
    if best is None:
        return []
    family = [{**best["arch"], "phi": phi} for phi in PHIS]
    directory.budget_seconds = float("inf")  # the family is the result: its 4 members always train
    directory.max_candidates = None
    records = [directory.evaluate(arch, epochs) for arch in family]
    lines = ["## The scaled family", "", f"alpha={best['arch']['alpha']}, beta={best['arch']['beta']}, "
             f"gamma={best['arch']['gamma']} (the best of the grid at phi=1)", "",
             "| phi | network | MMACs | params | proxy acc % |", "|---|---|---|---|---|"]
    for record in records:
        score = f"{100 * record['score']:.2f}" if record.get("score") is not None else "failed"
        lines.append(f"| {record['arch']['phi']} | {record['description'].split('-> ')[-1]} | "
                     f"{record['macs'] / 1e6:.2f} | {record['params']:,} | {score} |")
    return lines + [""]
