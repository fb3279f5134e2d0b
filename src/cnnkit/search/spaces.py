"""Search spaces: what a candidate is (a small dict of numbers), how to sample and mutate one, and the cnnkit
YAML network spec it stands for.

- `regnet`: the RegNetX design space of Radosavovic et al. 2020 (cnnkit.models.anynet), with ranges scaled
  down for small images (the paper samples d < 64, w_0 < 256, w_a < 256 for ImageNet at 400 MF and more).
- `scaling`: EfficientNet's compound scaling (Tan and Le 2019) of FastNet: depth alpha^phi, width beta^phi,
  resolution gamma^phi (cnnkit.search.scaling).
The `cells` space (DARTS) is not a YAML spec; it lives in cnnkit.search.cells.

Every candidate's MACs are known before it is trained (constraints are checked by sampling, not by training).
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch

from cnnkit.errors import ConfigError, ModelError
from cnnkit.inspect.summary import count_macs
from cnnkit.models.anynet import anynet_macs, anynet_spec, regnet_design
from cnnkit.models.custom import CustomCNN

MAX_SAMPLING_TRIES = 20_000  # rejection sampling under the constraints: a band this rare is a user error


def spec_cost(spec: dict, in_chans: int, input_size: int, num_classes: int) -> tuple[int, int]:
    """(parameters, MACs) of a YAML spec, built on the meta device (no memory, no random numbers)."""
    with torch.device("meta"):
        model = CustomCNN(spec, num_classes=num_classes, in_chans=in_chans, input_size=input_size)
    return sum(p.numel() for p in model.parameters()), count_macs(model, (in_chans, input_size, input_size))


class RegNetSpace:
    """RegNetX: depth, w_0, w_a, w_m, group width, bottleneck ratio (and the stem width)."""

    name = "regnet"
    # The paper's ranges (section 3.3) scaled to 28-32 px images and a few MFLOPs.
    depths = (4, 16)
    w_0 = (8, 64)  # multiples of 8
    w_a = (4.0, 64.0)  # log-uniform
    w_m = (1.5, 3.0)
    group_widths = (1, 2, 4, 8, 16, 32)
    bottleneck_ratios = (1.0, 2.0, 4.0)
    stem_widths = (16, 24, 32)
    stages = (2, 4)  # at 28 px and a stride-1 stem, 4 stride-2 stages end at 2x2
    edf_parameters = ("depth", "w_0", "w_a", "w_m", "group_width", "bottleneck_ratio")

    def sample(self, rng: random.Random) -> dict[str, Any]:
        while True:
            arch = {"depth": rng.randint(*self.depths), "w_0": 8 * rng.randint(self.w_0[0] // 8, self.w_0[1] // 8),
                    "w_a": round(math.exp(rng.uniform(math.log(self.w_a[0]), math.log(self.w_a[1]))), 2),
                    "w_m": round(rng.uniform(*self.w_m), 2), "group_width": rng.choice(self.group_widths),
                    "bottleneck_ratio": rng.choice(self.bottleneck_ratios), "stem_width": rng.choice(self.stem_widths)}
            if self.is_valid(arch):
                return arch

    def mutate(self, arch: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        """One parameter changed by a small step (aging evolution's mutation)."""
        while True:
            child = dict(arch)
            key = rng.choice(list(child))
            step = rng.choice((-1, 1))
            if key == "depth":
                child[key] = min(max(child[key] + step * rng.randint(1, 2), self.depths[0]), self.depths[1])
            elif key == "w_0":
                child[key] = min(max(child[key] + 8 * step, self.w_0[0]), self.w_0[1])
            elif key == "w_a":
                child[key] = round(min(max(child[key] * 1.3 ** step, self.w_a[0]), self.w_a[1]), 2)
            elif key == "w_m":
                child[key] = round(min(max(child[key] + 0.2 * step, self.w_m[0]), self.w_m[1]), 2)
            else:
                choices = {"group_width": self.group_widths, "bottleneck_ratio": self.bottleneck_ratios,
                           "stem_width": self.stem_widths}[key]
                child[key] = choices[min(max(choices.index(child[key]) + step, 0), len(choices) - 1)]
            if child != arch and self.is_valid(child):
                return child

    def design(self, arch: dict[str, Any]):
        return regnet_design(arch["depth"], arch["w_0"], arch["w_a"], arch["w_m"], arch["group_width"],
                             arch["bottleneck_ratio"], arch["stem_width"])

    def is_valid(self, arch: dict[str, Any]) -> bool:
        try:
            design = self.design(arch)
        except ModelError:
            return False
        return self.stages[0] <= len(design.depths) <= self.stages[1]

    def spec(self, arch: dict[str, Any], input_size: int) -> dict:
        return anynet_spec(self.design(arch), stem_stride=1 if input_size < 64 else 2)

    def macs(self, arch: dict[str, Any], in_chans: int, input_size: int, num_classes: int) -> int:
        return anynet_macs(self.design(arch), in_chans, input_size, num_classes, 1 if input_size < 64 else 2)

    def train_overrides(self, arch: dict[str, Any]) -> dict[str, Any]:
        return {}

    def build(self, arch: dict[str, Any], in_chans: int, input_size: int, num_classes: int) -> torch.nn.Module:
        return CustomCNN(self.spec(arch, input_size), num_classes=num_classes, in_chans=in_chans,
                         input_size=input_size)

    def describe(self, arch: dict[str, Any]) -> str:
        design = self.design(arch)
        return (f"d={arch['depth']} w0={arch['w_0']} wa={arch['w_a']} wm={arch['w_m']} g={arch['group_width']} "
                f"b={arch['bottleneck_ratio']:g} -> depths {list(design.depths)} widths {list(design.widths)}")


class Constraint:
    """`macs<=19M`, `params<=300k`, `macs>=5e6`: a bound on a candidate's cost."""

    UNITS = {"k": 1e3, "m": 1e6, "g": 1e9}

    def __init__(self, text: str):
        self.text = text
        for operator in ("<=", ">="):
            if operator in text:
                metric, _, value = text.partition(operator)
                break
        else:
            raise ConfigError(f"constraint {text!r}: write METRIC<=VALUE or METRIC>=VALUE, e.g. macs<=10M or "
                              "params<=300k")
        self.metric, self.operator = metric.strip().lower(), operator
        if self.metric not in ("macs", "params"):
            raise ConfigError(f"constraint {text!r}: the metric is macs or params, got {metric.strip()!r}")
        value = value.strip().lower()
        scale = self.UNITS.get(value[-1:], 1.0)
        try:
            self.value = float(value[:-1] if value[-1:] in self.UNITS else value) * scale
        except ValueError:
            raise ConfigError(f"constraint {text!r}: {value!r} is not a number (10M, 0.02G, 300k, 5e6)") from None

    def allows(self, costs: dict[str, float]) -> bool:
        value = costs[self.metric]
        return value <= self.value if self.operator == "<=" else value >= self.value

    def __str__(self) -> str:
        return self.text


def space_by_name(name: str, **options):
    """The search space called `name`: "regnet", "scaling" or "cells"."""
    from cnnkit.search.cells import CellSpace
    from cnnkit.search.scaling import ScalingSpace

    spaces = {"regnet": RegNetSpace, "scaling": ScalingSpace, "cells": CellSpace}
    if name not in spaces:
        raise ConfigError(f"unknown search space {name!r}; choose regnet, scaling or cells")
    return spaces[name](**options) if name == "scaling" else spaces[name]()
