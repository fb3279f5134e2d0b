"""Search spaces: what a candidate is (a small dict of numbers), how to sample and mutate one, and the cnnkit
YAML network spec it stands for.

- `regnet`: the RegNetX design space of Radosavovic et al. 2020 (cnnkit.models.anynet), with ranges scaled
  down for small images (the paper samples d < 64, w_0 < 256, w_a < 256 for ImageNet at 400 MF and more).
- `scaling`: EfficientNet's compound scaling (Tan and Le 2019) of FastNet: depth alpha^phi, width beta^phi,
  resolution gamma^phi (cnnkit.search.scaling).
- `fastnet`: FastNet's own design space, AnyNet-style (Radosavovic et al. 2020, section 3: free widths and
  depths per stage): the stem width, and each of the three stages' width and convolutions. fastnet itself
  (stem 24, widths 32-64-128, 2 convolutions per stage) is a point of it, so a search here answers "is there a
  cheaper or better FastNet?" rather than "is another family better?".
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


class SampledSpace:
    """What the strategies need of a space of parameter dicts: `sample` draws until `is_valid`, `mutate` changes one
    parameter by one `step` (aging evolution's mutation). Subclasses give draw, step and is_valid."""

    def sample(self, rng: random.Random) -> dict[str, Any]:
        while True:
            arch = self.draw(rng)
            if self.is_valid(arch):
                return arch

    def mutate(self, arch: dict[str, Any], rng: random.Random) -> dict[str, Any]:
        while True:
            child = dict(arch)
            key = rng.choice(list(child))
            child[key] = self.step(key, child[key], rng.choice((-1, 1)), rng)
            if child != arch and self.is_valid(child):
                return child


class RegNetSpace(SampledSpace):
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

    def draw(self, rng: random.Random) -> dict[str, Any]:
        return {"depth": rng.randint(*self.depths), "w_0": 8 * rng.randint(self.w_0[0] // 8, self.w_0[1] // 8),
                "w_a": round(math.exp(rng.uniform(math.log(self.w_a[0]), math.log(self.w_a[1]))), 2),
                "w_m": round(rng.uniform(*self.w_m), 2), "group_width": rng.choice(self.group_widths),
                "bottleneck_ratio": rng.choice(self.bottleneck_ratios), "stem_width": rng.choice(self.stem_widths)}

    def step(self, key: str, value, step: int, rng: random.Random):
        if key == "depth":
            return min(max(value + step * rng.randint(1, 2), self.depths[0]), self.depths[1])
        if key == "w_0":
            return min(max(value + 8 * step, self.w_0[0]), self.w_0[1])
        if key == "w_a":
            return round(min(max(value * 1.3 ** step, self.w_a[0]), self.w_a[1]), 2)
        if key == "w_m":
            return round(min(max(value + 0.2 * step, self.w_m[0]), self.w_m[1]), 2)
        choices = {"group_width": self.group_widths, "bottleneck_ratio": self.bottleneck_ratios,
                   "stem_width": self.stem_widths}[key]
        return choices[min(max(choices.index(value) + step, 0), len(choices) - 1)]

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


class FastNetSpace(SampledSpace):
    """{"stem", "w1", "w2", "w3", "d1", "d2", "d3"}: FastNet with free widths and convolutions per stage.

    Each stage is conv -> maxpool(2, ceil as fastnet) -> BN -> GELU, then d - 1 times conv -> BN -> GELU at the
    pooled size; global max pooling and a linear layer close it (cnnkit.models.fastnet's layout, as YAML).
    Widths are multiples of 8 and never shrink from one stage to the next.
    """

    name = "fastnet"
    stems = (8, 16, 24, 32)
    widths = ((8, 64), (16, 128), (32, 256))  # per stage, multiples of 8
    depths = (1, 3)
    edf_parameters = ("stem", "w1", "w2", "w3", "d1", "d2", "d3")
    base = {"stem": 24, "w1": 32, "w2": 64, "w3": 128, "d1": 2, "d2": 2, "d3": 2}  # fastnet

    def draw(self, rng: random.Random) -> dict[str, Any]:
        arch = {"stem": rng.choice(self.stems)}
        arch.update({f"w{i + 1}": 8 * rng.randint(low // 8, high // 8) for i, (low, high) in enumerate(self.widths)})
        arch.update({f"d{i + 1}": rng.randint(*self.depths) for i in range(3)})
        return arch

    def step(self, key: str, value, step: int, rng: random.Random):
        """A stem choice, 8 or 16 channels of a width, one convolution."""
        if key == "stem":
            return self.stems[min(max(self.stems.index(value) + step, 0), len(self.stems) - 1)]
        if key.startswith("w"):
            low, high = self.widths[int(key[1]) - 1]
            return min(max(value + step * 8 * rng.randint(1, 2), low), high)
        return min(max(value + step, self.depths[0]), self.depths[1])

    def is_valid(self, arch: dict[str, Any]) -> bool:
        return arch["w1"] <= arch["w2"] <= arch["w3"]

    def spec(self, arch: dict[str, Any], input_size: int | None = None) -> dict:
        layers: list = [{"conv": {"filters": arch["stem"]}}, "batchnorm", "gelu"]
        for stage in (1, 2, 3):
            width = arch[f"w{stage}"]
            # no bias before pool -> BN: BN's shift replaces it (max(x + b) = max(x) + b), as in fastnet
            layers += [{"conv": {"filters": width, "bias": False}}, {"maxpool": {"kernel": 2, "ceil": True}},
                       "batchnorm", "gelu"]
            layers += [{"conv": {"filters": width}}, "batchnorm", "gelu"] * (arch[f"d{stage}"] - 1)
        layers += ["globalmaxpool", {"linear": {"units": "num_classes"}}]
        return {"description": f"FastNet design space: {self.describe(arch)}", "layers": layers}

    def macs(self, arch: dict[str, Any], in_chans: int, input_size: int, num_classes: int) -> int:
        """Convolutions' and the linear layer's multiply-accumulates, by formula (equal to count_macs; tested)."""
        size, channels = input_size, arch["stem"]
        total = 9 * in_chans * channels * size * size
        for stage in (1, 2, 3):
            width = arch[f"w{stage}"]
            total += 9 * channels * width * size * size
            size = -(-size // 2)
            total += (arch[f"d{stage}"] - 1) * 9 * width * width * size * size
            channels = width
        return total + channels * num_classes

    def train_overrides(self, arch: dict[str, Any]) -> dict[str, Any]:
        return {}

    def build(self, arch: dict[str, Any], in_chans: int, input_size: int, num_classes: int) -> torch.nn.Module:
        return CustomCNN(self.spec(arch), num_classes=num_classes, in_chans=in_chans, input_size=input_size)

    def describe(self, arch: dict[str, Any]) -> str:
        return (f"stem {arch['stem']}, widths {[arch['w1'], arch['w2'], arch['w3']]}, "
                f"convs {[arch['d1'], arch['d2'], arch['d3']]}")


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
    """The search space called `name`: "regnet", "fastnet", "scaling" or "cells"."""
    from cnnkit.search.cells import CellSpace
    from cnnkit.search.scaling import ScalingSpace

    spaces = {"regnet": RegNetSpace, "fastnet": FastNetSpace, "scaling": ScalingSpace, "cells": CellSpace}
    if name not in spaces:
        raise ConfigError(f"unknown search space {name!r}; choose {', '.join(spaces)}")
    return spaces[name](**options) if name == "scaling" else spaces[name]()
