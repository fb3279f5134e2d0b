"""Filter and feature-map pictures: what a conv layer's kernels look like, and what it responds to.

    model = cnnkit.load(run_dir).model
    plot_filters(model, path="filters.png")                       # first conv layer's kernels
    maps = feature_maps(model, inputs)                            # inputs: (1, C, H, W) float, normalized
    plot_feature_maps(maps, "features")                           # features-<layer>.png per layer

Written here: torchvision has `make_grid` but no layer selection or titles; matplotlib draws the grids
(Agg backend, files only, no display needed).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn as nn

from cnnkit.errors import ModelError

MAX_FILTERS = 64
MAX_CHANNELS = 32


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """Every nn.Conv2d of `model` as (qualified name, module), in registration order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def _find_conv(model: nn.Module, name: str) -> nn.Conv2d:
    layers = dict(conv_layers(model))
    if name not in layers:
        available = ", ".join(layers) or "none"
        raise ModelError(f"no conv layer named {name!r} in {type(model).__name__}; conv layers: {available}")
    return layers[name]


def _normalize_each(tiles: torch.Tensor) -> torch.Tensor:
    """(N, ...) -> each tile scaled to [0, 1] by its own min and max (a flat tile becomes 0.5)."""
    flat = tiles.reshape(tiles.shape[0], -1)
    low = flat.min(dim=1).values.view(-1, *[1] * (tiles.dim() - 1))
    high = flat.max(dim=1).values.view(-1, *[1] * (tiles.dim() - 1))
    span = high - low
    return torch.where(span > 0, (tiles - low) / span.clamp_min(1e-12), torch.full_like(tiles, 0.5))


def _save_grid(tiles: torch.Tensor, title: str, path: Path, cmap: str | None) -> Path:
    """Draw (N, H, W) grayscale or (N, H, W, 3) RGB tiles in [0, 1] as a square-ish grid into `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = tiles.shape[0]
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.2 * columns + 0.4, 1.2 * rows + 0.8), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < count:
            axis.imshow(tiles[index].numpy(), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            axis.set_title(str(index), fontsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_filters(model: nn.Module, layer: str | None = None, path: str | Path = "filters.png",
                 reduce: str = "mean") -> Path:
    """Draw the kernels of one conv layer as an image grid.

    Args:
        model: Any nn.Module with at least one nn.Conv2d.
        layer: Qualified name of the conv layer (see `conv_layers`); None: the first one.
        path: The PNG file to write.
        reduce: For layers whose kernels are not RGB (in_channels != 3): "mean" over the input
            channels, or "first" input channel. RGB kernels are drawn in colour.

    Returns:
        The written path.

    Raises:
        ModelError: The model has no conv layer, or none named `layer`.
    """
    if reduce not in ("mean", "first"):
        raise ModelError(f"reduce must be 'mean' or 'first', got {reduce!r}")
    if layer is None:
        layers = conv_layers(model)
        if not layers:
            raise ModelError(f"{type(model).__name__} has no Conv2d layer to draw")
        layer, conv = layers[0]
    else:
        conv = _find_conv(model, layer)
    weight = conv.weight.detach().float().cpu()  # (C_out, C_in / groups, kH, kW)
    shape = tuple(weight.shape)
    shown = weight[:MAX_FILTERS]
    if shown.shape[1] == 3:
        tiles = _normalize_each(shown).permute(0, 2, 3, 1)  # (N, 3, kH, kW) -> (N, kH, kW, 3)
        how, cmap = "RGB", None
    else:
        tiles = shown.mean(dim=1) if reduce == "mean" else shown[:, 0]  # -> (N, kH, kW)
        tiles = _normalize_each(tiles)
        how = "mean over input channels" if reduce == "mean" else "input channel 0"
        how, cmap = (how if shown.shape[1] > 1 else "grayscale"), "gray"
    count = f"first {len(shown)} of {shape[0]}" if len(shown) < shape[0] else f"{shape[0]}"
    title = f"layer {layer}, weight {shape}\n{count} kernels, {how}, each scaled to [0, 1]"
    return _save_grid(tiles, title, Path(path), cmap)


def default_layers(model: nn.Module) -> list[str]:
    """The first, middle and last conv layers (fewer when the model has fewer)."""
    names = [name for name, _ in conv_layers(model)]
    if not names:
        raise ModelError(f"{type(model).__name__} has no Conv2d layer to show")
    return list(dict.fromkeys([names[0], names[len(names) // 2], names[-1]]))


def feature_maps(model: nn.Module, inputs: torch.Tensor, layers: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The outputs of chosen conv layers for one input, captured with forward hooks.

    Args:
        model: The model; run in eval mode for this call and restored afterwards.
        inputs: (1, C, H, W) float, preprocessed exactly as in training.
        layers: Conv layer names (see `conv_layers`); None: first, middle and last conv layers.

    Returns:
        {layer name: (C, H, W) float tensor on the CPU}, in the order of `layers`.
    """
    if inputs.dim() != 4 or inputs.shape[0] != 1:
        raise ModelError(f"feature_maps takes one image as (1, C, H, W), got shape {tuple(inputs.shape)}")
    layers = default_layers(model) if layers is None else list(layers)
    modules = {name: _find_conv(model, name) for name in layers}
    captured: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(module, args, output):
            captured[name] = output.detach()[0].float().cpu()  # (1, C, H, W) -> (C, H, W)
        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            model(inputs.to(device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: captured[name] for name in layers}


def plot_feature_maps(maps: dict[str, torch.Tensor], path_prefix: str | Path) -> list[Path]:
    """Write one PNG per layer, `<path_prefix>-<layer>.png`: a grid of up to 32 channels, each scaled to [0, 1].

    Returns:
        The written paths, in the order of `maps`.
    """
    prefix = Path(path_prefix)
    paths = []
    for name, tensor in maps.items():
        channels = tensor.shape[0]
        tiles = _normalize_each(tensor[:MAX_CHANNELS])
        shown = f"first {len(tiles)} of {channels} channels" if channels > MAX_CHANNELS else f"{channels} channels"
        title = f"layer {name}, shape {tuple(tensor.shape)}\n{shown}, each scaled to [0, 1]"
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
        paths.append(_save_grid(tiles, title, prefix.with_name(f"{prefix.name}-{safe}.png"), "viridis"))
    return paths
