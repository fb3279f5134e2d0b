"""The DARTS cell space (cnnkit.models.darts, cnnkit.search.cells): mixed ops, derivation, the skip cap."""

from __future__ import annotations

import random

import pytest
import torch

from cnnkit.errors import ModelError
from cnnkit.models.darts import (EDGES, OPERATIONS, DartsNetwork, MixedOp, SearchNetwork, check_genotype,
                                 derive_edges, random_genotype)


def test_mixed_op_is_the_softmax_weighted_sum_of_its_operations() -> None:
    torch.manual_seed(0)
    network = SearchNetwork(channels=2, layers=3, num_classes=3, in_chans=1)
    with torch.no_grad():
        network.alpha_normal.normal_(0, 2)
    normal, reduce = network.mixing_weights()
    assert normal.shape == (EDGES, len(OPERATIONS)) == reduce.shape
    assert torch.allclose(normal.sum(dim=1), torch.ones(EDGES)) and torch.allclose(reduce.sum(dim=1), torch.ones(EDGES))
    mixed = MixedOp(channels=2, stride=1).eval()
    x, weights = torch.randn(1, 2, 6, 6), normal[3]
    expected = sum(w * op(x) for w, op in zip(weights, mixed.ops))
    assert torch.allclose(mixed(x, weights), expected, atol=1e-6)


def test_derived_cell_takes_the_two_strongest_edges_and_their_argmax_operations() -> None:
    weights = torch.full((EDGES, len(OPERATIONS)), 0.01)
    wanted = {0: ("sep_conv_3x3", 0.9), 1: ("max_pool_3x3", 0.8), 2: ("dil_conv_5x5", 0.3),  # node 0: edges 0, 1
              3: ("none", 0.99), 4: ("avg_pool_3x3", 0.7),  # node 1: 'none' never counts; edges 2 and 4 win
              5: ("sep_conv_5x5", 0.6), 8: ("skip_connect", 0.5),  # node 2: inputs 0 and 3
              13: ("dil_conv_3x3", 0.4), 10: ("sep_conv_3x3", 0.2)}  # node 3: inputs 4 and 1
    for row, (name, value) in wanted.items():
        weights[row, OPERATIONS.index(name)] = value
    assert derive_edges(weights) == [["sep_conv_3x3", 0], ["max_pool_3x3", 1], ["dil_conv_5x5", 0],
                                     ["avg_pool_3x3", 2], ["sep_conv_5x5", 0], ["skip_connect", 3],
                                     ["sep_conv_3x3", 1], ["dil_conv_3x3", 4]]


def test_skip_cap_replaces_the_weakest_skips_with_their_edges_next_best_operation() -> None:
    weights = torch.full((EDGES, len(OPERATIONS)), 0.01)
    skip = OPERATIONS.index("skip_connect")
    weights[:, skip] = torch.linspace(0.5, 0.9, EDGES)  # every edge prefers a skip, later edges more
    weights[:, OPERATIONS.index("sep_conv_3x3")] = 0.1
    uncapped = derive_edges(weights)
    assert all(name == "skip_connect" for name, _ in uncapped)
    capped = derive_edges(weights, max_skips=2)
    assert [name for name, _ in capped].count("skip_connect") == 2
    assert [name for name, _ in capped[-2:]] == ["skip_connect"] * 2  # the strongest skips (node 3) stay
    assert {name for name, _ in capped[:-2]} == {"sep_conv_3x3"}
    assert [source for _, source in capped] == [source for _, source in uncapped]


@pytest.mark.parametrize("in_chans, size", [(1, 28), (3, 32)])
def test_random_cells_build_and_run(in_chans: int, size: int) -> None:
    genotype = random_genotype(random.Random(size))
    assert check_genotype(genotype) == genotype
    model = DartsNetwork(genotype, channels=4, layers=3, num_classes=5, in_chans=in_chans).eval()
    with torch.no_grad():
        assert model(torch.randn(2, in_chans, size, size)).shape == (2, 5)


def test_bad_genotypes_name_the_edge() -> None:
    genotype = random_genotype(random.Random(0))
    genotype["normal"][5] = ["sep_conv_3x3", 7]
    with pytest.raises(ModelError, match="normal edge 5"):
        DartsNetwork(genotype)
    with pytest.raises(ModelError, match="none"):
        check_genotype({**genotype, "normal": [["none", 0]] * 8})


def test_a_first_order_step_moves_alpha_and_only_alpha_is_architecture() -> None:
    torch.manual_seed(0)
    network = SearchNetwork(channels=2, layers=3, num_classes=3, in_chans=1)
    alphas, weights = network.arch_parameters(), network.weight_parameters()
    assert {id(p) for p in alphas} | {id(p) for p in weights} == {id(p) for p in network.parameters()}
    assert not {id(p) for p in alphas} & {id(p) for p in weights}
    # One edge's mixed op, weighted by softmax(alpha): the gradient reaches alpha, and Adam moves it.
    mixed, alpha = MixedOp(channels=2, stride=1), torch.zeros(len(OPERATIONS), requires_grad=True)
    optimizer = torch.optim.Adam([alpha], lr=0.1)
    mixed(torch.randn(2, 2, 5, 5), torch.softmax(alpha, dim=0)).square().mean().backward()
    assert alpha.grad is not None and alpha.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(alpha.detach(), torch.zeros(len(OPERATIONS)))


# --- the cells and scaling spaces through the search directory (stand-in trainer: no training) -------------

def _fake_trainer(calls: list):
    def train(model, data, run_dir, settings):
        calls.append((model, settings))
        run_dir.mkdir(parents=True)
        return {"val_accuracy": 0.5 + 0.01 * len(calls), "seconds": 1.0}
    return train


def test_random_cells_search_trains_darts_net_with_the_genotype(tmp_path, image_folder) -> None:
    import yaml

    from cnnkit.search import search

    calls: list = []
    result = search(tmp_path / "cells", space="cells", strategy="random", data=str(image_folder), proxy_images=40,
                    max_candidates=3, trainer=_fake_trainer(calls), latency_repeats=1, log=lambda *a: None)
    assert len(result["records"]) == 3 and all(model == "darts_net" for model, _ in calls)
    assert all(check_genotype(s["model_args"]["genotype"]) for _, s in calls)
    recipe = yaml.safe_load((tmp_path / "cells" / "winner_recipe.yaml").read_text())
    assert recipe["model"] == "darts_net" and recipe["model_args"] == result["winner"]["spec"]


def test_compound_scaling_grid_then_the_family(tmp_path, image_folder) -> None:
    from cnnkit.search import search
    from cnnkit.search.scaling import ScalingSpace, grid

    points = grid()
    assert (1.2, 1.1, 1.15) not in points and len(points) == 20  # steps of 0.1
    assert all(abs(a * b * b * g * g - 2) <= 0.1 + 1e-9 and min(a, b, g) >= 1 for a, b, g in points)
    space = ScalingSpace()
    base = {"alpha": 1.2, "beta": 1.1, "gamma": 1.1, "phi": 0}
    assert space.scaled(base) == (2, (24, 32, 64, 128), 28)
    macs = [space.macs({**base, "phi": phi}, 1, 28, 10) for phi in (-1, 0, 1, 2)]
    assert 17e6 < macs[1] < 18e6  # fastnet as a YAML spec (floor pooling: 0.0177 G, fastnet 0.0188 G)
    # ~2x per phi step in theory; rounding (2 convs per stage, widths in multiples of 8) makes the steps uneven
    # (12.5, 17.8, 22.1, 51.3 MMACs here), but the family still grows with phi.
    assert macs == sorted(macs) and macs[-1] / macs[0] > 3
    calls: list = []
    result = search(tmp_path / "scaling", space="scaling", strategy="grid", data=str(image_folder),
                    proxy_images=40, max_candidates=2, trainer=_fake_trainer(calls), latency_repeats=1,
                    log=lambda *a: None)
    phis = [r["arch"]["phi"] for r in result["records"]]
    assert phis[:2] == [1, 1] and sorted(phis[2:]) == [-1, 0, 2]  # phi=1 of the best point is reused
    from cnnkit.models.custom import load_spec

    assert all(load_spec(model)["layers"] for model, _ in calls)  # cnnkit reads every written spec (no aliases)
    sizes = [settings.get("image_size", 28) for _, settings in calls]
    assert sizes[-3:] != [28, 28, 28]  # gamma > 1 changes the resolution ...
    assert "The scaled family" in (tmp_path / "scaling" / "report.md").read_text()


def test_random_cells_are_matched_to_the_darts_cell_in_parameters() -> None:
    """The DARTS-vs-random comparison is at equal size: random genotypes are redrawn until their network has
    within PARAM_TOLERANCE of the DARTS network's parameters."""
    import random

    from cnnkit.models.darts import DARTS_V2
    from cnnkit.search.cells import PARAM_TOLERANCE, CellSpace, matched_genotype

    space = CellSpace()

    class Directory:
        def costs(self, arch):
            return space.costs(arch, 1, 28, 10)

    target = space.costs({"genotype": DARTS_V2}, 1, 28, 10)["params"]
    rng = random.Random(0)
    sizes = [Directory().costs({"genotype": matched_genotype(rng, Directory(), target)})["params"] for _ in range(4)]
    assert all(abs(size - target) <= PARAM_TOLERANCE * target for size in sizes)
    assert len(set(sizes)) > 1  # still random cells, not one cell
