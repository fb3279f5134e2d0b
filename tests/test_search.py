"""Architecture search (cnnkit.search): the RegNet space, MACs, strategies, the resumable search directory."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from torchvision.models.regnet import BlockParams

from cnnkit.errors import ConfigError
from cnnkit.inspect.summary import count_macs
from cnnkit.models.anynet import AnyNetDesign, anynet_macs, anynet_spec, regnet_block_widths, regnet_design
from cnnkit.models.custom import CustomCNN
from cnnkit.search import search
from cnnkit.search.report import pareto_front, rank, spearman
from cnnkit.search.spaces import Constraint, FastNetSpace, RegNetSpace

# torchvision's builders' (depth, w_0, w_a, w_m, group_width) for the 15 published RegNetX/Y models.
PUBLISHED = {
    "regnet_x_400mf": (22, 24, 24.48, 2.54, 16), "regnet_x_800mf": (16, 56, 35.73, 2.28, 16),
    "regnet_x_1_6gf": (18, 80, 34.01, 2.25, 24), "regnet_x_3_2gf": (25, 88, 26.31, 2.25, 48),
    "regnet_x_8gf": (23, 80, 49.56, 2.88, 120), "regnet_x_16gf": (22, 216, 55.59, 2.1, 128),
    "regnet_x_32gf": (23, 320, 69.86, 2.0, 168), "regnet_y_400mf": (16, 48, 27.89, 2.09, 8),
    "regnet_y_800mf": (14, 56, 38.84, 2.4, 16), "regnet_y_1_6gf": (27, 48, 20.71, 2.65, 24),
    "regnet_y_3_2gf": (21, 80, 42.63, 2.66, 24), "regnet_y_8gf": (17, 192, 76.82, 2.19, 56),
    "regnet_y_16gf": (18, 200, 106.23, 2.48, 112), "regnet_y_32gf": (20, 232, 115.89, 2.53, 232),
    "regnet_y_128gf": (27, 456, 160.83, 2.52, 264),
}


def test_regnet_x_400mf_widths_follow_the_papers_quantised_linear_rule() -> None:
    # u_j = 24 + 24.48 j; s_j = round(log(u_j / 24) / log 2.54); w_j = 24 * 2.54^s_j rounded to 8:
    # s = 0 for j = 0, 1 for j = 1..2 (u = 48.5, 72.96), 2 for j = 3..9, 3 for j = 10..21.
    widths = regnet_block_widths(22, 24, 24.48, 2.54)
    assert widths == [24] + [64] * 2 + [152] * 7 + [392] * 12
    # then made compatible with the group width 16 (torchvision rounds 152 -> 160 and 392 -> 400).
    design = regnet_design(22, 24, 24.48, 2.54, 16)
    assert design.depths == (1, 2, 7, 12) and design.widths == (32, 64, 160, 400)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_regnet_design_equals_torchvision_on_published_configs(name: str) -> None:
    depth, w_0, w_a, w_m, group_width = PUBLISHED[name]
    expected = BlockParams.from_init_params(depth=depth, w_0=w_0, w_a=w_a, w_m=w_m, group_width=group_width)
    design = regnet_design(depth, w_0, w_a, w_m, group_width)
    assert list(design.depths) == expected.depths
    assert list(design.widths) == expected.widths
    assert list(design.group_widths) == expected.group_widths


def test_every_sampled_regnet_builds_runs_at_28_and_32_and_its_spec_macs_are_measured() -> None:
    space, rng = RegNetSpace(), random.Random(0)
    archs = [space.sample(rng) for _ in range(4)]
    assert len({json.dumps(a, sort_keys=True) for a in archs}) == 4
    for arch in archs:
        for in_chans, size in ((1, 28), (3, 32)):
            model = CustomCNN(space.spec(arch, size), num_classes=10, in_chans=in_chans, input_size=size).eval()
            with torch.no_grad():
                logits = model(torch.randn(1, in_chans, size, size))
            assert logits.shape == (1, 10) and torch.isfinite(logits).all()
            assert space.macs(arch, in_chans, size, 10) == count_macs(model, (in_chans, size, size))


def test_anynet_spec_is_the_described_network() -> None:
    design = AnyNetDesign((1, 2), (16, 32), (8, 16), (1.0, 2.0), stem_width=8)
    spec = anynet_spec(design)
    model = CustomCNN(spec, num_classes=4, in_chans=1, input_size=28)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    # stem; stage 1: 1x1, 3x3 (16/8 = 2 groups, stride 2), 1x1, projection; stage 2 block 1: inner 32 / 2 = 16
    # channels in groups of 16 (1 group), stride 2, + projection; block 2: identity shortcut.
    assert [c.out_channels for c in convs] == [8, 16, 16, 16, 16, 16, 16, 32, 32, 16, 16, 32]
    assert [c.groups for c in convs if c.kernel_size == (3, 3)] == [1, 2, 1, 1]
    assert [c.stride[0] for c in convs if c.kernel_size == (3, 3)] == [1, 2, 2, 1]
    assert anynet_macs(design, 1, 28, 4) == count_macs(model, (1, 28, 28))


def test_fastnet_space_holds_fastnet_itself_and_its_macs_formula_is_measured() -> None:
    from cnnkit.models.fastnet import fastnet

    space = FastNetSpace()
    reference = fastnet(num_classes=10, in_chans=1, input_size=28)
    base = CustomCNN(space.spec(space.base), num_classes=10, in_chans=1, input_size=28)
    assert space.macs(space.base, 1, 28, 10) == count_macs(base, (1, 28, 28)) == count_macs(reference, (1, 28, 28))
    assert sum(p.numel() for p in base.parameters()) == sum(p.numel() for p in reference.parameters())
    # the same weights give the same logits: the YAML layout is fastnet's (ceil pooling: 7x7 -> 4x4)
    with torch.no_grad():
        for target, source in zip(base.parameters(), reference.parameters()):
            target.copy_(source)
        images = torch.randn(2, 1, 28, 28)
        assert torch.allclose(base.eval()(images), reference.eval()(images), atol=1e-5)
    rng = random.Random(1)
    for _ in range(4):
        arch = space.sample(rng)
        child = space.mutate(arch, rng)
        assert sum(arch[k] != child[k] for k in arch) == 1 and space.is_valid(child)
        for in_chans, size in ((1, 28), (3, 32)):
            model = CustomCNN(space.spec(arch), num_classes=10, in_chans=in_chans, input_size=size)
            assert space.macs(arch, in_chans, size, 10) == count_macs(model, (in_chans, size, size))


def test_yaml_pools_take_ceil_mode() -> None:
    spec = {"layers": [{"conv": {"filters": 4}}, {"maxpool": {"kernel": 2, "ceil": True}}, "globalavgpool",
                       {"linear": {"units": 2}}]}
    model = CustomCNN(spec, num_classes=2, in_chans=1, input_size=7)
    pools = [m for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert pools[0].ceil_mode and pools[0](torch.zeros(1, 1, 7, 7)).shape[-1] == 4
    from cnnkit.models.custom import ModelSpecError

    with pytest.raises(ModelSpecError, match="ceil must be true or false"):
        CustomCNN({"layers": [{"maxpool": {"ceil": "yes"}}]}, num_classes=2, in_chans=1, input_size=8)


def test_constraints_parse_and_bound_the_sampled_macs() -> None:
    bound = Constraint("macs<=2M")
    assert (bound.metric, bound.operator, bound.value) == ("macs", "<=", 2e6)
    assert Constraint("params >= 300k").value == 3e5 and Constraint("macs<=0.019G").value == pytest.approx(19e6)
    for text in ("macs<2M", "flops<=1M", "macs<=two"):
        with pytest.raises(ConfigError, match="constraint"):
            Constraint(text)


def test_spearman_and_pareto_front() -> None:
    assert rank([3.0, 1.0, 3.0, 2.0]) == [3.5, 1.0, 3.5, 2.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    scipy_stats = pytest.importorskip("scipy.stats")
    first, second = [0.8, 0.7, 0.75, 0.9, 0.6, 0.7], [0.91, 0.9, 0.88, 0.93, 0.85, 0.89]
    assert spearman(first, second) == pytest.approx(scipy_stats.spearmanr(first, second).statistic)
    records = [{"macs": 1, "score": 0.5}, {"macs": 2, "score": 0.4}, {"macs": 3, "score": 0.7},
               {"macs": 3, "score": 0.6}, {"macs": 5, "score": 0.9}]
    assert [(r["macs"], r["score"]) for r in pareto_front(records)] == [(1, 0.5), (3, 0.7), (5, 0.9)]


# --- the search directory, with a stand-in trainer (no training) -------------------------------------------

class FakeTrainer:
    """Scores a candidate by its MACs (bigger is better, as a proxy would roughly say); counts its calls."""

    def __init__(self, fail_on_call: int | None = None):
        self.calls: list[str] = []
        self.fail_on_call = fail_on_call

    def __call__(self, model: str, data: str, run_dir: Path, settings: dict) -> dict:
        self.calls.append(Path(model).stem)
        run_dir.mkdir(parents=True)
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise KeyboardInterrupt  # killed in the middle of this candidate
        spec = Path(model).read_text()
        return {"val_accuracy": (len(spec) % 997) / 997, "seconds": 1.0 + settings["epochs"]}


def _search(root: Path, data: Path, trainer, **options):
    options = {"proxy_images": 40, "budget": "1h", "constraints": ["macs<=3M"], "log": lambda *a: None,
               "latency_repeats": 1, **options}
    return search(root, data=str(data), trainer=trainer, **options)


def test_a_killed_search_resumes_without_repeating_finished_candidates(tmp_path: Path, image_folder: Path) -> None:
    root = tmp_path / "search"
    first = FakeTrainer(fail_on_call=4)
    with pytest.raises(KeyboardInterrupt):
        _search(root, image_folder, first, max_candidates=6)
    lines = (root / "candidates.jsonl").read_text().splitlines()
    assert len(lines) == 3  # three finished before the kill
    with (root / "candidates.jsonl").open("a") as file:
        file.write('{"key": "cut sh')  # a line cut short by the kill is ignored
    second = FakeTrainer()
    result = _search(root, image_folder, second, max_candidates=6, resume=True)
    finished = [json.loads(line)["key"] for line in lines]
    assert second.calls[0] == first.calls[3]  # the killed candidate is trained again ...
    assert not set(second.calls) & set(finished)  # ... and no finished one
    assert len(second.calls) == 3 and len(result["records"]) == 6
    assert all(r["macs"] <= 3e6 and r["macs"] == r["measured_macs"] for r in result["records"])
    winner = max(result["records"], key=lambda r: r["score"])
    assert result["winner"]["key"] == winner["key"]
    assert yaml_load(root / "winner.yaml") == winner["spec"]
    report = (root / "report.md").read_text()
    assert "Pareto front (proxy accuracy vs MACs)" in report and "Pareto front (proxy accuracy vs CPU latency)" in report
    latency = json.loads((root / "latency.json").read_text())
    assert set(latency) == {r["key"] for r in result["records"]} and all(ms > 0 for ms in latency.values())
    assert (root / "pareto.png").stat().st_size > 1000 and (root / "edf.png").stat().st_size > 1000
    with pytest.raises(ConfigError, match="other settings"):
        _search(root, image_folder, FakeTrainer(), max_candidates=6, seed=1)


def yaml_load(path: Path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_evolution_mutates_one_parameter_of_a_tournament_winner(tmp_path: Path, image_folder: Path) -> None:
    result = _search(tmp_path / "evo", image_folder, FakeTrainer(), strategy="evolution", max_candidates=10)
    records = result["records"]
    assert len(records) == 10
    population = [r["arch"] for r in records[:8]]
    for record in records[8:]:
        nearest = min(sum(record["arch"][k] != parent[k] for k in parent) for parent in population)
        assert nearest == 1, record["arch"]
        population.append(record["arch"])


def test_successive_halving_promotes_the_best_third_to_three_times_the_epochs(tmp_path: Path,
                                                                               image_folder: Path) -> None:
    result = _search(tmp_path / "sh", image_folder, FakeTrainer(), strategy="halving", max_candidates=13)
    by_epochs: dict[int, list] = {}
    for record in result["records"]:
        by_epochs.setdefault(record["epochs"], []).append(record)
    assert {e: len(r) for e, r in by_epochs.items()} == {1: 9, 3: 3, 9: 1}
    top_three = sorted(by_epochs[1], key=lambda r: r["score"], reverse=True)[:3]
    assert {json.dumps(r["arch"], sort_keys=True) for r in top_three} == \
        {json.dumps(r["arch"], sort_keys=True) for r in by_epochs[3]}
    assert result["winner"]["epochs"] == 9


# --- end to end: real proxy training through the classify task, then `cnnkit train --model winner.yaml` ----

def test_search_cli_trains_candidates_and_the_winner_trains(tmp_path: Path, image_folder: Path, capsys) -> None:
    from cnnkit.cli import main

    code = main(["search", "--data", str(image_folder), "--out", str(tmp_path), "--name", "s", "--max-candidates",
                 "2", "--proxy-images", "200", "--constraint", "macs<=1.5M", "--full", "2", "--full-epochs", "1",
                 "num_threads=1", "batch_size=32"])
    assert code == 0
    root = tmp_path / "s"
    records = [json.loads(line) for line in (root / "candidates.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["status"] == "ok" and 0 <= r["score"] <= 1 for r in records)
    assert all(r["macs"] <= 1.5e6 and r["seconds"] > 0 and r["params"] > 0 for r in records)
    assert len((root / "full.jsonl").read_text().splitlines()) == 2
    assert "too few" in (root / "report.md").read_text()  # two pairs: no correlation claimed
    assert main(["train", "--model", str(root / "winner.yaml"), "--data", str(image_folder), "--epochs", "1",
                 "--out", str(tmp_path), "--name", "winner", "num_threads=1", "batch_size=32",
                 "report=false"]) == 0
    assert (tmp_path / "winner" / "best.safetensors").is_file()
    assert "winner:" in capsys.readouterr().out


@pytest.mark.slow
def test_workers_train_candidates_in_parallel_processes(tmp_path: Path, image_folder: Path) -> None:
    result = search(tmp_path / "w", data=str(image_folder), proxy_images=100, max_candidates=2, workers=2,
                    constraints=["macs<=1M"], settings={"num_threads": 2, "batch_size": 16}, log=lambda *a: None)
    assert len(result["records"]) == 2 and all(r["status"] == "ok" for r in result["records"])
    assert all(r["settings"]["num_threads"] == 1 for r in result["records"])  # 2 threads shared by 2 workers


def test_bad_search_arguments_are_clear_errors_before_anything_is_written(tmp_path: Path, capsys) -> None:
    from cnnkit.cli import main

    for arguments, message in ((["--constraint", "flops<=1M"], "the metric is macs or params"),
                               (["--budget", "ten minutes"], "write a duration such as 90s"),
                               (["--space", "cells", "--strategy", "evolution"], "darts or random")):
        code = main(["search", "--out", str(tmp_path), "--name", "bad", *arguments])
        assert code == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()
    with pytest.raises(ConfigError, match="no search.json"):
        search(tmp_path / "nothing", resume=True, log=lambda *a: None)


def test_full_pick_top_retrains_the_best_of_the_last_rung_in_the_fastnet_space(tmp_path: Path,
                                                                               image_folder: Path) -> None:
    trainer = FakeTrainer()
    result = _search(tmp_path / "top", image_folder, trainer, space="fastnet", strategy="halving",
                     constraints=["macs<=11.3M"], max_candidates=13, full=1, full_epochs=2, full_pick="top")
    last_rung = [r for r in result["records"] if r["epochs"] == 9]
    assert len(last_rung) == 1 and [f["key"] for f in result["full"]] == [last_rung[0]["key"]]
    assert all(r["space"] == "fastnet" and r["macs"] == r["measured_macs"] <= 11.3e6 for r in result["records"])
    assert result["winner"]["key"] == last_rung[0]["key"]
    with pytest.raises(ConfigError, match="full_pick"):
        _search(tmp_path / "bad", image_folder, trainer, full_pick="best")
