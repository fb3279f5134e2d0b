"""Activation maximization: an input optimized to excite one channel of a layer, or one class.

    classifier = cnnkit.load(run_dir)
    result = maximize(classifier.model, classifier.preprocessing, layer="stages.1.conv2", channels=[0, 1, 2])
    result.images      # (3, C, H, W) uint8: what each channel responds to most
    result.scores      # the channel's mean activation for each optimized image (result.start_scores: before)

Gradient ascent on the input, after Olah, Mordvintsev and Schubert, "Feature Visualization" (Distill, 2017).
Plain ascent makes high-frequency noise that excites a unit without looking like anything; the usual
regularizers keep the picture natural:
- jitter: each step sees the image shifted by a few random pixels, so the pattern must not rely on
  exact pixel positions ("transformation robustness");
- an L2 penalty on the input (pull towards the dataset's mean) and a total-variation penalty (pull
  towards smooth images);
- a light Gaussian blur every few steps, which removes the highest frequencies;
- pixels are kept in the range the model was trained on (0..255 before normalization).
The image lives in the normalized input space the model sees and is de-normalized for display.
The objective is the mean of one channel over the layer's spatial positions (or tokens), or one class's
logit (not its probability, which can rise by pushing other classes down). Written here, ~100 lines:
torch-lucent does this with many more options but is not a dependency.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.errors import ConfigError
from cnnkit.inspect.gradcam import as_grid, find_layer


@dataclass(frozen=True)
class Regularization:
    """How the optimization is steered towards natural-looking inputs (defaults tuned on fastnet, 28x28)."""

    steps: int = 200          # gradient-ascent steps (Adam)
    lr: float = 0.1           # Adam's step size, in normalized input units
    jitter: int = 2           # random shift of up to this many pixels per step
    l2: float = 1e-2          # weight of the mean squared input
    total_variation: float = 5e-2  # weight of the mean absolute difference of neighbouring pixels
    blur_every: int = 4       # Gaussian blur every this many steps (0: never)
    blur_sigma: float = 0.5   # the blur's standard deviation in pixels
    seed: int = 0             # for the starting noise and the jitter


@dataclass
class Maximized:
    """Optimized inputs and how strongly they excite their targets.

    Attributes:
        inputs: (N, C, H, W) float, normalized as the model sees them.
        images: (N, C, H, W) uint8, de-normalized for display.
        scores: Each target's objective (mean channel activation, or class logit) at the end.
        start_scores: The same at the starting point (low-amplitude noise around the mean image).
    """

    inputs: torch.Tensor
    images: torch.Tensor
    scores: list[float]
    start_scores: list[float]


def parse_indices(text: str, what: str = "--channels") -> list[int]:
    """'0,1,2' or '0-7' or '0-3,9' -> [0, 1, 2 ...]; ConfigError for anything else."""
    indices: list[int] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ConfigError(f"{what} takes numbers like 0,1,2 or 0-7, got {text!r}")
        indices += range(int(first), int(last or first) + 1)
    if not indices:
        raise ConfigError(f"{what} names no index: {text!r}")
    return indices


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Per image (N,): mean absolute difference between vertically and horizontally neighbouring pixels."""
    vertical = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().mean(dim=(1, 2, 3))
    horizontal = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
    return vertical + horizontal


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A 3x3 Gaussian blur of each channel (reflect padding keeps the borders unchanged in brightness)."""
    offsets = torch.tensor([-1.0, 0.0, 1.0])
    kernel = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = (kernel[:, None] * kernel[None, :]) / kernel.sum() ** 2  # (3, 3), sums to 1
    channels = images.shape[1]
    weight = kernel.to(images).expand(channels, 1, 3, 3)
    return F.conv2d(F.pad(images, (1, 1, 1, 1), mode="reflect"), weight, groups=channels)


def maximize(model: nn.Module, preprocessing, *, layer: str | None = None, channels: list[int] | None = None,
             classes: list[int] | None = None, regularization: Regularization = Regularization()) -> Maximized:
    """Optimize one input per target to excite a layer's channels, or the model's class logits.

    Args:
        model: The network; run in eval mode for this call (restored afterwards), its weights unchanged.
        preprocessing: The run's `Preprocessing` (channels, image size, mean/std).
        layer: Module name (a conv layer, or any module with a spatial or token output) whose `channels`
            to excite. Leave None to excite `classes` instead.
        channels: Channel indices of `layer`, one optimized image each.
        classes: Class indices, one optimized image each (when `layer` is None).
        regularization: Steps, step size and the regularizers (see `Regularization`).

    Returns:
        A `Maximized` with the inputs, displayable images and each target's score before and after.

    Raises:
        ConfigError: Neither or both of layer and classes, or an index out of range.
        ModelError: No layer of that name, or one whose output is not (B, C, H, W) or tokens.
    """
    if (layer is None) == (classes is None):
        raise ConfigError("give a layer (with channels) or classes, not both and not neither")
    targets = list(channels if layer is not None else classes) if (channels or classes) else []
    if not targets:
        raise ConfigError("no channel or class to maximize")
    settings = regularization
    device = next(model.parameters()).device
    mean = torch.tensor(preprocessing.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing.std, device=device).view(1, -1, 1, 1)
    low, high = (0 - mean) / std, (1 - mean) / std  # pixel values 0..1 in the normalized space
    generator = torch.Generator().manual_seed(settings.seed)
    shape = (len(targets), preprocessing.channels, *preprocessing.image_size)
    inputs = (0.1 * torch.randn(shape, generator=generator)).to(device).clamp(low, high).requires_grad_(True)
    objective = _objective(model, layer, targets, tuple(preprocessing.image_size))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            start_scores = objective(inputs).tolist()
        optimizer = torch.optim.Adam([inputs], lr=settings.lr)
        for step in range(settings.steps):
            dy, dx = torch.randint(-settings.jitter, settings.jitter + 1, (2,), generator=generator).tolist()
            scores = objective(torch.roll(inputs, shifts=(dy, dx), dims=(2, 3)))
            loss = (-scores + settings.l2 * inputs.pow(2).mean(dim=(1, 2, 3))
                    + settings.total_variation * total_variation(inputs)).sum()
            (inputs.grad,) = torch.autograd.grad(loss, [inputs])
            optimizer.step()
            with torch.no_grad():
                if settings.blur_every and (step + 1) % settings.blur_every == 0:
                    inputs.copy_(_gaussian_blur(inputs, settings.blur_sigma))
                inputs.copy_(torch.maximum(torch.minimum(inputs, high), low))
        with torch.no_grad():
            final_scores = objective(inputs).tolist()
    finally:
        model.train(was_training)
    final = inputs.detach()
    images = (final * std + mean).mul(255).round().clamp(0, 255).to(torch.uint8).cpu()
    return Maximized(final.cpu(), images, final_scores, start_scores)


def _objective(model: nn.Module, layer: str | None, targets: list[int], input_size: tuple[int, int]):
    """inputs (N, C, H, W) -> (N,) scores: image i's mean activation of channel targets[i], or logit targets[i]."""
    rows = torch.arange(len(targets))
    if layer is None:
        def class_scores(inputs: torch.Tensor) -> torch.Tensor:
            logits = model(inputs).float()
            _check_range(targets, logits.shape[1], "class", "the model has classes")
            return logits[rows, targets]
        return class_scores

    module = find_layer(model, layer)

    def channel_scores(inputs: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def keep(_module, _inputs, output):
            captured.append(output)
            # later in-place ops (ReLU(inplace=True)) must not change the captured tensor
            return output.clone() if isinstance(output, torch.Tensor) else output

        handle = module.register_forward_hook(keep)
        try:
            model(inputs)
        finally:
            handle.remove()
        grid = as_grid(model, layer, captured[0].float(), input_size)  # (N, C, h, w)
        _check_range(targets, grid.shape[1], "channel", f"layer {layer} has channels")
        return grid[rows, targets].mean(dim=(1, 2))
    return channel_scores


def _check_range(indices: list[int], count: int, what: str, owner: str) -> None:
    """ConfigError naming the first index outside 0..count-1, e.g. "channel 200 is out of range: layer x has ..."."""
    bad = [index for index in indices if not 0 <= index < count]
    if bad:
        raise ConfigError(f"{what} {bad[0]} is out of range: {owner} 0..{count - 1}")


DEFAULT_CHANNELS = 8  # channels drawn when --channels is not given


def layer_channels(model: nn.Module, layer: str, preprocessing) -> int:
    """How many channels `layer` outputs (one forward pass of a blank image)."""
    size = tuple(preprocessing.image_size)
    blank = torch.zeros(1, preprocessing.channels, *size, device=next(model.parameters()).device)
    counts: list[int] = []
    handle = find_layer(model, layer).register_forward_hook(
        lambda _m, _i, output: counts.append(as_grid(model, layer, output, size).shape[1]))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(blank)
    finally:
        handle.remove()
        model.train(was_training)
    return counts[0]


def draw_maximized(classifier, out_dir, *, layer: str | None = None, channels: str | None = None,
                   classes: str | None = None, regularization: Regularization = Regularization()):
    """`cnnkit inspect maximize`: optimize, then write one PNG grid; returns its path.

    Args:
        classifier: A loaded run (`cnnkit.load`).
        out_dir: Folder for the PNG (maximize-<layer>.png or maximize-classes.png).
        layer: Layer whose channels to excite; None to excite classes.
        channels: "0,1,2" or "0-7"; None: the first 8 channels (fewer if the layer has fewer).
        classes: Comma-separated class names or indices ("Sneaker,Bag" or "0,3").
    """
    import re
    from pathlib import Path

    from cnnkit.inspect.gradcam import resolve_class
    from cnnkit.inspect.report import plot_image_grid

    model, preprocessing = classifier.model, classifier.preprocessing
    if layer is None and classes is None:
        raise ConfigError("nothing to maximize: pass --layer NAME (and --channels) to excite a layer's channels, "
                          "or --class C to excite a class")
    if layer is not None and classes is not None:
        raise ConfigError("pass either --layer (with --channels) or --class, not both")
    if layer is not None:
        count = layer_channels(model, layer, preprocessing)
        targets = parse_indices(channels) if channels else list(range(min(count, DEFAULT_CHANNELS)))
        _check_range(targets, count, "channel", f"layer {layer} has channels")
        result = maximize(model, preprocessing, layer=layer, channels=targets, regularization=regularization)
        labels = [f"channel {index}\n{score:.2f} (start {start:.2f})"
                  for index, score, start in zip(targets, result.scores, result.start_scores)]
        title = f"inputs that excite channels of {layer} (mean activation)"
        name = f"maximize-{re.sub(r'[^A-Za-z0-9_.-]+', '_', layer)}.png"
    else:
        targets = [resolve_class(spec.strip(), classifier.classes) for spec in classes.split(",")]
        result = maximize(model, preprocessing, classes=targets, regularization=regularization)
        with torch.no_grad():
            probabilities = model(result.inputs.to(next(model.parameters()).device)).float().softmax(dim=1).cpu()
        labels = [f"{classifier.classes[index]}\nlogit {score:.1f}, p {float(probabilities[row, index]):.2f}"
                  for row, (index, score) in enumerate(zip(targets, result.scores))]
        title = "inputs that excite classes (logit; p: the model's probability for them)"
        name = "maximize-classes.png"
    return plot_image_grid(list(result.images), labels, title, Path(out_dir) / name)
