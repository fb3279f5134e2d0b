"""Fitting torchvision and timm models to cnnkit's builder contract: in_chans, small inputs, arguments.

The model zoo (alexnet.py ... nasnet.py) builds every network with the library's own constructor, with
`num_classes` passed straight to it, so the classifier is always the library's. What the libraries do not
all offer is done here, the same way for every family:

- in_chans: torchvision hard-codes 3 input channels, so the first convolution is replaced by a fresh one
  (`new_conv`) that takes `in_chans`. timm models take `in_chans` themselves.
- Small inputs (shorter side below `SMALL_INPUT` = 64 px, e.g. Fashion-MNIST's 28x28 or CIFAR's 32x32): the
  stem stops downsampling, as in the papers' own CIFAR variants (He et al. 2015, section 4.2): a stride-1
  3x3 convolution replaces a strided or large-kernel first convolution, and a max-pool right after it is
  removed. Each family's module docstring says exactly what changes. At 64 px and above the model is the
  paper's architecture; the parameter-count tests check it at 224 px.
- Pretrained RGB weights for other channel counts: `load_rgb_state_dict` sums the first convolution's RGB
  kernels for grayscale (an image replicated to 3 channels then gives the same output), via timm's
  `adapt_input_conv`. The zoo builds with random weights (weights=None); this is for weights loaded later.

Fresh convolutions are initialised He-normal (fan-out), torchvision's choice for its CNNs (vit.py keeps
torchvision's own initialisation for the ViT patch embedding).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models import adapt_input_conv

from cnnkit.errors import ModelError
from cnnkit.models._utils import check_positive, check_probability, image_size

SMALL_INPUT = 64  # shorter side in pixels below which the stem keeps full resolution
MIN_INPUT = 28  # the smallest side the zoo is tested at (Fashion-MNIST); smaller images fail in some models


def zoo_input_size(input_size: int | tuple[int, int]) -> tuple[int, int]:
    """`input_size` as (height, width), checked to be at least MIN_INPUT pixels per side.

    Raises:
        ModelError: If it is malformed or smaller than MIN_INPUT.
    """
    size = image_size(input_size)
    if min(size) < MIN_INPUT:
        raise ModelError(f"the model zoo needs images of at least {MIN_INPUT}x{MIN_INPUT} pixels, got "
                         f"input_size={input_size!r}; resize or pad the images (e.g. input_size={MIN_INPUT})")
    return size


def is_small(size: tuple[int, int]) -> bool:
    """Whether a model built for `size` should keep full resolution in its stem (shorter side < 64 px)."""
    return min(size) < SMALL_INPUT


def check_args(num_classes: int, in_chans: int, drop_rate: float | None = None,
               drop_path_rate: float | None = None) -> None:
    """Raise ModelError for arguments the libraries would reject with a bare traceback, or accept silently."""
    check_positive("num_classes", num_classes)
    check_positive("in_chans", in_chans)
    if drop_rate is not None:
        check_probability("drop_rate", drop_rate)
    if drop_path_rate is not None:
        check_probability("drop_path_rate", drop_path_rate)


def given(**kwargs) -> dict:
    """The keyword arguments that are not None: None means "the paper's value, the library's default"."""
    return {key: value for key, value in kwargs.items() if value is not None}


def new_conv(conv: nn.Conv2d, in_chans: int | None = None, kernel_size: int | None = None,
             stride: int | None = None, padding: int | tuple[int, int] | None = None) -> nn.Conv2d:
    """A fresh convolution like `conv` (output channels, bias, device, dtype) with some settings changed.

    Args:
        conv: The convolution to replace.
        in_chans: Input channels; default: conv's.
        kernel_size: Square kernel size; default: conv's.
        stride: Stride; default: conv's.
        padding: Padding, an int or (height, width); default: conv's if the kernel is unchanged, else
            kernel_size // 2 ("same").

    Returns:
        A new nn.Conv2d, He-normal (fan-out) initialised, bias zero.
    """
    if padding is None:
        padding = conv.padding if kernel_size is None else kernel_size // 2
    replacement = nn.Conv2d(
        in_chans or conv.in_channels, conv.out_channels, kernel_size or conv.kernel_size,
        stride=stride or conv.stride, padding=padding, bias=conv.bias is not None,
        device=conv.weight.device, dtype=conv.weight.dtype,
    )
    nn.init.kaiming_normal_(replacement.weight, mode="fan_out", nonlinearity="relu")
    if replacement.bias is not None:
        nn.init.zeros_(replacement.bias)
    return replacement


def adapted_stem(conv: nn.Conv2d, in_chans: int, input_size: int | tuple[int, int], **small_input_changes) -> nn.Conv2d:
    """The first convolution a zoo model needs for this input.

    Below 64 px: a fresh conv with `small_input_changes` (e.g. stride=1, kernel_size=3) and `in_chans`;
    otherwise a fresh conv for `in_chans` != 3, or `conv` itself (the library's model, unchanged).
    """
    if is_small(zoo_input_size(input_size)):
        return new_conv(conv, in_chans, **small_input_changes)
    if in_chans != 3:
        return new_conv(conv, in_chans)
    return conv


def load_rgb_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load weights trained on RGB images into `model` built for another `in_chans`.

    Every 4-d weight whose input-channel dimension is 3 in `state_dict` but differs in `model` (the first
    convolution) is adapted with timm's `adapt_input_conv`: for one channel the RGB kernels are summed, so
    a gray image gives the model exactly what the RGB model gives for that image replicated to 3
    channels; for other counts the kernels are repeated and scaled by 3 / in_chans.

    Args:
        model: The model, built with the same architecture arguments except in_chans.
        state_dict: The RGB model's state dict (e.g. pretrained weights).

    Raises:
        ModelError: If other tensors do not fit.
    """
    own = model.state_dict()
    adapted = dict(state_dict)
    for key, weight in state_dict.items():
        target = own.get(key)
        if (target is not None and weight.ndim == 4 and target.ndim == 4 and weight.shape[1] == 3
                and target.shape[1] != 3 and weight.shape[0] == target.shape[0]):
            adapted[key] = adapt_input_conv(target.shape[1], weight)  # (O, 3, k, k) -> (O, in_chans, k, k)
    try:
        model.load_state_dict(adapted)
    except RuntimeError as error:
        raise ModelError(f"the RGB weights do not fit this model beyond its input channels: "
                         f"{str(error).splitlines()[0]}") from None
