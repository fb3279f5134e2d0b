"""TensorBoard event files for `logger=tensorboard`: every number of metrics.jsonl per epoch, the config as
hparams, and (from the report) its pictures. The tensorboard package is an optional extra, imported lazily."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cnnkit.config import TrainConfig
from cnnkit.errors import ConfigError


def tensorboard_writer(log_dir: Path):
    """A torch.utils.tensorboard SummaryWriter writing event files to `log_dir`.

    Raises:
        ConfigError: The tensorboard package (an optional extra) is not installed.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("logger=tensorboard needs the tensorboard package: pip install 'cnnkit[tensorboard]' "
                          "(or leave logger=none; metrics.jsonl is written either way)") from None
    return SummaryWriter(log_dir=str(log_dir))


def log_scalars(writer, metrics: dict[str, Any]) -> None:
    """Every number of an epoch's metrics.jsonl line as a scalar at step = epoch (finite values only)."""
    for key, value in metrics.items():
        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            writer.add_scalar(key, value, metrics["epoch"])
    writer.flush()


def log_hparams(writer, config: TrainConfig, best: dict[str, Any]) -> None:
    """The config as hparams, with the best epoch's numbers (as best/<name>) as their metrics."""
    hparams = {key: value if isinstance(value, (int, float, str, bool)) else str(value)
               for key, value in config.to_dict().items()}
    results = {f"best/{key}": value for key, value in best.items()
               if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}
    writer.add_hparams(hparams, results, run_name=".")
