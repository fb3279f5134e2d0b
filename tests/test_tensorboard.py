"""logger=tensorboard: a short run writes TensorBoard event files (scalars per epoch, hparams, the report's pictures)
that TensorBoard's own reader reads back; without the package the setting fails with the install command."""

from __future__ import annotations

import json
import sys

import pytest

from cnnkit.config import TrainConfig
from cnnkit.errors import ConfigError


def test_logger_setting_is_checked():
    assert TrainConfig().logger == "none"
    with pytest.raises(ConfigError, match="logger='wandb' is not one of none, tensorboard"):
        TrainConfig(logger="wandb")


def test_a_short_run_writes_event_files_that_tensorboard_reads(tmp_path, image_folder):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import cnnkit

    cnnkit.train({"data": str(image_folder), "model": "lenet5", "epochs": 2, "out": str(tmp_path), "name": "run",
                  "num_threads": 1, "batch_size": 64, "val_fraction": 0.2, "progress": False, "logger": "tensorboard"})
    run_dir = tmp_path / "run"
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0}).Reload()
    tags = events.Tags()
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    numbers = {key for key, value in lines[-1].items() if isinstance(value, (int, float)) and key != "epoch"}
    assert numbers <= set(tags["scalars"]) and {"train_loss", "val_accuracy", "lr"} <= numbers
    val_accuracy = events.Scalars("val_accuracy")
    assert [event.step for event in val_accuracy] == [1, 2]
    assert [event.value for event in val_accuracy] == pytest.approx([line["val_accuracy"] for line in lines])
    assert "report/curves" in tags["images"] and "report/confusion" in tags["images"]  # the report's pictures
    assert "tensorboard" in (run_dir / "report.html").read_text()
    hparams = EventAccumulator(str(run_dir / "tensorboard")).Reload().summary_metadata
    assert any("hparams" in str(value.plugin_data.plugin_name) for value in hparams.values())


def test_without_the_package_the_error_names_the_extra(tmp_path, monkeypatch):
    from cnnkit.engine.tensorboard import tensorboard_writer

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'cnnkit\[tensorboard\]'"):
        tensorboard_writer(tmp_path)
