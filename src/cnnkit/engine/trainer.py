"""The Trainer: one readable loop that optimizes, evaluates, checkpoints and logs.

Read `fit` and `train_one_epoch` top to bottom: forward under autocast, loss, backward (scaled for
fp16), gradient clipping, optimizer step every `accumulate_steps` batches, schedule step, EMA update.
After every epoch: validation, a line in `metrics.jsonl`, the `best` checkpoint (weights only) when the
monitored metric improved, then the `last` checkpoint (everything needed to resume). Writing `last` is the
epoch's commit point: a kill before it leaves the previous epoch committed, and `resume` drops the
metrics lines and temporaries written after it (a `best` written after it is rewritten by the same,
deterministic epoch). A `best` left behind by runs written before this order is repaired on resume when
`last` holds its weights.

Training that does nothing or diverges is an error, not a success: the batch is fitted to the data
(`cnnkit.config.fit_batch_size`: at least MIN_STEPS_PER_EPOCH steps per epoch, said once at the start),
an epoch without a step raises, a loss that is not finite for NONFINITE_LIMIT optimizer steps in a row
stops the run (those steps are skipped, so the weights stay finite), and a model whose loss or weights
are not finite is never written as `best`. metrics.jsonl is strict JSON (a non-finite value is null).

Determinism: the batch order, augmentation and dropout of epoch `e` depend only on (seed, e, rank), and
the LR only on the optimizer step, so stopping after epoch 2 and resuming gives the same weights as an
uninterrupted run (on the same hardware and thread count).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from tqdm import tqdm

from cnnkit.config import MIN_STEPS_PER_EPOCH, TrainConfig, fit_batch_size
from cnnkit.device import configure_backends, resolve_precision
from cnnkit.engine import checkpoint as ckpt
from cnnkit.engine.budget import make_budget, replan_on_every_rank
from cnnkit.engine.distributed import DistInfo, all_reduce_sum, barrier, check_same_on_all_ranks
from cnnkit.engine.evaluate import evaluate_split
from cnnkit.engine.optim import lr_factor_function, make_optimizer
from cnnkit.engine.run_loggers import open_run_logger
from cnnkit.errors import CheckpointError, CnnkitError, ConfigError
from cnnkit.files import atomic_write_text, sweep_temporaries

# Optimizer steps in a row with a NaN/inf loss before the run stops (each is skipped, not applied).
NONFINITE_LIMIT = 3


class TrainingError(CnnkitError):
    """Training cannot make progress: no step in an epoch, or a loss that stays NaN/inf."""


@dataclass
class TrainState:
    """What the loop needs, beyond the tensors, to resume: counters and the early-stopping memory."""

    epoch: int = 0  # epochs completed
    global_step: int = 0  # optimizer steps taken
    best_value: float | None = None
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    train_seconds: float = 0.0  # time spent training so far (a time budget resumes from it)


class Trainer:
    """Trains `task.model` on batches from `train_loader`, validating on `val_loader` after every epoch.

    Args:
        config: The run's settings.
        task: A cnnkit.tasks.Task: to_device, training_step, evaluation_step, new_meter, update_meter.
        train_loader: Iterable of (images, targets) with `set_epoch(epoch)` and `len()`.
        val_loader: Same, or None to skip validation (then monitor a train_* metric).
        run_dir: Where metrics.jsonl and checkpoints go (written by rank 0 only).
        record: The checkpoint record's fixed part (architecture, classes, preprocessing ...).
        device: Where the model runs.
        dist_info: Rank and world size under torchrun.
        callbacks: Objects with `on_epoch_start(trainer, epoch)` and/or `on_epoch_end(trainer, metrics)`
            methods, or plain functions called as callback(trainer, epoch_metrics) after each epoch.
        head_parameters: Parameter names that train at the full LR, the rest at lr x backbone_lr_ratio
            (transfer learning, from the task's setup); None: one LR for all.
        find_unused_parameters: DDP: some parameters get no gradient (layers frozen by the task's setup).
    """

    def __init__(self, config: TrainConfig, task, train_loader, val_loader, run_dir: str | Path,
                 record: dict[str, Any], device: torch.device, dist_info: DistInfo = DistInfo(),
                 callbacks: list[Callable] = (), *, head_parameters: set[str] | None = None,
                 find_unused_parameters: bool = False):
        self.config, self.task, self.record = config, task, record
        self.train_loader, self.val_loader = train_loader, val_loader
        self.run_dir, self.device, self.dist = Path(run_dir), device, dist_info
        self.callbacks = list(callbacks)
        self.state = TrainState()
        # The metric that picks the best checkpoint: the config's, else the task's main validation metric.
        self.monitor = config.monitor or getattr(task, "monitor", "val_accuracy")

        configure_backends(device)  # CUDA: cuDNN autotuner and TF32; nothing on the CPU
        model = task.model.to(device)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if dist_info.enabled and config.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = task.model = model
        # Before the optimizer: the default LR scales with the (fitted) batch size.
        self.batch_note = self._fit_batch_to_data()
        self.optimizer = make_optimizer(model, config, head_parameters)
        self.steps_per_epoch = math.ceil(len(train_loader) / config.accumulate_steps)
        self.budget = make_budget(config, self.steps_per_epoch, train_loader, val_loader)
        self.lr_factor = lr_factor_function(config, self.steps_per_epoch,
                                            self.budget.schedule_length if self.budget else None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        self.ema = None
        if config.ema_decay > 0:
            from timm.utils import ModelEmaV3

            # Warm-up keeps early EMA weights close to the model (decay ramps up over the first steps).
            self.ema = ModelEmaV3(model, decay=config.ema_decay, use_warmup=True)
        self.amp_dtype = resolve_precision(config.precision, device)
        self.scaler = torch.amp.GradScaler(device.type) if self.amp_dtype == torch.float16 else None

        self.train_model = model
        if dist_info.enabled:
            ids = [device.index] if device.type == "cuda" else None
            # Layers frozen for transfer learning get no gradient: DDP must not wait for them.
            self.train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                                   find_unused_parameters=find_unused_parameters)
        if config.compile:
            self.train_model = torch.compile(self.train_model)
        # Evaluation is compiled too where compiling pays (CUDA); on the CPU it measured no gain (config.compile).
        self._compiled_eval: dict[int, nn.Module] = {}
        # logger=tensorboard|mlflow: the epochs also go to that viewer (rank 0 only; cnnkit.engine.run_loggers)
        self.run_logger = open_run_logger(config.logger, self.run_dir) if dist_info.is_main else None

    # ------------------------------------------------------------------ the loop
    def fit(self, stop_after_epoch: int | None = None) -> dict[str, Any]:
        """Train from the current state to `config.epochs` (or stop early); return the best epoch's metrics.

        Args:
            stop_after_epoch: Stop once this many epochs are complete (the run stays resumable).
        """
        config, history = self.config, []
        if config.epochs == 0:
            return self._fit_head_only()
        if self.budget is not None:
            self.budget.spent = self.state.train_seconds
            self.budget.start()
            self._print(f"budget {config.budget}: epochs and LR schedule planned from measured step times")
        epoch = self.state.epoch
        while epoch < self._epochs_to_run() and (stop_after_epoch is None or epoch < stop_after_epoch):
            started = time.perf_counter()
            metrics = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
            metrics.update(self.train_one_epoch(epoch))
            last = epoch + 1 >= self._epochs_to_run() or (
                self.budget is not None and self.state.global_step >= self.budget.total_steps)
            # val_every: validate after every N-th epoch and after the last; epochs between are not candidates
            # for the best checkpoint (and do not count towards early stopping's patience).
            validated = (epoch + 1) % config.val_every == 0 or last
            if self.val_loader is not None and validated:
                val_started = self._clock()
                metrics.update({f"val_{k}": v for k, v in self.evaluate(self.val_loader).items()})
                if self.budget is not None:
                    self.budget.observe_validation(self._clock() - val_started)
            metrics["epoch_seconds"] = time.perf_counter() - started
            self.state.epoch = epoch = epoch + 1
            if self.budget is not None:
                self.state.train_seconds = self.budget.elapsed()
            improved = self._update_best(metrics) if validated or not self.monitor.startswith("val_") else False
            save_started = self._clock()
            if self.dist.is_main:
                self._log(metrics, improved)
                if improved:
                    self.save("best", metrics)
                self.save("last")  # the commit point of this epoch (see the module docstring)
            barrier(self.dist)  # the others wait until rank 0's checkpoint is on disk (resume reads it on every rank)
            if self.budget is not None:
                self.budget.observe_save(self._clock() - save_started)
                if not last:
                    self._replan()
            history.append(metrics)
            for callback in self.callbacks:
                if hasattr(callback, "on_epoch_end"):
                    callback.on_epoch_end(self, metrics)
                elif callable(callback):
                    callback(self, metrics)
            patience = config.early_stopping_patience
            if patience and self.state.epochs_without_improvement >= patience:
                self._print(f"early stopping: {self.monitor} has not improved for {patience} epochs")
                break
        if self.budget is not None:
            self._print(self.budget.summary())
            if self.dist.is_main:  # how the plan moved: (seconds, step, seconds per step, planned steps)
                atomic_write_text(self.run_dir / "budget.json", json.dumps(
                    {"seconds": self.budget.seconds, "used": self.budget.elapsed(),
                     "plans": self.budget.history}, indent=1))
        best = next((m for m in history if m["epoch"] == self.state.best_epoch), history[-1] if history else None)
        if best is None:  # nothing left to train (a resumed, finished run): the logged best epoch
            best = self._logged_metrics(self.state.best_epoch) or {}
        if self.run_logger is not None:
            self.run_logger.finish(self.config, best)
        return best

    def _logged_metrics(self, epoch: int) -> dict[str, Any] | None:
        """The metrics.jsonl line of `epoch`, or None."""
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return None
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("epoch") == epoch:
                return entry
        return None

    def _fit_head_only(self) -> dict[str, Any]:
        """epochs=0 (feature extraction with a probe head): the epoch-start callbacks fit the head, no SGD step
        follows; the model is validated and saved as epoch 0, both `best` and `last`."""
        started = time.perf_counter()
        self.model.train()
        for callback in self.callbacks:
            if hasattr(callback, "on_epoch_start"):
                callback.on_epoch_start(self, 0)  # TransferSchedule fits the linear probe here
        if self.ema is not None:  # the EMA copy was taken before the head was fitted
            self.ema.module.load_state_dict(self.model.state_dict())
        metrics = {"epoch": 0, "lr": 0.0}
        if self.val_loader is not None:
            metrics.update({f"val_{k}": v for k, v in self.evaluate(self.val_loader).items()})
        metrics["epoch_seconds"] = time.perf_counter() - started
        improved = self._update_best(metrics) if self.monitor in metrics else False
        if self.dist.is_main:
            self._log(metrics, improved)
            if improved or self.monitor not in metrics:
                self.save("best", metrics)
            self.save("last")
        return metrics

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        config, model, task = self.config, self.train_model, self.task
        self.train_loader.set_epoch(epoch)
        # Dropout, drop-path and any other torch randomness of this epoch depend only on (seed, epoch, rank).
        torch.manual_seed(config.seed * 100_003 + epoch * 1_009 + self.dist.rank)
        self.model.train()
        for callback in self.callbacks:
            if hasattr(callback, "on_epoch_start"):
                callback.on_epoch_start(self, epoch)  # e.g. which layers train this epoch (transfer learning)
        autocast = self._autocast()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen, has_accuracy, started = 0, False, time.perf_counter()
        step_finite, nonfinite_in_a_row = True, 0
        num_batches = len(self.train_loader)
        window_started, window_steps = self._clock(), 0  # a time budget's measurement window
        bar = tqdm(total=num_batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=None if config.progress and self.dist.is_main else True,  # None: only on a terminal
                   mininterval=0.5, unit="batch")
        for index, (images, targets) in enumerate(self.train_loader):
            images, targets = task.to_device(images, targets, self.device)
            is_step = (index + 1) % config.accumulate_steps == 0 or index + 1 == num_batches
            # DDP: skip the gradient all-reduce on accumulation micro-batches.
            sync = nullcontext() if is_step or not self.dist.enabled else model.no_sync()
            with sync:
                with autocast:
                    result = task.training_step(model, images, targets)
                loss = result["loss"] / config.accumulate_steps
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            step_finite = step_finite and bool(torch.isfinite(result["loss"].detach()))
            if is_step and not step_finite and self.scaler is None:  # (GradScaler skips inf/NaN steps itself)
                self.optimizer.zero_grad(set_to_none=True)  # skip it: one bad batch must not poison the weights
                self.scheduler.step()
                self.state.global_step += 1
                nonfinite_in_a_row += 1
                if nonfinite_in_a_row >= NONFINITE_LIMIT:
                    bar.close()
                    raise TrainingError(self._divergence_message(epoch, index, nonfinite_in_a_row))
                step_finite = True
                bar.update()
                continue
            if is_step:
                nonfinite_in_a_row, step_finite = 0, True
                if self.scaler:
                    self.scaler.unscale_(self.optimizer)
                if config.grad_clip_norm:
                    nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip_norm)
                if config.grad_clip_value:
                    nn.utils.clip_grad_value_(self.model.parameters(), config.grad_clip_value)
                if self.scaler:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                self.state.global_step += 1
                if self.ema is not None:
                    self.ema.update(self.model, step=self.state.global_step)
                if self.budget is not None:
                    window_steps += 1
                    if window_steps >= self.budget.replan_every:
                        if self.device.type == "cuda":
                            torch.cuda.synchronize(self.device)  # the steps queued so far are in the window
                        self.budget.observe_steps(window_steps, self._clock() - window_started)
                        self._replan(epochs_done=epoch)
                        window_started, window_steps = self._clock(), 0
            batch_size = result["batch_size"]
            loss_sum += result["loss"].detach() * batch_size
            if "correct" in result:  # tasks with a per-image right/wrong (classification) report accuracy
                correct += result["correct"]
                has_accuracy = True
            seen += batch_size
            bar.update()
            if index % 20 == 0 and not bar.disable:  # float() waits for the GPU: only when the bar is shown
                bar.set_postfix(loss=f"{float(result['loss'].detach()):.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.3g}")
            if is_step and self.budget is not None and self.state.global_step >= self.budget.total_steps:
                break  # the budget's last (partial) epoch ends here
        bar.close()
        if self.budget is not None and window_steps:
            self.budget.observe_steps(window_steps, self._clock() - window_started)
        if seen == 0:
            raise TrainingError(
                f"epoch {epoch + 1} had no training batch ({getattr(self.train_loader, 'num_samples', 0)} training "
                "images for this process): add images, lower val_fraction, or check the dataset")
        totals = all_reduce_sum(torch.stack([loss_sum.double(), correct.double(),
                                             torch.tensor(float(seen), device=self.device, dtype=torch.float64)]),
                                self.dist)
        seconds = time.perf_counter() - started
        metrics = {"train_loss": float(totals[0] / totals[2])}
        if has_accuracy:
            metrics["train_accuracy"] = float(totals[1] / totals[2])
        metrics["train_images_per_second"] = float(totals[2]) / seconds
        return metrics

    def evaluate(self, loader, model: nn.Module | None = None, per_class: bool = False) -> dict[str, Any]:
        """Metrics of `model` (default: the EMA weights if enabled, else the model) over a loader, all ranks summed."""
        meter = evaluate_split(self.task, model or self._compiled(self.eval_model), loader, self.device, self.amp_dtype,
                               self.dist)
        return meter.compute(per_class=per_class)

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _compiled(self, model: nn.Module) -> nn.Module:
        """`model` under torch.compile when config.compile is on and the device is CUDA, else `model` itself."""
        if not (self.config.compile and self.device.type == "cuda"):
            return model
        if id(model) not in self._compiled_eval:
            self._compiled_eval[id(model)] = torch.compile(model)
        return self._compiled_eval[id(model)]

    # ------------------------------------------------------------------ time budget (cnnkit.engine.budget)
    def _clock(self) -> float:
        return self.budget.clock() if self.budget is not None else time.perf_counter()

    def _epochs_to_run(self) -> int:
        return self.budget.planned_epochs() if self.budget is not None else self.config.epochs

    def _replan(self, epochs_done: int | None = None) -> None:
        epochs_done = self.state.epoch if epochs_done is None else epochs_done
        replan_on_every_rank(self.budget, self.state.global_step, epochs_done, self.dist, self.device)
        self.config.epochs = self.budget.planned_epochs()  # "epoch k/N" in the log and the progress bar

    # ------------------------------------------------------------------ helpers
    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _fit_batch_to_data(self) -> str:
        """Cap the training batch so an epoch has at least MIN_STEPS_PER_EPOCH steps; return the note that says so.

        The loaders read `batch_size` when they count and cut batches, so setting it is enough; the config
        records the global batch (the default LR scales with it; config.yaml is written after this).
        """
        loader = self.train_loader
        per_process, samples = getattr(loader, "batch_size", None), getattr(loader, "num_samples", None)
        if not isinstance(per_process, int) or not isinstance(samples, int) or samples == 0:
            return ""
        fitted = fit_batch_size(per_process, samples)
        if fitted == per_process:
            return ""
        loader.batch_size = fitted
        world = self.dist.world_size
        requested, self.config.batch_size = self.config.batch_size, fitted * world
        if isinstance(self.record.get("config"), dict):
            self.record["config"]["batch_size"] = fitted * world
        return (f"batch_size {requested} -> {fitted * world}: {samples * world} training images, and an epoch "
                f"takes at least {MIN_STEPS_PER_EPOCH} steps (a larger batch is capped to images / "
                f"{MIN_STEPS_PER_EPOCH}; the default LR scales with it)")

    def _divergence_message(self, epoch: int, index: int, count: int) -> str:
        lr = self.optimizer.param_groups[0]["lr"]
        return (f"the training loss was NaN or infinite for {count} optimizer steps in a row (epoch {epoch + 1}, "
                f"batch {index + 1}, lr {lr:.3g}); stopped without a new best checkpoint. Usual causes: an LR too "
                "high (try lr=... a tenth of it, or `cnnkit lr-find`), no gradient clipping (grad_clip_norm=1), "
                "fp16 overflow (precision=fp32), or NaN in the data or the pretrained weights")

    def _weights_finite(self) -> bool:
        return all(bool(torch.isfinite(tensor).all()) for tensor in self.eval_model.state_dict().values()
                   if tensor.is_floating_point())

    def _update_best(self, metrics: dict[str, Any]) -> bool:
        name = self.monitor
        if name not in metrics:
            known = ", ".join(k for k in metrics if k.startswith(("train_", "val_")))
            raise ConfigError(f"monitor={name!r} is not a metric of this run; choose one of: {known}")
        value, best = metrics[name], self.state.best_value
        lower_is_better = "loss" in name
        losses_finite = all(math.isfinite(v) for k, v in metrics.items() if k.endswith("loss") and v is not None)
        if not (math.isfinite(value) and losses_finite and self._weights_finite()):
            # A model whose outputs (or weights) are NaN is never the best one.
            self.state.epochs_without_improvement += 1
            self._print(f"epoch {metrics['epoch']}: {name} or the loss is not finite; not a candidate for best")
            return False
        improved = best is None or (value < best if lower_is_better else value > best)
        if improved:
            self.state.best_value, self.state.best_epoch = value, metrics["epoch"]
            self.state.epochs_without_improvement = 0
        else:
            self.state.epochs_without_improvement += 1
        return improved

    def _print(self, text: str) -> None:
        if self.dist.is_main:
            tqdm.write(text)

    def _log(self, metrics: dict[str, Any], improved: bool) -> None:
        strict = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in metrics.items()}
        with open(self.run_dir / "metrics.jsonl", "a") as file:
            file.write(json.dumps(strict, allow_nan=False) + "\n")
        shown = [f"{k} {v:.4f}" for k, v in metrics.items()
                 if k.startswith(("train_loss", "train_acc", "val_loss", "val_acc")) and v is not None]
        mark = " *" if improved else ""
        # The LR at the epoch's start (metrics.jsonl's "lr") -> at its end (what the progress bar showed last).
        end_lr = self.optimizer.param_groups[0]["lr"]
        lr = f"{metrics['lr']:.3g}" + (f"->{end_lr:.3g}" if f"{end_lr:.3g}" != f"{metrics['lr']:.3g}" else "")
        self._print(f"epoch {metrics['epoch']}/{self.config.epochs}  " + "  ".join(shown) +
                    f"  lr {lr}  {metrics['epoch_seconds']:.1f}s{mark}")
        if self.run_logger is not None:
            self.run_logger.log_epoch(metrics)

    # ------------------------------------------------------------------ checkpoints
    def save(self, kind: str, metrics: dict[str, Any] | None = None) -> Path:
        """Write `best` (evaluation weights and record) or `last` (everything needed to resume)."""
        path = self.run_dir / f"{kind}.safetensors"
        record = {**self.record, "epoch": self.state.epoch, "monitor": self.monitor}
        if metrics is not None:
            record["metrics"] = metrics
        if kind == "best":
            ckpt.save_checkpoint(path, self.eval_model.state_dict(), record)
            return path
        tensors = ckpt.prefixed("model.", self.model.state_dict())
        optimizer_tensors, optimizer_json = ckpt.optimizer_to_tensors(self.optimizer)
        tensors.update(optimizer_tensors)
        if self.ema is not None:
            tensors.update(ckpt.prefixed("ema.", self.ema.state_dict()))
        if self.scaler is not None:
            record["grad_scaler"] = self.scaler.state_dict()
        record.update(trainer_state=asdict(self.state), optimizer=optimizer_json)
        ckpt.save_checkpoint(path, tensors, record)
        return path

    def resume(self, path: str | Path) -> None:
        """Restore model, optimizer, EMA, scaler and counters from a `last` checkpoint."""
        tensors, record = ckpt.load_checkpoint(path)
        if "trainer_state" not in record:
            raise CheckpointError(f"{path} holds weights only (a 'best' checkpoint); resume from last.safetensors")
        self.model.load_state_dict(ckpt.unprefixed("model.", tensors))
        ckpt.optimizer_from_tensors(self.optimizer, tensors, record["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt.unprefixed("ema.", tensors))
        if self.scaler is not None and "grad_scaler" in record:
            self.scaler.load_state_dict(record["grad_scaler"])
        self.state = TrainState(**record["trainer_state"])
        # Every rank reads `last` itself: on several machines the run directory must be shared (README).
        check_same_on_all_ranks(self.state.epoch, self.dist, f"the epoch of {path}")
        # The LR is a function of the step; with more epochs than before, the rest of the schedule stretches.
        self.scheduler.last_epoch = self.state.global_step
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * self.lr_factor(self.state.global_step)
        if self.dist.is_main:
            self._recover_run_dir()
        barrier(self.dist)  # rank 0 may rewrite metrics.jsonl and best: nobody goes on before it is done

    def _recover_run_dir(self) -> None:
        """Undo what a kill after the last commit point (`last`) left: temporaries, later metrics lines, a stale best."""
        for temporary in sweep_temporaries(self.run_dir):
            self._print(f"resume: removed {temporary.name}, left by an interrupted write")
        metrics_path = self.run_dir / "metrics.jsonl"
        ckpt.truncate_metrics(metrics_path, self.state.epoch)
        self._repair_best(metrics_path)

    def _repair_best(self, metrics_path: Path) -> None:
        """A best checkpoint behind the best epoch `last` records (runs killed under the old write order)."""
        best_path = self.run_dir / "best.safetensors"
        best_epoch = self.state.best_epoch
        if best_epoch == 0 or (best_path.is_file() and ckpt.read_record(best_path).get("epoch") == best_epoch):
            return
        if best_epoch != self.state.epoch:
            self._print(f"resume: best.safetensors is not epoch {best_epoch}'s and its weights are gone; "
                        "the next improvement replaces it")
            return
        self.save("best", self._logged_metrics(best_epoch))
        self._print(f"resume: best.safetensors rewritten from epoch {best_epoch} (held in last.safetensors)")
