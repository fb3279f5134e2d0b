"""Every task in the table is a complete slice, and each one learns: one fixed batch, a few dozen steps.

The batch comes from the task package's own setup (data reading, loader, model, loss), so these tests
go through the same path as `cnnkit train` without the CLI. One test drives the Trainer directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnkit.config import TrainConfig
from cnnkit.engine.distributed import DistInfo
from cnnkit.engine.trainer import Trainer
from cnnkit.task_table import TASKS
from cnnkit.tasks import TaskInfo, task_info

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_in_the_table_is_a_complete_slice(name):
    info = task_info(name)
    assert isinstance(info, TaskInfo) and info.name == name
    for part in ("setup", "predictor", "evaluation_text", "predict", "prediction_text"):
        assert callable(getattr(info, part)), f"{name}: TaskInfo.{part}"
    assert info.evaluation_saved


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION_MNIST_DIR}")
    from cnnkit.data.scenes import ScenesConfig, make_scenes

    root = tmp_path_factory.mktemp("slices") / "scenes"
    make_scenes(root, ScenesConfig(seed=0, train=8, val=2, test=0, size=64), progress=False)
    return root


def _overfit(config: TrainConfig, steps: int, lr: float) -> tuple[float, float]:
    """(first loss, last loss) of `steps` AdamW steps on the first training batch of the task's setup."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    setup = task_info(config.task).setup(config, device, DistInfo(), None)
    task = setup.task
    images, targets = task.to_device(*next(iter(setup.train_loader)), device)
    model = task.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = task.training_step(model, images, targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses[0], min(losses[-3:])


def test_classification_overfits_one_batch(image_folder):
    config = TrainConfig(data=str(image_folder), model="simple_cnn", batch_size=32, label_smoothing=0.0,
                         translate=0, hflip=False, precision="fp32", channels_last=False, progress=False)
    first, last = _overfit(config, steps=40, lr=3e-3)
    assert last < first / 10, (first, last)


def test_segmentation_overfits_one_batch(scenes):
    config = TrainConfig(task="segment", data=str(scenes), model="unet", image_size=32, batch_size=8, hflip=False,
                         translate=0, precision="fp32", channels_last=False, num_workers=0, progress=False)
    first, last = _overfit(config, steps=40, lr=3e-3)
    assert last < first / 4, (first, last)


def test_detection_overfits_one_batch(scenes):
    config = TrainConfig(task="detect", data=str(scenes), model="yolo_fastnet", batch_size=8, detect_augment="none",
                         precision="fp32", channels_last=False, num_workers=0, progress=False)
    first, last = _overfit(config, steps=40, lr=3e-3)
    assert last < first / 2, (first, last)


def test_instance_segmentation_overfits_one_batch(scenes):
    config = TrainConfig(task="instance", data=str(scenes), model="maskrcnn_resnet18_fpn", batch_size=4,
                         detect_augment="none", precision="fp32", channels_last=False, num_workers=0, progress=False)
    first, last = _overfit(config, steps=30, lr=1e-3)
    assert last < first / 3, (first, last)


def test_instance_segmentation_one_stage_overfits_one_batch(scenes):
    config = TrainConfig(task="instance", data=str(scenes), model="yolo_seg_fastnet", batch_size=4,
                         detect_augment="none", precision="fp32", channels_last=False, num_workers=0, progress=False)
    first, last = _overfit(config, steps=30, lr=3e-3)
    assert last < first / 2, (first, last)


def test_embedding_overfits_one_batch(image_folder):
    config = TrainConfig(task="embed", data=str(image_folder / "train"), model="simple_cnn", batch_size=32, val_fraction=0.25,
                         embed_loss="arcface", margin_scale=16.0, translate=0, hflip=False, precision="fp32",
                         channels_last=False, progress=False)
    first, last = _overfit(config, steps=40, lr=3e-3)
    assert last < first / 4, (first, last)


def test_pretrain_overfits_one_batch(image_folder):
    config = TrainConfig(task="pretrain", data=str(image_folder / "train"), model="simple_cnn", batch_size=16,
                         method="simclr", precision="fp32", channels_last=False, progress=False)
    first, last = _overfit(config, steps=30, lr=3e-3)
    # NT-Xent starts near log(2 x 16 - 1) = 3.43 (every view equally similar)
    assert last < 0.75 * first, (first, last)


def test_trainer_built_directly_trains_checkpoints_and_logs(tmp_path):
    """No CLI, no task setup: a task, two loaders and a config are all the Trainer needs."""
    from cnnkit.data import TensorLoader
    from cnnkit.registry import create_model
    from cnnkit.tasks.classification import ClassificationTask

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 4
    images = torch.randint(0, 40, (64, 1, 16, 16), generator=generator, dtype=torch.uint8)
    for label in range(4):  # each class a bright quadrant: learnable in a few epochs
        rows, columns = divmod(label, 2)
        images[labels == label, :, rows * 8:rows * 8 + 8, columns * 8:columns * 8 + 8] += 200
    config = TrainConfig(epochs=4, batch_size=16, lr=0.05, precision="fp32", channels_last=False, progress=False,
                         report=False, label_smoothing=0.0)
    options = dict(mean=[0.3], std=[0.3], augment=None, seed=0, channels_last=False, device=torch.device("cpu"))
    train_loader = TensorLoader(images[:48], labels[:48], batch_size=16, shuffle=True, drop_last=True, **options)
    val_loader = TensorLoader(images[48:], labels[48:], batch_size=64, shuffle=False, drop_last=False, **options)
    torch.manual_seed(0)
    model = create_model("simple_cnn", num_classes=4, in_chans=1, input_size=16)
    task = ClassificationTask(model, ["a", "b", "c", "d"])
    record = {"task": "classify", "architecture": {"name": "simple_cnn", "args": {}}}
    best = Trainer(config, task, train_loader, val_loader, tmp_path, record, torch.device("cpu")).fit()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4]
    assert lines[-1]["train_loss"] < lines[0]["train_loss"] / 2
    assert best["val_accuracy"] == max(line["val_accuracy"] for line in lines) and best["val_accuracy"] >= 0.75
    assert (tmp_path / "best.safetensors").is_file() and (tmp_path / "last.safetensors").is_file()
