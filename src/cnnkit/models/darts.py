"""DARTS cells: Liu, Simonyan and Yang 2019, "DARTS: Differentiable Architecture Search", ICLR.

A cell takes the outputs of the two previous cells, has 4 intermediate nodes, and outputs the concatenation
of the nodes (4C channels). In a derived cell (a *genotype*), each node sums two operations, each applied to
one earlier state; in the search network (`SearchNetwork`) every edge is a `MixedOp`: the softmax-weighted
sum of all 8 candidate operations, the weights being the architecture parameters alpha (one row per edge).
Reduction cells (at 1/3 and 2/3 of the depth) apply stride 2 to the edges leaving the two inputs.

Operations (the paper's): none (zero), 3x3 max and average pooling, skip connection (identity, or a
factorised reduction when striding), 3x3 and 5x5 separable convolutions (applied twice), 3x3 and 5x5 dilated
separable convolutions. Written here after the authors' code (github.com/quark0/darts); timm has only the
NASNet/PNASNet cells with fixed genotypes, and no search network.

Deviations for small images and CPUs: a one-conv stem (no ImageNet stem), no auxiliary head and no drop
path in the derived network (cnnkit's Trainer has neither), default width C = 8 and 5 cells.
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.errors import ModelError
from cnnkit.models._utils import check_positive
from cnnkit.registry import register_model

OPERATIONS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
              "dil_conv_3x3", "dil_conv_5x5")
NODES = 4  # intermediate nodes per cell
EDGES = sum(2 + node for node in range(NODES))  # 14: node i has 2 + i incoming edges

# The cells of the paper's DARTS (second order) CIFAR-10 model, "DARTS_V2" in the authors' genotypes.py.
DARTS_V2 = {
    "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1],
               ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]],
    "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1],
               ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]],
}


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))


class DilConv(nn.Sequential):
    """ReLU, depthwise (dilated) conv, pointwise conv, BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int,
                 affine: bool = True):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out, affine=affine))


class SepConv(nn.Sequential):
    """Two DilConvs without dilation (the paper's separable convolution is applied twice)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
                         DilConv(c_in, c_out, kernel, 1, padding, 1, affine))


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::self.stride, ::self.stride] * 0.0


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convs on offset grids, concatenated: (B, C, H, W) -> (B, C', H/2, W/2)."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))  # odd sizes: both branches give ceil(H / 2)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def make_operation(name: str, channels: int, stride: int, affine: bool = True) -> nn.Module:
    """One candidate operation by name (an explicit table, no lookup by string into modules)."""
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, affine)
    if name == "sep_conv_3x3":
        return SepConv(channels, channels, 3, stride, 1, affine)
    if name == "sep_conv_5x5":
        return SepConv(channels, channels, 5, stride, 2, affine)
    if name == "dil_conv_3x3":
        return DilConv(channels, channels, 3, stride, 2, 2, affine)
    if name == "dil_conv_5x5":
        return DilConv(channels, channels, 5, stride, 4, 2, affine)
    raise ModelError(f"unknown DARTS operation {name!r} (known: {', '.join(OPERATIONS)})")


def check_genotype(genotype: Any) -> dict:
    """A genotype as {"normal": [[op, input] x 8], "reduce": [...]}; raise ModelError naming what is wrong."""
    if not isinstance(genotype, dict) or set(genotype) - {"normal", "reduce", "normal_concat", "reduce_concat"}:
        raise ModelError(f"a DARTS genotype is a mapping with `normal` and `reduce` lists, got {genotype!r}")
    for kind in ("normal", "reduce"):
        edges = genotype.get(kind)
        if not isinstance(edges, list) or len(edges) != 2 * NODES:
            raise ModelError(f"genotype {kind}: {2 * NODES} [operation, input] pairs (2 per node), got {edges!r}")
        for position, edge in enumerate(edges):
            node = position // 2
            if (not isinstance(edge, (list, tuple)) or len(edge) != 2 or edge[0] not in OPERATIONS[1:]
                    or not isinstance(edge[1], int) or not 0 <= edge[1] < node + 2):
                raise ModelError(f"genotype {kind} edge {position}: [operation, input] with an operation of "
                                 f"{', '.join(OPERATIONS[1:])} and an input in 0..{node + 1} (node {node}), "
                                 f"got {edge!r}")
    return {"normal": [list(e) for e in genotype["normal"]], "reduce": [list(e) for e in genotype["reduce"]]}


def _preprocess(c_prev_prev: int, c_prev: int, channels: int, reduction_prev: bool, affine: bool):
    first = FactorizedReduce(c_prev_prev, channels, affine) if reduction_prev else \
        ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine)
    return first, ReLUConvBN(c_prev, channels, 1, 1, 0, affine)


class Cell(nn.Module):
    """A derived cell: node i = op_a(state[input_a]) + op_b(state[input_b]); output: the 4 nodes concatenated."""

    def __init__(self, edges: list, c_prev_prev: int, c_prev: int, channels: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        self.preprocess0, self.preprocess1 = _preprocess(c_prev_prev, c_prev, channels, reduction_prev, True)
        self.inputs = [index for _, index in edges]
        self.ops = nn.ModuleList(make_operation(name, channels, 2 if reduction and index < 2 else 1)
                                 for name, index in edges)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(NODES):
            a, b = 2 * node, 2 * node + 1
            states.append(self.ops[a](states[self.inputs[a]]) + self.ops[b](states[self.inputs[b]]))
        return torch.cat(states[2:], dim=1)  # (B, 4C, H, W)


class MixedOp(nn.Module):
    """The softmax-weighted sum of every candidate operation on one edge."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        # affine=False in the search network, as the paper: BN scales would rescale the ops against alpha.
        self.ops = nn.ModuleList(make_operation(name, channels, stride, affine=False) for name in OPERATIONS)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(weight * op(x) for weight, op in zip(weights, self.ops))


class SearchCell(nn.Module):
    def __init__(self, c_prev_prev: int, c_prev: int, channels: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.preprocess0, self.preprocess1 = _preprocess(c_prev_prev, c_prev, channels, reduction_prev, False)
        self.edges = nn.ModuleList(MixedOp(channels, 2 if reduction and source < 2 else 1)
                                   for node in range(NODES) for source in range(2 + node))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states, edge = [self.preprocess0(s0), self.preprocess1(s1)], 0
        for node in range(NODES):
            total = 0
            for state in states:
                total = total + self.edges[edge](state, weights[edge])
                edge += 1
            states.append(total)
        return torch.cat(states[2:], dim=1)


def _cell_plan(layers: int) -> list[bool]:
    """Which cells reduce: those at 1/3 and 2/3 of the depth."""
    return [index in (layers // 3, 2 * layers // 3) for index in range(layers)]


class _CellStack(nn.Module):
    """Stem (3x3 conv to 3C, BN), the cells, global average pooling, linear."""

    def _build(self, channels: int, layers: int, num_classes: int, in_chans: int, make_cell) -> None:
        check_positive("channels", channels)
        if layers < 3:
            raise ModelError(f"a DARTS network needs at least 3 cells (two of them reduce), got layers={layers}")
        stem = 3 * channels
        self.stem = nn.Sequential(nn.Conv2d(in_chans, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem))
        c_prev_prev, c_prev, c_cell, reduction_prev = stem, stem, channels, False
        self.cells = nn.ModuleList()
        for reduction in _cell_plan(layers):
            c_cell = c_cell * 2 if reduction else c_cell
            self.cells.append(make_cell(c_prev_prev, c_prev, c_cell, reduction, reduction_prev))
            c_prev_prev, c_prev, reduction_prev = c_prev, NODES * c_cell, reduction
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        self.classifier = nn.Linear(self.classifier.in_features, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(features).flatten(1))  # (B, C, H, W) -> (B, num_classes)


class DartsNetwork(_CellStack):
    """The network of a genotype: `layers` cells of width `channels` (doubling at each reduction)."""

    def __init__(self, genotype: dict, channels: int = 8, layers: int = 5, num_classes: int = 10, in_chans: int = 1):
        super().__init__()
        check_positive("num_classes", num_classes)
        check_positive("in_chans", in_chans)
        self.genotype = check_genotype(genotype)
        self._build(channels, layers, num_classes, in_chans,
                    lambda pp, p, c, reduction, reduction_prev: Cell(
                        self.genotype["reduce" if reduction else "normal"], pp, p, c, reduction, reduction_prev))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
        return s1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class SearchNetwork(_CellStack):
    """DARTS's continuous relaxation: every edge a MixedOp, alpha shared by all normal / all reduction cells."""

    def __init__(self, channels: int = 8, layers: int = 5, num_classes: int = 10, in_chans: int = 1):
        super().__init__()
        self._build(channels, layers, num_classes, in_chans, SearchCell)
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(EDGES, len(OPERATIONS)))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(EDGES, len(OPERATIONS)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha_normal, self.alpha_reduce]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("alpha_")]

    def mixing_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """softmax(alpha) per edge: (14, 8) for normal and reduction cells, each row summing to 1."""
        return F.softmax(self.alpha_normal, dim=-1), F.softmax(self.alpha_reduce, dim=-1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        normal, reduce = self.mixing_weights()
        s0 = s1 = self.stem(x)
        for cell, reduction in zip(self.cells, _cell_plan(len(self.cells))):
            s0, s1 = s1, cell(s0, s1, reduce if reduction else normal)
        return s1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def derive_edges(weights: torch.Tensor, max_skips: int | None = None) -> list[list]:
    """The discrete cell of one cell type's mixing weights (14, 8), as the paper: per node, the 2 incoming edges
    with the strongest non-zero operation, each with its argmax non-zero operation.

    max_skips: at most this many skip connections (P-DARTS's cap against DARTS's collapse to skips, Chen et
    al. 2019): the weakest extra skips take their edge's best other operation.
    """
    weights = weights.detach().cpu()
    skip, none = OPERATIONS.index("skip_connect"), OPERATIONS.index("none")
    edges, start = [], 0
    for node in range(NODES):
        rows = weights[start:start + 2 + node]
        strengths = [max(row[i].item() for i in range(len(OPERATIONS)) if i != none) for row in rows]
        chosen = sorted(range(len(rows)), key=lambda i: -strengths[i])[:2]
        for source in sorted(chosen):
            row = rows[source].clone()
            row[none] = -1.0
            edges.append([OPERATIONS[int(row.argmax())], source, float(row.max())])
        start += 2 + node
    if max_skips is not None:
        skips = sorted((p for p, e in enumerate(edges) if e[0] == "skip_connect"), key=lambda p: -edges[p][2])
        for position in skips[max_skips:]:
            row = weights[_edge_row(position, edges[position][1])].clone()
            row[none] = row[skip] = -1.0
            edges[position][0] = OPERATIONS[int(row.argmax())]
    return [[name, source] for name, source, _ in edges]


def _edge_row(position: int, source: int) -> int:
    node = position // 2
    return sum(2 + earlier for earlier in range(node)) + source


def random_genotype(rng: random.Random) -> dict:
    """A uniformly random cell pair: per node two distinct inputs, each with a random non-zero operation."""
    genotype = {}
    for kind in ("normal", "reduce"):
        edges = []
        for node in range(NODES):
            for source in sorted(rng.sample(range(node + 2), 2)):
                edges.append([rng.choice(OPERATIONS[1:]), source])
        genotype[kind] = edges
    return genotype


@register_model(family="darts")
def darts_net(genotype: dict | None = None, channels: int = 8, layers: int = 5, num_classes: int = 10,
              in_chans: int = 1, input_size: int | tuple[int, int] = 28) -> DartsNetwork:
    """A network of DARTS cells (Liu et al. 2019); without a genotype, the paper's DARTS_V2 cells."""
    return DartsNetwork(DARTS_V2 if genotype is None else genotype, channels, layers, num_classes, in_chans)
