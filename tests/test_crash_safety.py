"""Issue 26.3: a kill at the worst moment of an epoch's commit loses nothing and leaves nothing inconsistent.

CNNKIT_KILL_BEFORE_RENAME=NAME:K (cnnkit.files) SIGKILLs `cnnkit train` just before the K-th atomic write of
NAME is renamed into place: the temporary is on disk, the old file still in place. After `--resume`, `best`
must be the epoch `last` records as best, metrics.jsonl must hold each epoch once, and no temporary remains.
"""

from __future__ import annotations

import json
import signal

import pytest

from conftest import FAST_SETTINGS, cli_env, run_cli

EPOCHS = 3
# train_loss falls every epoch on the fixture, so every epoch is a new best: the 2nd best write is epoch 2's.
SETTINGS = [*FAST_SETTINGS, "monitor=train_loss", "report=false", "progress=false"]


def record(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        return json.loads(file.metadata()["cnnkit"])


def check_consistent(run) -> None:
    last, best = record(run / "last.safetensors"), record(run / "best.safetensors")
    state = last["trainer_state"]
    assert state["epoch"] == EPOCHS
    assert best["epoch"] == state["best_epoch"], (best["epoch"], state)
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, EPOCHS + 1))
    assert best["metrics"]["train_loss"] == pytest.approx(state["best_value"])
    assert not list(run.glob(".*.tmp")), list(run.glob(".*"))


@pytest.mark.parametrize("moment", ["best.safetensors:2", "last.safetensors:2"])
def test_a_kill_during_the_commit_then_resume(image_folder, tmp_path, moment):
    environment = {**cli_env(), "CNNKIT_KILL_BEFORE_RENAME": moment}
    killed = run_cli("train", "--data", image_folder, "--epochs", EPOCHS, *SETTINGS, "--out", tmp_path,
                     "--name", "run", cwd=tmp_path, env=environment)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    run = tmp_path / "run"
    assert list(run.glob(".*.tmp"))  # the kill left the temporary of the interrupted write
    assert record(run / "last.safetensors")["trainer_state"]["epoch"] == 1  # epoch 2 never committed
    resumed = run_cli("train", "--resume", run, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "done: best train_loss" in resumed.stdout
    check_consistent(run)


def test_resume_repairs_a_best_left_behind_by_the_old_write_order(image_folder, tmp_path):
    """Before the fix `last` was written before `best`: a kill between them left best one epoch behind."""
    common = [*SETTINGS, "--out", tmp_path, "--name", "run"]
    assert run_cli("train", "--data", image_folder, "--epochs", 2, *common, cwd=tmp_path).returncode == 0
    run = tmp_path / "run"
    stale = (run / "best.safetensors").read_bytes()  # epoch 2's best
    assert run_cli("train", "--resume", run, "--epochs", EPOCHS, cwd=tmp_path).returncode == 0
    (run / "best.safetensors").write_bytes(stale)  # what the old order left after a kill in epoch 3's best write
    assert record(run / "best.safetensors")["epoch"] == 2
    repaired = run_cli("train", "--resume", run, "--epochs", EPOCHS, cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stderr
    assert "best.safetensors rewritten from epoch 3" in repaired.stdout + repaired.stderr
    assert f"train_loss" in repaired.stdout and "at epoch 3" in repaired.stdout  # not "done: best ;"
    check_consistent(run)
