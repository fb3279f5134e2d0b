"""Resuming a run: stop after epoch 2 and resume gives bit-identical weights to an uninterrupted run.

The trainer's contract (engine/trainer.py): batch order, augmentation and dropout of epoch e depend
only on (seed, e, rank) and the LR only on the optimizer step, so on the same machine and thread
count an interrupted and resumed run ends with exactly the tensors of an uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import cnnkit
from cnnkit.cli import main
from conftest import run_cli

STEPS_PER_EPOCH = 320 // 64  # 320 training images, batch 64, drop_last


def settings(image_folder: Path, out: Path, **changes) -> dict:
    values = {"data": str(image_folder), "model": "fastnet", "epochs": 4, "batch_size": 64, "lr": 0.05,
              "val_fraction": 0.2, "num_threads": 1, "progress": False, "out": str(out)}
    return {**values, **changes}


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def deterministic(lines: list[dict]) -> list[dict]:
    """Metric lines without the wall-clock measurements."""
    return [{k: v for k, v in line.items() if k not in ("epoch_seconds", "train_images_per_second")} for line in lines]


def assert_same_tensors(first: Path, second: Path) -> None:
    a, b = load_file(str(first)), load_file(str(second))
    assert sorted(a) == sorted(b)
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:5]}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, image_folder) -> dict[float, Path]:
    """4-epoch runs without interruption, by EMA decay (trained on first use)."""
    out, runs = tmp_path_factory.mktemp("uninterrupted"), {}

    def get(ema_decay: float) -> Path:
        if ema_decay not in runs:
            runs[ema_decay] = cnnkit.train(settings(image_folder, out, ema_decay=ema_decay), name=f"ema{ema_decay}").run_dir
        return runs[ema_decay]

    return get


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_stop_and_resume_matches_an_uninterrupted_run(uninterrupted, image_folder, tmp_path, ema_decay):
    full = uninterrupted(ema_decay)
    interrupted = cnnkit.train(settings(image_folder, tmp_path, ema_decay=ema_decay), name="split", stop_after_epoch=2)
    run_dir = interrupted.run_dir
    assert run_dir == tmp_path / "split"
    assert len(metrics(run_dir)) == 2
    assert json.loads((run_dir / "last.json").read_text())["trainer_state"]["epoch"] == 2

    resumed = cnnkit.train(resume=run_dir)
    assert resumed.run_dir == run_dir
    assert sorted(path.name for path in tmp_path.iterdir()) == ["split"]  # no new run directory
    lines = metrics(run_dir)
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4]
    assert deterministic(lines) == deterministic(metrics(full))

    tensors = load_file(str(run_dir / "last.safetensors"))
    assert any(name.startswith("optimizer.") for name in tensors)
    assert any(name.startswith("ema.") for name in tensors) == (ema_decay > 0)
    assert_same_tensors(full / "last.safetensors", run_dir / "last.safetensors")
    assert_same_tensors(full / "best.safetensors", run_dir / "best.safetensors")
    state = json.loads((run_dir / "last.json").read_text())["trainer_state"]
    assert state == json.loads((full / "last.json").read_text())["trainer_state"]
    assert state["epoch"] == 4 and state["global_step"] == 4 * STEPS_PER_EPOCH


def test_resume_extends_a_finished_run(image_folder, tmp_path):
    run = cnnkit.train(settings(image_folder, tmp_path, epochs=2), name="short")
    assert len(metrics(run.run_dir)) == 2
    before = load_file(str(run.run_dir / "last.safetensors"))

    cnnkit.train(resume=run.run_dir, epochs=3)
    lines = metrics(run.run_dir)
    assert [line["epoch"] for line in lines] == [1, 2, 3]
    state = json.loads((run.run_dir / "last.json").read_text())["trainer_state"]
    assert state["epoch"] == 3 and state["global_step"] == 3 * STEPS_PER_EPOCH
    assert yaml.safe_load((run.run_dir / "config.yaml").read_text())["epochs"] == 3
    # The schedule stretched to 3 epochs: epoch 3 starts at a positive LR and training went on.
    assert lines[2]["lr"] > 0
    after = load_file(str(run.run_dir / "last.safetensors"))
    changed = [name for name in before if name.startswith("model.") and not torch.equal(before[name], after[name])]
    assert changed, "the third epoch did not change the weights"


def test_resume_through_the_cli(uninterrupted, image_folder, tmp_path):
    """`cnnkit train --resume RUN --epochs N` in a new process continues bit-exactly."""
    full = uninterrupted(0.0)
    run = cnnkit.train(settings(image_folder, tmp_path), name="cli", stop_after_epoch=1)
    result = run_cli("train", "--resume", run.run_dir, "--epochs", 4, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert [line["epoch"] for line in metrics(run.run_dir)] == [1, 2, 3, 4]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cli"]
    assert_same_tensors(full / "last.safetensors", run.run_dir / "last.safetensors")


def test_resume_without_a_last_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path), "--epochs", "3"]) == 2  # in-process: fails before any work
    assert capsys.readouterr().err == (f"cnnkit train: error: cannot resume from {tmp_path}: "
                                       "no last.safetensors there\n")


def test_val_every_validates_every_nth_and_the_last_epoch(image_folder, tmp_path):
    run = cnnkit.train(settings(image_folder, tmp_path, epochs=5, val_every=2), name="sparse")
    lines = metrics(run.run_dir)
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4, 5]
    assert ["val_accuracy" in line for line in lines] == [False, True, False, True, True]
    best = json.loads((run.run_dir / "best.json").read_text())
    assert best["metrics"]["epoch"] in (2, 4, 5)
