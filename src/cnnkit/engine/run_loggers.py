"""Logging a run to the viewers people already use: `logger=tensorboard` or `logger=mlflow` (metrics.jsonl is
written either way).

Both get every number of each epoch's metrics.jsonl line, the config as parameters and the best epoch's
numbers at the end, and the report's pictures when the report is written. TensorBoard writes event files to
RUN_DIR/tensorboard/ (cnnkit.engine.tensorboard); MLflow logs to $MLFLOW_TRACKING_URI, or to a file store in
RUN_DIR/mlruns when it is unset (`mlflow ui --backend-store-uri RUN_DIR/mlruns`), and keeps its run's id in
RUN_DIR/mlflow-run.txt so the report adds its pictures to the same run. Both packages are optional
extras, imported only when asked for.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from cnnkit.config import TrainConfig
from cnnkit.engine.tensorboard import log_hparams, log_scalars, tensorboard_writer
from cnnkit.errors import ConfigError

MLFLOW_RUN_FILE = "mlflow-run.txt"


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


class TensorBoardLogger:
    def __init__(self, run_dir: Path):
        self.log_dir = run_dir / "tensorboard"
        self.writer = tensorboard_writer(self.log_dir)

    def log_epoch(self, metrics: dict[str, Any]) -> None:
        log_scalars(self.writer, metrics)

    def finish(self, config: TrainConfig, best: dict[str, Any]) -> None:
        log_hparams(self.writer, config, best)
        self.writer.close()


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise ConfigError("logger=mlflow needs the mlflow package: pip install 'cnnkit[mlflow]' (or leave "
                          "logger=none; metrics.jsonl is written either way)") from None
    return mlflow


def _mlflow_tracking(mlflow, run_dir: Path) -> None:
    """$MLFLOW_TRACKING_URI when set (an MLflow server, a database); else a file store in RUN_DIR/mlruns, which
    works with the light client (mlflow-skinny has no SQLite store) and which MLflow 3 allows only with its
    documented opt-out MLFLOW_ALLOW_FILE_STORE=true (set here unless the user set it)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())


class MLflowLogger:
    def __init__(self, run_dir: Path):
        self.mlflow = _mlflow()
        _mlflow_tracking(self.mlflow, run_dir)
        previous = run_dir / MLFLOW_RUN_FILE
        run_id = previous.read_text().strip() if previous.is_file() else None  # a resumed run continues its MLflow run
        self.run = self.mlflow.start_run(run_id=run_id, run_name=None if run_id else run_dir.name)
        previous.write_text(self.run.info.run_id + "\n")

    def log_epoch(self, metrics: dict[str, Any]) -> None:
        self.mlflow.log_metrics({k: v for k, v in _numbers(metrics).items() if k != "epoch"}, step=int(metrics["epoch"]))

    def finish(self, config: TrainConfig, best: dict[str, Any]) -> None:
        self.mlflow.log_params({key: str(value)[:500] for key, value in config.to_dict().items()})
        self.mlflow.log_metrics({f"best/{key}": value for key, value in _numbers(best).items()})
        self.mlflow.end_run()


LOGGERS = {"tensorboard": TensorBoardLogger, "mlflow": MLflowLogger}


def open_run_logger(kind: str, run_dir: Path):
    """The logger for config.logger (None for "none")."""
    return LOGGERS[kind](Path(run_dir)) if kind in LOGGERS else None


def log_report_pictures(kind: str, run_dir: Path, pictures: list[Path], step: int) -> str:
    """Add the report's PNGs to the run's viewer; returns a line for the report's facts."""
    run_dir = Path(run_dir)
    if kind == "tensorboard":
        import numpy
        from PIL import Image

        writer = tensorboard_writer(run_dir / "tensorboard")
        try:
            for path in pictures:
                with Image.open(path) as image:
                    writer.add_image(f"report/{path.stem}", numpy.asarray(image.convert("RGB")), step,
                                     dataformats="HWC")
        finally:
            writer.close()
        return f"{len(pictures)} pictures added to {run_dir / 'tensorboard'} (tensorboard --logdir {run_dir})"
    mlflow = _mlflow()
    _mlflow_tracking(mlflow, run_dir)
    run_file = run_dir / MLFLOW_RUN_FILE
    with mlflow.start_run(run_id=run_file.read_text().strip() if run_file.is_file() else None):
        for path in pictures:
            mlflow.log_artifact(str(path), artifact_path="report")
    return f"{len(pictures)} pictures added to the MLflow run in {mlflow.get_tracking_uri()}"
