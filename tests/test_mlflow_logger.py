"""logger=mlflow: what the run sends to MLflow, checked with a stand-in `mlflow` module (the real client is an
optional extra, cnnkit[mlflow], not installed for the tests)."""

from __future__ import annotations

import sys
import types

import pytest

from cnnkit.config import TrainConfig
from cnnkit.engine.run_loggers import MLFLOW_RUN_FILE, log_report_pictures, open_run_logger
from cnnkit.errors import ConfigError


@pytest.fixture
def fake_mlflow(monkeypatch):
    calls = []
    module = types.ModuleType("mlflow")

    class Run:
        def __init__(self, run_id):
            self.info = types.SimpleNamespace(run_id=run_id)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            calls.append(("end_run",))

    def start_run(run_id=None, run_name=None):
        calls.append(("start_run", run_id, run_name))
        return Run(run_id or "run-1")

    module.start_run = start_run
    module.set_tracking_uri = lambda uri: calls.append(("set_tracking_uri", uri))
    module.get_tracking_uri = lambda: "file:///somewhere"
    module.log_metrics = lambda metrics, step=None: calls.append(("log_metrics", metrics, step))
    module.log_params = lambda params: calls.append(("log_params", params))
    module.log_artifact = lambda path, artifact_path=None: calls.append(("log_artifact", path, artifact_path))
    module.end_run = lambda: calls.append(("end_run",))
    monkeypatch.setitem(sys.modules, "mlflow", module)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # restored after the test (the logger sets it)
    return calls


def test_epochs_config_best_and_report_pictures_reach_mlflow(fake_mlflow, tmp_path):
    logger = open_run_logger("mlflow", tmp_path)
    logger.log_epoch({"epoch": 1, "lr": 0.1, "train_loss": 0.5, "val_accuracy": 0.9, "val_loss": None})
    logger.finish(TrainConfig(epochs=3), {"epoch": 1, "val_accuracy": 0.9})
    assert fake_mlflow[0] == ("set_tracking_uri", (tmp_path / "mlruns").resolve().as_uri())
    assert ("start_run", None, tmp_path.name) in fake_mlflow
    assert ("log_metrics", {"lr": 0.1, "train_loss": 0.5, "val_accuracy": 0.9}, 1) in fake_mlflow
    params = next(call[1] for call in fake_mlflow if call[0] == "log_params")
    assert params["epochs"] == "3"
    assert ("log_metrics", {"best/epoch": 1.0, "best/val_accuracy": 0.9}, None) in fake_mlflow
    assert (tmp_path / MLFLOW_RUN_FILE).read_text().strip() == "run-1"
    picture = tmp_path / "curves.png"
    picture.write_bytes(b"png")
    log_report_pictures("mlflow", tmp_path, [picture], step=3)
    assert ("start_run", "run-1", None) in fake_mlflow and ("log_artifact", str(picture), "report") in fake_mlflow


def test_a_missing_mlflow_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow -> ImportError
    with pytest.raises(ConfigError, match=r"cnnkit\[mlflow\]"):
        open_run_logger("mlflow", tmp_path)
    assert TrainConfig(logger="mlflow").logger == "mlflow"
    with pytest.raises(ConfigError, match="logger"):
        TrainConfig(logger="wandb")
