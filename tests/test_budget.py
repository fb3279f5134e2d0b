"""budget=15m: the Trainer plans and re-plans its steps from measured times and ends inside the budget.

A fake clock stands in for time: every training step "takes" STEP seconds and every validation batch
VAL_BATCH seconds, so the plan, the re-plans and the ending are exact and fast to test.
"""

from __future__ import annotations

import json

import pytest
import torch

from cnnkit.config import TrainConfig, make_config, parse_duration
from cnnkit.engine.budget import MARGIN_FRACTION, BudgetPlanner
from cnnkit.engine.trainer import Trainer
from cnnkit.errors import ConfigError


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("text, seconds", [("15m", 900), ("90s", 90), ("1.5h", 5400), ("1h30m", 5400),
                                           ("2m 30s", 150)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("value, words", [(15, "has no unit"), ("15 minutes", "is not a duration"),
                                          ("0s", "longer than 0"), ("fast", "is not a duration")])
def test_bad_budgets_say_what_to_write(value, words):
    with pytest.raises(ConfigError, match=words) as error:
        make_config(overrides={"budget": value})
    assert "budget=" in str(error.value)


def test_planner_fills_the_budget_with_whole_epochs_then_a_partial_one():
    clock = FakeClock()
    planner = BudgetPlanner(1000.0, steps_per_epoch=100, val_batches_ratio=0.2, clock=clock, initial_total=1000)
    planner.start()
    assert planner.replan(0, 0) == 1000  # nothing measured yet: the config's epochs
    clock.now = 10.0
    planner.observe_steps(10, 10.0)  # 1 s a step
    planner.observe_validation(20.0)
    planner.observe_save(2.0)
    total = planner.replan(10, 0)
    # 990 s left minus the margin: epochs cost 100 + 22 s; 8 whole epochs (the first with 90 steps left) = 968 s
    # would leave no room for the last validation's 22 s of a 9th, so the 9th is partial.
    remaining = 1000 * (1 - MARGIN_FRACTION) - 10
    whole = 90 + 100 * 6
    used = whole + 7 * 22
    partial = int((remaining - used - 22) // 1)
    assert total == 10 + whole + min(100, partial)
    assert planner.planned_epochs() == -(-total // 100)


def test_a_busier_machine_shortens_the_plan():
    clock = FakeClock()
    planner = BudgetPlanner(600.0, steps_per_epoch=50, clock=clock, validates=False)
    planner.start()
    planner.observe_steps(10, 10.0)
    clock.now = 10
    fast = planner.replan(10, 0)
    planner.observe_steps(10, 30.0)  # now 3 s a step: the average moves halfway (2 s)
    clock.now = 40
    slow = planner.replan(20, 0)
    assert slow < fast
    assert slow == 20 + int((600 * (1 - MARGIN_FRACTION) - 40) // 2.0)


def test_never_zero_steps():
    clock = FakeClock()
    planner = BudgetPlanner(1.0, steps_per_epoch=10, clock=clock)
    planner.start()
    planner.observe_steps(1, 50.0)
    clock.now = 50.0
    assert planner.replan(0, 0) == 1


STEP, VAL_BATCH = 0.5, 0.1


def _trainer(tmp_path, budget: str, clock: FakeClock, **overrides):
    from cnnkit.data import TensorLoader
    from cnnkit.registry import create_model
    from cnnkit.tasks.classification import ClassificationTask

    class TimedTask(ClassificationTask):
        def training_step(self, model, images, targets):
            clock.now += STEP
            return super().training_step(model, images, targets)

        def evaluation_step(self, model, images, targets):
            clock.now += VAL_BATCH
            return super().evaluation_step(model, images, targets)

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 255, (160, 1, 8, 8), generator=generator, dtype=torch.uint8)
    labels = torch.arange(160) % 2
    values = dict(epochs=3, batch_size=8, lr=0.05, precision="fp32", channels_last=False, progress=False,
                  report=False, budget=budget)
    config = TrainConfig(**{**values, **overrides})
    options = dict(mean=[0.5], std=[0.3], augment=None, seed=0, channels_last=False, device=torch.device("cpu"))
    train = TensorLoader(images[:128], labels[:128], batch_size=8, shuffle=True, drop_last=True, **options)
    val = TensorLoader(images[128:], labels[128:], batch_size=8, shuffle=False, drop_last=False, **options)
    torch.manual_seed(0)
    task = TimedTask(create_model("simple_cnn", num_classes=2, in_chans=1, input_size=8), ["a", "b"])
    trainer = Trainer(config, task, train, val, tmp_path, {"task": "classify"}, torch.device("cpu"))
    trainer.budget.clock = clock
    return trainer


def test_training_ends_inside_the_budget_and_uses_95_percent_of_it(tmp_path):
    """16 steps an epoch at 0.5 s, 4 validation batches at 0.1 s: 62 s is 7 epochs (8.4 s each) and part of an 8th."""
    clock = FakeClock()
    trainer = _trainer(tmp_path, "62s", clock)
    trainer.fit()
    assert 0.95 * 62 <= clock.now <= 62, clock.now
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == trainer.budget.planned_epochs() > 3  # the config's epochs=3 did not limit it
    assert trainer.state.global_step == trainer.budget.total_steps
    assert trainer.state.global_step % trainer.steps_per_epoch != 0  # a partial last epoch
    assert "val_accuracy" in lines[-1]  # the last (partial) epoch is validated
    # The one-cycle schedule was planned to end where the run ended: the last LR is near the bottom.
    assert trainer.optimizer.param_groups[0]["lr"] < 0.05 * 0.1


def test_a_tiny_budget_still_takes_a_step(tmp_path):
    clock = FakeClock()
    trainer = _trainer(tmp_path, "1s", clock)
    trainer.fit()
    assert 1 <= trainer.state.global_step < trainer.steps_per_epoch
    assert (tmp_path / "best.safetensors").is_file()


def test_a_resumed_run_spends_only_what_is_left(tmp_path):
    clock = FakeClock()
    trainer = _trainer(tmp_path, "60s", clock)
    trainer.fit(stop_after_epoch=2)
    spent = clock.now
    assert trainer.state.train_seconds == pytest.approx(spent)
    clock2 = FakeClock()
    resumed = _trainer(tmp_path, "60s", clock2)
    resumed.resume(tmp_path / "last.safetensors")
    resumed.fit()
    assert 0.95 * 60 <= spent + clock2.now <= 60, (spent, clock2.now)
