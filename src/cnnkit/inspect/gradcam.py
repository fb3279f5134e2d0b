"""Grad-CAM and Grad-CAM++: which parts of an image drove a class score.

    classifier = cnnkit.load(run_dir)
    inputs = classifier.preprocessing.normalize(classifier.preprocessing.load(["shoe.png"]))  # (1, C, H, W)
    heatmap, index, layer = gradcam(classifier.model, inputs)                 # (H, W) in [0, 1]
    plot_gradcam(image_uint8[0], heatmap, f"{classifier.classes[index]}", "cam.png")

The target layer (`default_layer`) is chosen per family, overridable with any module name:
- CNNs: the last nn.Conv2d whose output is still spatial (H, W > 1 for these inputs, found with one
  forward pass).
- ViT (torchvision `vit_*`, timm `vit_small_patch16_224`): the first LayerNorm of the last encoder block.
  Not the block's output: the head reads only the class token there, so the patch tokens' gradients
  would be zero; through the last attention they are not (the choice of pytorch-grad-cam too).
- Swin (torchvision `swin_*`): the last stage, whose output is (B, H, W, C), channels last.
- CoAtNet (timm MaxxVit): the last stage, (B, C, H, W) like a CNN's.
Token outputs (B, N, C) are reshaped to the (h, w) grid of the input's aspect ratio after dropping the
class (and register) tokens: the model says how many (timm's `num_prefix_tokens`, torchvision's class
token); for other models a leading class token is dropped when N - 1 tokens make the grid and N do not.

Written by hand with a forward hook and `torch.autograd.grad` (no extra dependency).
Grad-CAM++ follows Chattopadhay et al. (2018) with the usual exp approximation:
alpha = g^2 / (2 g^2 + sum(A) g^3), weights = sum(alpha * relu(g)).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.errors import ConfigError, ModelError
from cnnkit.inspect.visualize import conv_layers

METHODS = ("gradcam", "gradcam++")
OVERLAY_ALPHA = 0.45


def resolve_class(spec: str | int | None, classes: list[str]) -> int | None:
    """A class name or index (also as a string, e.g. "3") -> index; None stays None (the predicted class)."""
    if spec is None or isinstance(spec, int):
        if spec is not None and not 0 <= spec < len(classes):
            raise ConfigError(f"class index {spec} out of range 0..{len(classes) - 1}; classes: {', '.join(classes)}")
        return spec
    if spec in classes:
        return classes.index(spec)
    if spec.lstrip("-").isdigit():
        return resolve_class(int(spec), classes)
    raise ConfigError(f"unknown class {spec!r}; classes: {', '.join(classes)} (or an index 0..{len(classes) - 1})")


def _instance_of(model: nn.Module, module_name: str, class_name: str) -> bool:
    """isinstance(model, module_name.class_name), without importing the module (not imported: not an instance)."""
    module = sys.modules.get(module_name)
    return module is not None and isinstance(model, getattr(module, class_name, ()))


def _last_child(container: nn.Module) -> str:
    return list(container.named_children())[-1][0]


def _transformer_layer(model: nn.Module) -> str | None:
    """The target layer of the transformer families (see the module docstring); None for other models."""
    if _instance_of(model, "torchvision.models.vision_transformer", "VisionTransformer"):
        return f"encoder.layers.{_last_child(model.encoder.layers)}.ln_1"
    if _instance_of(model, "timm.models.vision_transformer", "VisionTransformer"):
        return f"blocks.{len(model.blocks) - 1}.norm1"
    if _instance_of(model, "torchvision.models.swin_transformer", "SwinTransformer"):
        return f"features.{_last_child(model.features)}"
    if _instance_of(model, "timm.models.maxxvit", "MaxxVit"):
        return f"stages.{len(model.stages) - 1}"
    return None


def _prefix_tokens(model: nn.Module) -> int | None:
    """How many tokens before the patch tokens (class, register tokens), when the model says; else None."""
    if _instance_of(model, "torchvision.models.vision_transformer", "VisionTransformer"):
        return 1
    count = getattr(model, "num_prefix_tokens", None)
    return int(count) if isinstance(count, int) else None


def _channels_last(model: nn.Module, layer: str) -> bool:
    """Whether `layer` outputs (B, H, W, C): torchvision's Swin keeps its features channels last."""
    if not _instance_of(model, "torchvision.models.swin_transformer", "SwinTransformer"):
        return False
    module = dict(model.named_modules())[layer]
    return (layer == "norm" or layer.split(".")[0] == "features") and not isinstance(module, nn.Conv2d)


def default_layer(model: nn.Module, inputs: torch.Tensor) -> str:
    """The family's target layer for a transformer; else the last nn.Conv2d whose output for `inputs` has H, W > 1."""
    chosen = _transformer_layer(model)
    if chosen is not None:
        return chosen
    layers = conv_layers(model)
    if not layers:
        raise ModelError(f"{type(model).__name__} has no Conv2d layer; pass a layer name")
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [module.register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape)))
               for name, module in layers]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    spatial = [name for name, _ in layers if name in shapes and shapes[name][-1] > 1 and shapes[name][-2] > 1]
    if not spatial:
        raise ModelError(f"no conv layer of {type(model).__name__} keeps a spatial output (H, W > 1) at input "
                         f"size {tuple(inputs.shape[-2:])}; pass a layer name")
    return spatial[-1]


def _token_grid(count: int, input_size: tuple[int, int]) -> tuple[int, int] | None:
    """(h, w) with h * w == count and h / w == H / W (the patch grid of an H x W input), or None."""
    height, width = input_size
    rows = round(math.sqrt(count * height / width))
    if rows > 0 and count % rows == 0 and rows * width == (count // rows) * height:
        return rows, count // rows
    return None


def _to_grid(tensor: torch.Tensor, layer: str, input_size: tuple[int, int], prefix: int | None = None,
             channels_last: bool = False) -> torch.Tensor:
    """A layer's output as (B, C, h, w): NCHW as is, NHWC permuted, (B, N, C) tokens without prefix tokens reshaped."""
    if tensor.dim() == 4:
        return tensor.permute(0, 3, 1, 2) if channels_last else tensor  # (B, H, W, C) -> (B, C, H, W)
    if tensor.dim() == 3:
        count = tensor.shape[1]
        for skip in (prefix,) if prefix is not None else (0, 1):
            grid = _token_grid(count - skip, input_size)
            if grid is not None and grid[0] * grid[1] > 1:
                tokens = tensor[:, skip:]  # (B, N, C) -> (B, h * w, C)
                return tokens.transpose(1, 2).reshape(tensor.shape[0], tensor.shape[2], *grid)
        raise ModelError(f"layer {layer} outputs {count} tokens, which do not make a grid of the input's shape "
                         f"{input_size[0]}x{input_size[1]}; pass another layer")
    raise ModelError(f"layer {layer} outputs shape {tuple(tensor.shape)}; need (B, C, H, W) or (B, N, C) tokens")


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name`; ModelError listing the conv layers when there is none."""
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        available = ", ".join(layer for layer, _ in conv_layers(model)) or "none"
        raise ModelError(f"no layer named {name!r} in {type(model).__name__}; conv layers: {available}")
    return modules[name]


def as_grid(model: nn.Module, layer: str, output: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """The output of `layer` as (B, C, h, w), whatever its layout: NCHW, Swin's NHWC, or ViT tokens."""
    if not isinstance(output, torch.Tensor):
        raise ModelError(f"layer {layer} returns {type(output).__name__}, not a tensor; pass another layer")
    return _to_grid(output, layer, input_size, _prefix_tokens(model), _channels_last(model, layer))


def gradcam(model: nn.Module, inputs: torch.Tensor, target_class: int | None = None, layer: str | None = None,
            method: str = "gradcam") -> tuple[torch.Tensor, int, str]:
    """Class activation map of one image.

    Args:
        model: A classifier returning (1, K) scores.
        inputs: (1, C, H, W) float, already normalized, on the model's device.
        target_class: Class index to explain; None: the predicted class.
        layer: Qualified module name (see `conv_layers`, or any module with a spatial or token output);
            None: `default_layer`.
        method: "gradcam" or "gradcam++".

    Returns:
        (heatmap (H, W) float on the CPU in [0, 1], class index, layer name).

    Raises:
        ConfigError: Bad method, batch size or class index.
        ModelError: No such layer, or a layer whose output cannot be made a grid.
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if inputs.dim() != 4 or inputs.shape[0] != 1:
        raise ConfigError(f"inputs must be one image (1, C, H, W), got {tuple(inputs.shape)}")
    was_training = model.training
    model.eval()
    try:
        if layer is None:
            layer = default_layer(model, inputs)
        module = find_layer(model, layer)
        captured: list[torch.Tensor] = []

        def keep(_module, _inputs, output):
            if not isinstance(output, torch.Tensor):
                raise ModelError(f"layer {layer} returns {type(output).__name__}, not a tensor; pass another layer")
            captured.append(output)
            return output.clone()  # later in-place ops (ReLU(inplace=True)) must not change the captured tensor

        handle = module.register_forward_hook(keep)
        try:
            with torch.enable_grad(), torch.autocast(inputs.device.type, enabled=False):
                scores = model(inputs.detach().float().requires_grad_(True))
                if target_class is None:
                    target_class = int(scores[0].argmax())
                elif not 0 <= target_class < scores.shape[1]:
                    raise ConfigError(f"class index {target_class} out of range 0..{scores.shape[1] - 1}")
                (gradients,) = torch.autograd.grad(scores[0, target_class], captured[0])
        finally:
            handle.remove()
    finally:
        model.train(was_training)
    activations = as_grid(model, layer, captured[0].detach().float(), tuple(inputs.shape[-2:]))
    gradients = as_grid(model, layer, gradients.float(), tuple(inputs.shape[-2:]))
    if method == "gradcam":
        weights = gradients.mean(dim=(2, 3), keepdim=True)
    else:
        g2, g3 = gradients.pow(2), gradients.pow(3)
        denominator = 2 * g2 + activations.sum(dim=(2, 3), keepdim=True) * g3
        alpha = g2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        weights = (alpha * gradients.clamp_min(0)).sum(dim=(2, 3), keepdim=True)
    cam = (weights * activations).sum(dim=1, keepdim=True).clamp_min(0)  # (1, 1, h, w)
    cam = F.interpolate(cam, size=tuple(inputs.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
    low, high = cam.min(), cam.max()
    cam = (cam - low) / (high - low) if high > low else torch.zeros_like(cam)
    return cam.clamp(0, 1).cpu(), int(target_class), layer


def plot_gradcam(image: torch.Tensor, heatmap: torch.Tensor, title: str, path: str | Path) -> Path:
    """Draw `image` (C, H, W) uint8, 1 or 3 channels, with the jet-coloured (H, W) heatmap over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    picture = image.detach().cpu()
    figure, axis = plt.subplots(figsize=(4, 4.3))
    if picture.shape[0] == 1:
        axis.imshow(picture[0].numpy(), cmap="gray", vmin=0, vmax=255)
    else:
        axis.imshow(picture[:3].permute(1, 2, 0).numpy())
    axis.imshow(heatmap.numpy(), cmap="jet", alpha=OVERLAY_ALPHA, vmin=0.0, vmax=1.0, interpolation="bilinear")
    axis.axis("off")
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
