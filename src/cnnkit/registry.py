"""Model registry: architecture name -> builder function.

A dict plus a decorator, as in timm. Builders are plain functions with keyword arguments
(`num_classes`, `in_chans`, ...); the registry never builds anything from strings with eval.

    @register_model(family="resnet", source="cnnkit")
    def resnet20(**kwargs):
        return CifarResNet(depth=20, **kwargs)
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch.nn as nn

from cnnkit.errors import ModelError


@dataclass(frozen=True)
class ModelEntry:
    """One registered architecture."""

    name: str
    builder: Callable[..., nn.Module]
    family: str
    source: str  # "cnnkit", "torchvision" or "timm": where the implementation comes from
    description: str = ""
    defaults: dict = field(default_factory=dict)
    task: str = "classify"  # "classify", "detect", "segment" or "instance": what the model's outputs mean


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(family: str, source: str = "cnnkit", task: str = "classify", **defaults) -> Callable:
    """Decorator that registers a model builder under its function name.

    Args:
        family: Architecture family shown by `cnnkit models` ("resnet", "lenet", ...).
        source: Where the implementation lives ("cnnkit", "torchvision", "timm").
        task: What the model is for: "classify" (logits), "detect", "segment" or "instance".
        **defaults: Keyword arguments recorded as the builder's defaults (for documentation).

    Raises:
        ModelError: If the name is already registered.
    """

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = builder.__name__
        if name in _REGISTRY:
            raise ModelError(f"model name {name!r} is registered twice ({_REGISTRY[name].builder.__module__} "
                             f"and {builder.__module__}); pick a different function name")
        doc = inspect.getdoc(builder) or ""
        _REGISTRY[name] = ModelEntry(name, builder, family, source, doc.split("\n")[0], dict(defaults), task)
        return builder

    return decorator


def _is_spec_file(name) -> bool:
    return str(name).lower().endswith((".yaml", ".yml"))


def _ensure_loaded() -> None:
    # Importing cnnkit.models runs every @register_model decorator once.
    import cnnkit.models  # noqa: F401


def list_models(family: str | None = None, task: str | None = None) -> list[str]:
    """Names of registered architectures, sorted, optionally only one family and/or one task."""
    _ensure_loaded()
    return sorted(n for n, e in _REGISTRY.items()
                  if (family is None or e.family == family) and (task is None or e.task == task))


def get_entry(name: str) -> ModelEntry:
    """The registry entry of `name`; raises ModelError with close matches when unknown.

    A name ending in .yaml/.yml is a network spec file: its entry is `custom_cnn`, and the file is read
    and checked now (a missing file, a YAML error or an unknown layer fails before any data is loaded).
    """
    _ensure_loaded()
    if _is_spec_file(name):
        from cnnkit.models.custom import load_spec

        load_spec(name)
        name = "custom_cnn"
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"unknown model {name!r}.{hint} Run `cnnkit models` to list them.")
    return _REGISTRY[name]


def create_model(name: str, head_levels: int = 0, head_grid: int = 1, **kwargs) -> nn.Module:
    """Build a registered architecture.

    Args:
        name: Registered name, e.g. "simple_cnn", "lenet5", "resnet20"; or a YAML network spec file,
            e.g. "my_net.yaml", built as `custom_cnn(spec=<the file's content>, **kwargs)`.
        head_levels: 0 keeps the model's own classifier; N > 0 replaces it by a linear head over features
            average-pooled from the backbone's last N resolution levels (cnnkit.models.multilevel; for
            feature extraction).
        head_grid: With head_levels, each level is pooled to head_grid x head_grid.
        **kwargs: Passed to the builder: `num_classes`, `in_chans`, `input_size`, `drop_rate` ...

    Returns:
        The model, in training mode, on the CPU.
    """
    if _is_spec_file(name):
        from cnnkit.models.custom import model_from_file

        builder = functools.partial(model_from_file, name)  # errors name the file and line
    else:
        builder = get_entry(name).builder
    try:
        model = builder(**kwargs)
    except TypeError as error:
        raise ModelError(f"model {name!r} does not accept these arguments {sorted(kwargs)}: {error}") from None
    if head_levels:
        from cnnkit.models.multilevel import multilevel

        model = multilevel(model, head_levels, head_grid, kwargs.get("in_chans"), kwargs.get("input_size"),
                           kwargs.get("drop_rate", 0.0))
    return model
