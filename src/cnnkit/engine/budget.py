"""Training to a time budget (`budget=15m`): plan the optimizer steps that fit, and re-plan as the run goes.

Users on a CPU think in minutes, not epochs (ultralytics has `time=`). With a budget the Trainer asks this
planner how many optimizer steps the run gets; the LR schedule anneals over exactly that many, so the run
ends with its LR at the bottom and its best weights, not cut off mid-schedule.

How the plan is made (hand-written: no library plans a PyTorch loop by wall time):
- Until measured, a step is assumed slow and the plan is the config's epochs (the first steps are warm-up).
- Every `replan_every` optimizer steps, and after every epoch, the planner is told how long the recent steps,
  the last validation and the last checkpoint write took, and re-plans: whole epochs (each with its
  validation and checkpoint) while they fit, then a partial last epoch sized so that its steps, the final
  validation and the final checkpoint end `margin` before the budget. So the run uses most of its budget
  (not a whole epoch's worth less, as planning whole epochs does) and a machine that gets busier mid-run
  shortens the plan instead of overrunning.
- Step times are an exponential average of the measured windows (half weight to the newest), so one slow
  window (a checkpoint flush, another process) moves the plan only halfway.
- Under DDP every rank must stop at the same step: the Trainer averages the measurements over the ranks
  before re-planning (one all-reduce per re-plan), so every rank computes the same plan.
- The budget counts from the first training step (data loading and model building before it are reported
  separately by `cnnkit train`); a resumed run's budget is what the interrupted run left.

Never zero steps: however small the budget, the plan keeps at least one optimizer step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from cnnkit.engine.distributed import DistInfo, all_reduce_sum

# Until the first validation is measured, it is guessed as this fraction of a training epoch's time per
# batch (forward only is ~1/3 of a training step; detection's NMS and COCOeval make it more).
VALIDATION_GUESS = 0.5
# The plan ends this fraction of the budget early: the last measured rates are estimates.
MARGIN_FRACTION = 0.015


@dataclass
class BudgetPlanner:
    """How many optimizer steps fit in `seconds`, re-planned from measured step, validation and save times.

    Args:
        seconds: The budget.
        steps_per_epoch: Optimizer steps in a full epoch.
        val_batches_ratio: Validation batches / training batches (for the guess before the first validation).
        validates: Whether epochs end with a validation (a val loader exists).
        val_every: Validate after every N-th epoch (and after the last).
        initial_total: The plan before anything is measured (the config's epochs x steps per epoch).
        clock: Seconds, monotonic (a fake clock in tests).
        spent: Seconds already spent (a resumed run).
    """

    seconds: float
    steps_per_epoch: int
    val_batches_ratio: float = 0.0
    validates: bool = True
    val_every: int = 1
    initial_total: int = 1
    clock: Callable[[], float] = time.monotonic
    spent: float = 0.0
    total_steps: int = 0
    step_seconds: float | None = None
    val_seconds: float | None = None
    save_seconds: float = 0.0
    replans: int = 0
    history: list = field(default_factory=list)  # (elapsed s, step, s per step, planned total) per re-plan
    _started: float | None = field(default=None, repr=False)

    def __post_init__(self):
        self.total_steps = max(1, self.initial_total)

    @property
    def replan_every(self) -> int:
        """Optimizer steps between mid-epoch re-plans: ten per epoch."""
        return max(1, self.steps_per_epoch // 10)

    def start(self) -> None:
        self._started = self.clock()

    def elapsed(self) -> float:
        return self.spent + (self.clock() - self._started if self._started is not None else 0.0)

    def observe_steps(self, steps: int, seconds: float) -> None:
        if steps <= 0 or seconds <= 0:
            return
        rate = seconds / steps
        self.step_seconds = rate if self.step_seconds is None else 0.5 * self.step_seconds + 0.5 * rate

    def observe_validation(self, seconds: float) -> None:
        self.val_seconds = seconds

    def observe_save(self, seconds: float) -> None:
        self.save_seconds = max(self.save_seconds, seconds)

    def _validation_cost(self) -> float:
        if not self.validates:
            return 0.0
        if self.val_seconds is not None:
            return self.val_seconds
        return VALIDATION_GUESS * self.val_batches_ratio * self.steps_per_epoch * (self.step_seconds or 0.0)

    def replan(self, global_step: int, epochs_done: int, elapsed: float | None = None) -> int:
        """The new total of optimizer steps, from where the run is now (`global_step`, `epochs_done` full epochs)."""
        if self.step_seconds is None:
            return self.total_steps
        elapsed = self.elapsed() if elapsed is None else elapsed
        remaining = self.seconds * (1 - MARGIN_FRACTION) - elapsed
        validation, save = self._validation_cost(), self.save_seconds
        taken, used = 0, 0.0
        position = global_step - epochs_done * self.steps_per_epoch  # steps into the current epoch
        epoch = epochs_done
        while True:
            left_in_epoch = self.steps_per_epoch - position
            end_cost = (validation if (epoch + 1) % self.val_every == 0 else 0.0) + save
            full = left_in_epoch * self.step_seconds + end_cost
            # A full epoch is taken only if the final validation still fits after it (it may be the last).
            final_cost = validation + save if (epoch + 1) % self.val_every else 0.0
            if used + full + final_cost <= remaining:
                taken, used, position, epoch = taken + left_in_epoch, used + full, 0, epoch + 1
                continue
            # The last epoch: partial, then its validation and checkpoint.
            fit = math.floor((remaining - used - validation - save) / self.step_seconds)
            taken += max(0, min(left_in_epoch, fit))
            break
        self.total_steps = max(global_step + taken, 1)
        self.replans += 1
        self.history.append((round(elapsed, 2), global_step, round(self.step_seconds, 5), self.total_steps))
        return self.total_steps

    def schedule_length(self, step: int) -> int:
        """The length the LR schedule uses at `step`: the planned steps, or less when time runs out faster.

        The plan moves when the machine's speed does; a plan that shrinks late would end the run with the
        LR still high. So the schedule also follows the clock: at a fraction p of the usable time spent it
        is at least a fraction p through (length <= step / p), and it reaches its end when the time does.
        """
        if self.step_seconds is None or self._started is None:
            return self.total_steps
        usable = self.seconds * (1 - MARGIN_FRACTION) - self._validation_cost() - self.save_seconds
        progress = self.elapsed() / max(usable, 1e-9)
        if progress <= 0:
            return self.total_steps
        return max(1, min(self.total_steps, math.ceil(step / min(progress, 1.0))))

    def planned_epochs(self) -> int:
        return max(1, math.ceil(self.total_steps / self.steps_per_epoch))

    def summary(self) -> str:
        used = self.elapsed()
        return (f"budget: {used:.0f} s of {self.seconds:.0f} s used ({100 * used / self.seconds:.1f}%), "
                f"{self.total_steps} optimizer steps, {self.replans} plans")


def make_budget(config, steps_per_epoch: int, train_loader, val_loader) -> BudgetPlanner | None:
    """The planner of `config.budget` for these loaders, or None without a budget."""
    seconds = config.budget_seconds()
    if seconds is None:
        return None
    val_batches = len(val_loader) if val_loader is not None else 0
    return BudgetPlanner(seconds, steps_per_epoch, val_batches_ratio=val_batches / max(1, len(train_loader)),
                         validates=val_loader is not None, val_every=config.val_every,
                         initial_total=config.epochs * steps_per_epoch)


def replan_on_every_rank(budget: BudgetPlanner, global_step: int, epochs_done: int, dist: DistInfo,
                         device: torch.device) -> int:
    """Re-plan from the measured times, the same on every rank: their measurements are averaged first."""
    elapsed = budget.elapsed()
    if dist.enabled:
        measured = torch.tensor([budget.step_seconds or 0.0, budget.val_seconds or 0.0, budget.save_seconds,
                                 elapsed], dtype=torch.float64, device=device)
        measured = all_reduce_sum(measured, dist) / dist.world_size
        step, val, save, elapsed = (float(v) for v in measured)
        budget.step_seconds = step or None
        budget.val_seconds = val if budget.val_seconds is not None else None
        budget.save_seconds = save
    return budget.replan(global_step, epochs_done, elapsed)
