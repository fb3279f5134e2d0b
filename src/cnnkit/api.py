"""The Python API: `train(config)`, `load(run_dir)`, and what a loaded run can do.

The CLI (cnnkit.cli) is a thin layer over these functions.

    import cnnkit
    run = cnnkit.train(epochs=3)                  # or cnnkit.train("recipe.yaml", lr=0.1)
    classifier = cnnkit.load(run.run_dir)
    classifier.predict(["shoe.png"], top_k=3)     # [[("Sneaker", 0.91), ("Sandal", 0.06), ...]]
    classifier.evaluate("test")["accuracy"]
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

import cnnkit
from cnnkit.config import TrainConfig, apply_overrides, load_yaml, make_config, save_config
from cnnkit.data import (ArrayDataset, AugmentConfig, FileSplit, FileSplits, StreamingLoader, TensorLoader,
                         compute_mean_std, fits_in_memory, load_dataset, train_val_split)
from cnnkit.data.streaming import estimate_mean_std, infer_size_and_channels, scan_dataset
from cnnkit.data.preprocess import Preprocessing
from cnnkit.engine import checkpoint as ckpt
from cnnkit.engine.distributed import DistInfo, barrier, broadcast_object, init_distributed, shutdown
from cnnkit.engine.trainer import Trainer, resolve_precision
from cnnkit.engine.transfer import (TransferSchedule, adapt_state_dict, load_pretrained_state,
                                    pretrained_preprocessing)
from cnnkit.errors import CheckpointError, ConfigError, DataError, DatasetNotFoundError
from cnnkit.registry import create_model, get_entry
from cnnkit.tasks import ClassificationTask, TaskSetup, task_module
from cnnkit.tasks.base import rebuild_model
from cnnkit.tasks.classification import predict_logits
from cnnkit.data.mixing import BatchMixer
from cnnkit.layers.checkpointing import enable_grad_checkpointing
from cnnkit.losses.classification import class_weights


@dataclass
class Run:
    """The outcome of `train`: where the run lives and its best epoch's metrics."""

    run_dir: Path
    best: dict[str, Any]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA GPU is available; use device=cpu or auto")
    return device


def versions() -> dict[str, str]:
    import torchvision

    return {"cnnkit": cnnkit.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


@dataclass
class PreparedData:
    """Train/validation/test data and the preprocessing derived from the training split.

    The splits are in-memory `ArrayDataset`s, or `FileSplit`s whose files are decoded per batch
    (`data_mode=stream`, or `auto` when the decoded images would not fit in memory).
    """

    train: ArrayDataset | FileSplit
    val: ArrayDataset | FileSplit | None
    test: ArrayDataset | FileSplit | None
    classes: list[str]
    preprocessing: Preprocessing


def prepare_data(config: TrainConfig, preprocessing: Preprocessing | None = None) -> PreparedData:
    """Load the dataset, split off validation (seeded) and compute normalization from the training split.

    Args:
        config: The run's settings (data, data_mode, val_fraction, seed, image_size, channels).
        preprocessing: Known preprocessing (from a checkpoint): skips computing the statistics.
    """
    size = (config.image_size, config.image_size) if config.image_size else None
    channels = config.channels
    if preprocessing is not None:
        channels, size = preprocessing.channels, tuple(preprocessing.image_size)
    files = _scan_files(config)
    if files is not None:
        train_indices, val_indices = train_val_split(len(files.train), config.val_fraction, config.seed,
                                                     labels=files.train.labels)
        train = files.train.subset(train_indices)
        # From a sample of file headers; the in-memory path below decides again from every image.
        sampled_channels, sampled_size = infer_size_and_channels(train, channels=channels, size=size)
        total = len(files.train) + (len(files.test) if files.test is not None else 0)
        if config.data_mode == "stream" or not fits_in_memory(total, sampled_channels, sampled_size):
            val = files.train.subset(val_indices) if len(val_indices) else None
            if preprocessing is None:
                mean, std = estimate_mean_std(train, sampled_channels, sampled_size, seed=config.seed)
                preprocessing = Preprocessing(sampled_channels, sampled_size, tuple(mean), tuple(std))
            return PreparedData(train, val, files.test, list(files.classes), preprocessing)
    splits = load_dataset(config.data, channels=channels, size=size)
    train_indices, val_indices = train_val_split(len(splits.train), config.val_fraction, config.seed,
                                                 labels=splits.train.labels)
    train = splits.train.subset(train_indices)
    val = splits.train.subset(val_indices) if len(val_indices) else None
    if preprocessing is None:
        mean, std = compute_mean_std(train.images)
        preprocessing = Preprocessing(train.channels, train.image_size, tuple(mean), tuple(std))
    return PreparedData(train, val, splits.test, list(splits.classes), preprocessing)


def _scan_files(config: TrainConfig) -> FileSplits | None:
    """The file lists of users' image data, or None where the data is in-memory only (Fashion-MNIST, IDX)."""
    if config.data_mode == "memory":
        return None
    try:
        return scan_dataset(config.data)
    except DatasetNotFoundError:
        raise
    except DataError:
        if config.data_mode == "stream":
            raise
        return None  # Fashion-MNIST / IDX files: load_dataset reads them (and reports real problems)


def make_loader(dataset: ArrayDataset | FileSplit, preprocessing: Preprocessing, config: TrainConfig,
                device: torch.device, train: bool, dist_info: DistInfo = DistInfo()):
    """A TensorLoader (in-memory data) or StreamingLoader (files) with the same interface.

    Training: shuffled, augmented, full batches, each rank its shard, batch_size / world_size per rank
    (the global batch, and the LR tuned for it, stay the same). Evaluation: every sample once, in order;
    under DDP each rank takes every world_size-th sample.
    """
    if not train and dist_info.enabled:
        dataset = dataset.subset(torch.arange(dist_info.rank, len(dataset), dist_info.world_size))
    options = dict(
        batch_size=max(1, config.batch_size // dist_info.world_size) if train else max(config.batch_size, 512),
        mean=list(preprocessing.mean), std=list(preprocessing.std), shuffle=train,
        augment=config.augment_config() if train else None,
        drop_last=train, seed=config.seed, channels_last=config.channels_last, device=device,
        rank=dist_info.rank if train else 0, world_size=dist_info.world_size if train else 1,
        oversample=train and config.sampler == "oversample")
    if isinstance(dataset, ArrayDataset):
        return TensorLoader(dataset.images, dataset.labels, **options)
    workers = config.num_workers if config.num_workers >= 0 else min(8, max(0, (os.cpu_count() or 1) - 1))
    return StreamingLoader(dataset, preprocessing.channels, tuple(preprocessing.image_size),
                           num_workers=workers, **options)


def _new_run_dir(config: TrainConfig) -> Path:
    data_name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(config.data).stem if "/" in config.data else config.data)
    model_name = Path(config.model).stem if config.model.endswith((".yaml", ".yml")) else config.model
    name = config.name or f"{model_name}-{data_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir, suffix = Path(config.out) / name, 1
    while run_dir.exists():
        run_dir, suffix = Path(config.out) / f"{name}-{suffix}", suffix + 1
    run_dir.mkdir(parents=True)
    return run_dir


def train(config: TrainConfig | dict | str | Path | None = None, *, resume: str | Path | None = None,
          stop_after_epoch: int | None = None, callbacks: Iterable[Callable] = (), **overrides) -> Run:
    """Train a model; the Python twin of `cnnkit train`.

    Args:
        config: A TrainConfig, a dict of settings, or a YAML file; None uses the defaults.
        resume: A run directory to continue from its `last` checkpoint (settings come from its
            config.yaml; `overrides` such as epochs=20 still apply).
        stop_after_epoch: Stop after this many epochs in total; the run stays resumable.
        callbacks: Called as callback(trainer, epoch_metrics) after every epoch.
        **overrides: Settings that take precedence, e.g. epochs=5, lr=0.1.

    Returns:
        A Run with the run directory and the best epoch's metrics.
    """
    if resume is not None:
        resume = Path(resume)
        if not (resume / "last.safetensors").is_file():
            raise CheckpointError(f"cannot resume from {resume}: no last.safetensors there")
        values = apply_overrides({}, load_yaml(resume / "config.yaml"), str(resume / "config.yaml"))
        config = TrainConfig(**apply_overrides(values, overrides, "overrides"))
    elif isinstance(config, TrainConfig):
        config = TrainConfig(**apply_overrides(config.to_dict(), overrides, "overrides"))
    elif isinstance(config, dict):
        config = TrainConfig(**apply_overrides(apply_overrides({}, config, "config"), overrides, "overrides"))
    else:
        config = make_config(config, overrides)

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    device = resolve_device(config.device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if resume is None:
        get_entry(config.model)  # an unknown name (or a bad YAML spec) fails now, not after loading the data
    if config.sync_bn and device.type != "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("sync_bn=true needs CUDA devices: PyTorch's SyncBatchNorm has no CPU (gloo) "
                          "implementation; leave sync_bn=false for CPU training under torchrun")
    dist_info = init_distributed(device)
    try:
        return _train(config, device, dist_info, resume, stop_after_epoch, callbacks)
    finally:
        shutdown(dist_info)


def resolve_architecture(config: TrainConfig, num_classes: int, preprocessing: Preprocessing) -> dict[str, Any]:
    """The checkpoint's architecture record: a registered name and every argument needed to rebuild it."""
    args = {"num_classes": num_classes, "in_chans": preprocessing.channels,
            "input_size": list(preprocessing.image_size), **config.model_args}
    if config.drop_rate is not None:
        args["drop_rate"] = config.drop_rate
    if config.drop_path_rate is not None:
        args["drop_path_rate"] = config.drop_path_rate
    # create_model wraps the model in a multi-level head (cnnkit.models.multilevel)
    head = {"head_levels": config.head_levels, "head_grid": config.head_grid} if config.head_levels else {}
    from cnnkit.models.custom import check_spec_file, is_spec_file

    if is_spec_file(config.model):
        # A YAML network spec: the checkpoint stores the spec itself, so the run needs no file later.
        # Its shapes are checked now (on the meta device) so errors name the file and line.
        return {"name": "custom_cnn", "args": {**args, "spec": check_spec_file(config.model, **args), **head}}
    return {"name": config.model, "args": {**args, **head}}


def _train(config, device, dist_info, resume, stop_after_epoch, callbacks) -> Run:
    # The task module (classification, detection ...) builds the model, the data and the record;
    # the loop, checkpoints and logs below are the same for every task.
    setup = task_module(config.task).setup(config, device, dist_info, resume)
    run_dir = Path(resume) if resume else None
    if run_dir is None:
        run_dir = broadcast_object(_new_run_dir(config) if dist_info.is_main else None, dist_info)
    if dist_info.is_main:
        save_config(config, run_dir / "config.yaml")
        print(f"{setup.header} -> {run_dir}", flush=True)
    trainer = Trainer(config, setup.task, setup.train_loader, setup.val_loader, run_dir, setup.record, device,
                      dist_info, setup.callbacks + list(callbacks))
    if resume:
        trainer.resume(run_dir / "last.safetensors")
    best = trainer.fit(stop_after_epoch=stop_after_epoch)
    barrier(dist_info)
    if dist_info.is_main:
        monitored = best.get(trainer.monitor)
        shown = f"{trainer.monitor} {monitored:.4f} at epoch {best.get('epoch')}" if monitored is not None else ""
        print(f"done: best {shown}; run directory: {run_dir}", flush=True)
        if config.report and (run_dir / "best.safetensors").is_file():
            _write_report(run_dir, device)
    return Run(run_dir, best)


def _write_report(run_dir: Path, device: torch.device) -> None:
    """The run report, made last: a failure here is reported and never loses the trained run."""
    from cnnkit.inspect.report import write_report

    try:
        path = write_report(run_dir, device=str(device), max_seconds=30.0)
        print(f"report: {path}", flush=True)
    except Exception as error:  # noqa: BLE001 - the checkpoints are written; say what failed and go on
        print(f"report: not written ({type(error).__name__}: {error}); make it again with "
              f"`cnnkit report {run_dir}`", flush=True)


def setup_classification(config: TrainConfig, device: torch.device, dist_info: DistInfo,
                         resume: Path | None) -> TaskSetup:
    """The classification task's model, data and record (cnnkit.tasks.classification.setup calls this)."""
    data = prepare_data(config)
    if config.pretrained:  # inputs normalised as the pretrained network was trained (cnnkit run directories)
        data.preprocessing = pretrained_preprocessing(config.pretrained, data.preprocessing)
    if dist_info.is_main and isinstance(data.val, ArrayDataset):  # streamed data: `cnnkit data check` only
        from cnnkit.data.check import validation_overlap_warning

        warning = validation_overlap_warning(data.train, data.val)
        if warning:
            print(warning, file=sys.stderr, flush=True)
    torch.manual_seed(config.seed)  # the same initial weights for the same seed
    if resume:  # the architecture the run was built with (a YAML spec file may have changed or gone since)
        architecture = ckpt.read_record(Path(resume) / "last.safetensors")["architecture"]
    else:
        architecture = resolve_architecture(config, len(data.classes), data.preprocessing)
    model = create_model(architecture["name"], **architecture["args"])
    callbacks = []
    if config.pretrained and not resume:  # a resumed run gets its weights from last.safetensors
        state, source_classes = load_pretrained_state(config.pretrained, architecture["name"])
        report = adapt_state_dict(model, state, config.pretrained, source_classes, data.classes)
        if dist_info.is_main:
            print(report.summary(), flush=True)
    if config.pretrained:
        probe_loaders = None  # unaugmented train and val images, all of them on every rank
        if config.head_init == "probe":
            probe_loaders = tuple(make_loader(split, data.preprocessing, config, device, train=False)
                                  if split is not None else None for split in (data.train, data.val))
        schedule = TransferSchedule(model, config.finetune, config.unfreeze_every, config.head_init, probe_loaders,
                                    config.freeze_bn)
        callbacks.append(schedule)
        if dist_info.is_main:
            print(f"transfer learning: {schedule.describe()}", flush=True)
    if config.grad_checkpointing:
        enable_grad_checkpointing(model)
    weights = class_weights(data.train.labels, len(data.classes), config.class_weights, config.class_weights_beta)
    task = ClassificationTask(model, data.classes, label_smoothing=config.label_smoothing, tta=config.tta,
                              class_weights=weights, focal_gamma=config.focal_gamma if config.loss == "focal" else 0.0)
    if config.mixup or config.cutmix:
        task.mixer = BatchMixer(len(data.classes), config.mixup, config.cutmix, config.mix_probability)
    record = {"task": task.name, "architecture": architecture, "classes": data.classes,
              "preprocessing": data.preprocessing.to_dict(), "config": config.to_dict(), "versions": versions()}

    train_loader = make_loader(data.train, data.preprocessing, config, device, train=True, dist_info=dist_info)
    val_loader = None
    if data.val is not None:
        val_loader = make_loader(data.val, data.preprocessing, config, device, train=False, dist_info=dist_info)
    return TaskSetup(task, train_loader, val_loader, record, _header(config, data, model, device), callbacks)


def _header(config: TrainConfig, data: PreparedData, model: nn.Module, device) -> str:
    parameters = sum(p.numel() for p in model.parameters())
    dtype = resolve_precision(config.precision, device)
    val = len(data.val) if data.val is not None else 0
    return (f"cnnkit train: {config.model} ({parameters / 1e6:.2f}M parameters) on {config.data}: "
            f"{len(data.train)} train / {val} val images, {len(data.classes)} classes, "
            f"{'x'.join(map(str, data.preprocessing.image_size))}x{data.preprocessing.channels}; "
            f"{device}, {str(dtype).replace('torch.', '') if dtype else 'fp32'}, {config.epochs} epochs")


class Classifier:
    """A trained run loaded for inference and evaluation: `cnnkit.load(run_dir)`.

    Attributes:
        model: The network in eval mode.
        classes: Class names, in the model's output order.
        preprocessing: What images go through before the model (from the checkpoint).
        record: The checkpoint's full JSON record.
    """

    def __init__(self, model: nn.Module, record: dict[str, Any], run_dir: Path | None, device: torch.device):
        self.model, self.record, self.run_dir, self.device = model, record, run_dir, device
        self.classes: list[str] = list(record["classes"])
        self.preprocessing = Preprocessing.from_dict(record["preprocessing"])
        self.tta = bool(record.get("config", {}).get("tta", False))  # flip TTA, as the run was validated

    @torch.no_grad()
    def predict_proba(self, images) -> torch.Tensor:
        """Class probabilities (B, K) for image files, PIL images, arrays, or a uint8 (B, C, H, W) batch."""
        if isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.dim() == 4:
            batch = images
        else:
            batch = self.preprocessing.load(images if isinstance(images, (list, tuple)) else [images])
        outputs = []
        for start in range(0, len(batch), 256):
            inputs = self.preprocessing.normalize(batch[start:start + 256]).to(self.device)
            outputs.append(predict_logits(self.model, inputs, self.tta).softmax(dim=1).cpu())
        return torch.cat(outputs)

    def predict(self, images, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k (class name, probability) pairs per image, most likely first."""
        if top_k < 1:
            raise ConfigError(f"top_k must be 1 or more, got {top_k}")
        probabilities = self.predict_proba(images)
        values, indices = probabilities.topk(min(top_k, len(self.classes)), dim=1)
        return [[(self.classes[i], float(v)) for v, i in zip(row_values, row_indices)]
                for row_values, row_indices in zip(values.tolist(), indices.tolist())]

    def evaluate(self, split: str = "test") -> dict[str, Any]:
        """Accuracy, loss, balanced accuracy, per-class metrics and confusion matrix on the run's test or val split."""
        if split not in ("test", "val"):
            raise ConfigError(f"split must be 'test' or 'val', got {split!r}")
        config = TrainConfig(**apply_overrides({}, self.record["config"], "checkpoint config"))
        data = prepare_data(config, self.preprocessing)
        dataset = data.test if split == "test" else data.val
        if dataset is None:
            raise ConfigError(f"the dataset {config.data} has no {split} split (folder or CSV data without a "
                              "test/ folder); evaluate with --split val")
        loader = make_loader(dataset, self.preprocessing, config, self.device, train=False)
        task = ClassificationTask(self.model, self.classes, tta=self.tta)
        meter = task.new_meter()
        dtype = resolve_precision(config.precision, self.device)
        with torch.no_grad(), torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            for images, targets in loader:
                result = task.evaluation_step(self.model, images.to(self.device), targets.to(self.device))
                meter.update(result["outputs"], targets, result["loss"])
        return {"split": split, **meter.compute(per_class=True)}


def load(path: str | Path, device: str = "auto", checkpoint: str = "best") -> Classifier:
    """Load a trained run (a run directory, or a .safetensors checkpoint file) for predict/evaluate.

    Classification runs give a Classifier; other tasks give their module's predictor (its `load_run`).
    """
    path = Path(path)
    if path.is_dir():
        run_dir, file = path, path / f"{checkpoint}.safetensors"
    elif path.suffix == ".safetensors":
        run_dir, file = path.parent, path
    else:
        raise CheckpointError(f"{path} is neither a run directory nor a .safetensors checkpoint; "
                              "pass the directory that `cnnkit train` printed")
    tensors, record = ckpt.load_checkpoint(file)
    if record.get("task", "classify") not in ("classify", "classification"):  # older runs say "classification"
        # detection, segmentation ...: the task's own loader
        return task_module(record["task"]).load_run(run_dir, file, record, tensors, resolve_device(device))
    resolved = resolve_device(device)
    return Classifier(rebuild_model(file, record, tensors, resolved), record, run_dir, resolved)
