"""What every cnnkit detector shares: the calling convention, zoo trunks, and a wrapper for torchvision's.

The detectors (faster_rcnn.py, ssd.py, yolo.py, rcnn.py) are registered with task="detect" and follow one
contract, whatever library they come from:

    model(images)            -> detections: one {"boxes" (N, 4) xyxy pixels, "scores" (N,), "labels" (N,)}
                                per image, labels 0-based (class k is line k of the dataset's classes.txt)
    model(images, targets)   -> training losses: {"name": scalar tensor, ...}; their sum is what is minimised

`images` is a float batch (B, C, H, W) with values in [0, 1], or a list of (C, H, W) tensors; `targets` is one
{"boxes", "labels"} dict per image in the same convention. Whether the model returns losses or detections is
decided by the call (targets given or not), never by train/eval mode; losses do need train mode, because
detectors sample proposals and update BatchNorm statistics only while training. Each model normalises
images itself with its `image_mean` / `image_std`, which the checkpoint's architecture record stores.

torchvision numbers classes 1..K with 0 as background; `TorchvisionDetector` adds 1 to the labels going in
and subtracts it from those coming out, so nothing outside the model ever sees that offset.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import contextmanager, nullcontext
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.errors import ModelError
from cnnkit.models._utils import check_positive, image_size

# The normalisation used when a builder is given none (torchvision's ImageNet statistics for RGB).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Zoo classifiers whose convolutional body can serve as a detection trunk (see `zoo_trunk`).
TRUNKS = ("fastnet", "fastnet_wide", "resnet18", "resnet34", "resnet50", "mobilenet_v3_large",
          "mobilenet_v3_small", "mobilenet_v2")


def normalization(in_chans: int, image_mean: Sequence[float] | None,
                  image_std: Sequence[float] | None) -> tuple[list[float], list[float]]:
    """Per-channel mean and std, checked; the defaults are ImageNet's for RGB and 0.5 / 0.25 otherwise."""
    mean = list(image_mean) if image_mean is not None else list(IMAGENET_MEAN if in_chans == 3 else [0.5] * in_chans)
    std = list(image_std) if image_std is not None else list(IMAGENET_STD if in_chans == 3 else [0.25] * in_chans)
    if len(mean) != in_chans or len(std) != in_chans or min(std) <= 0:
        raise ModelError(f"image_mean and image_std need {in_chans} values (one per channel, std > 0), "
                         f"got {mean} and {std}")
    return [float(v) for v in mean], [float(v) for v in std]


def check_detector_args(num_classes: int, in_chans: int, input_size, minimum: int = 32) -> tuple[int, int]:
    """Check the builder arguments every detector takes; returns input_size as (height, width)."""
    check_positive("num_classes", num_classes)
    check_positive("in_chans", in_chans)
    size = image_size(input_size)
    if min(size) < minimum:
        raise ModelError(f"this detector needs images of at least {minimum}x{minimum} pixels, got "
                         f"input_size={input_size!r}")
    return size


def batch_images(images: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """A (B, C, H, W) batch and each image's own (height, width); smaller images are zero-padded right/bottom
    (padding below and to the right moves no box)."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise ModelError(f"detectors take a (B, C, H, W) batch or a list of (C, H, W) images, "
                             f"got a tensor of shape {tuple(images.shape)}")
        return images, [tuple(images.shape[-2:])] * len(images)
    sizes = [tuple(image.shape[-2:]) for image in images]
    if len(set(sizes)) == 1:
        return torch.stack(list(images)), sizes
    height, width = max(s[0] for s in sizes), max(s[1] for s in sizes)
    return torch.stack([F.pad(image, (0, width - image.shape[-1], 0, height - image.shape[-2]))
                        for image in images]), sizes


@contextmanager
def eval_mode(module: nn.Module):
    """Run a block with `module` in eval mode, restoring every submodule's mode afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class DetectionModel(nn.Module, ABC):
    """Base class of cnnkit's detectors: `forward(images, targets=None)` dispatches on `targets`.

    Subclasses implement `detect(images)` and `losses(images, targets)` (see the module docstring).
    """

    num_classes: int

    def forward(self, images, targets: list[dict] | None = None):
        if targets is None:
            if self.training:  # detections from a model in training: eval behaviour (running BN statistics)
                with eval_mode(self):
                    return self.detect(images)
            return self.detect(images)
        if not self.training:
            raise ModelError(f"{type(self).__name__} computes training losses in train mode only; call model.train()")
        return self.losses(images, targets)

    @abstractmethod
    def detect(self, images) -> list[dict[str, torch.Tensor]]:
        """Detections per image: {"boxes" (N, 4) xyxy, "scores" (N,), "labels" (N,) 0-based}."""

    @abstractmethod
    def losses(self, images, targets: list[dict]) -> dict[str, torch.Tensor]:
        """Named training losses for a batch; their sum is what backpropagates."""


def _to_float(value):
    if isinstance(value, torch.Tensor):
        return value.float()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float(v) for v in value)
    if isinstance(value, dict):
        return {key: _to_float(v) for key, v in value.items()}
    return value


def float_outputs(module: nn.Module, inputs, outputs):
    """Forward hook: a head's outputs in fp32. Under bf16 autocast, torchvision decodes boxes in the dtype of
    the predicted offsets, which would round the proposals' coordinates to bf16 (steps of 0.5 px at 64-128 px).
    The head itself still runs in bf16; only its outputs (offsets with ~3 significant digits) are widened."""
    return _to_float(outputs)


class TorchvisionDetector(DetectionModel):
    """A torchvision detection model (FasterRCNN, SSD ...) under cnnkit's contract.

    torchvision's own models switch between losses and detections on `self.training` and count classes
    from 1; this wrapper dispatches on the call and keeps labels 0-based outside.

    Args:
        model: The torchvision model, built for num_classes + 1 outputs (background first).
        num_classes: Object classes (without background).
        heads: The modules whose outputs become box offsets and scores (made fp32 by `float_outputs`).
        fp32: Run in fp32 even under bf16 autocast (for models that gain nothing from bf16, or lose accuracy).
    """

    def __init__(self, model: nn.Module, num_classes: int, heads: Sequence[nn.Module] = (), fp32: bool = False):
        super().__init__()
        self.model, self.num_classes, self.fp32 = model, num_classes, fp32
        for head in heads:  # box decoding must see fp32 (see float_outputs)
            head.register_forward_hook(float_outputs)

    def _precision(self, images):
        """The model's own precision: fp32 (autocast off) for models built with fp32=True."""
        device = images.device.type if isinstance(images, torch.Tensor) else images[0].device.type
        return torch.autocast(device, enabled=False) if self.fp32 else nullcontext()

    def detect(self, images) -> list[dict[str, torch.Tensor]]:
        with self._precision(images):
            outputs = self.model(list(images))
        return [{"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"] - 1} for o in outputs]

    def losses(self, images, targets: list[dict]) -> dict[str, torch.Tensor]:
        shifted = []
        for target in targets:  # torchvision refuses boxes without area (augmentation can leave some)
            boxes = target["boxes"].reshape(-1, 4)
            keep = (boxes[:, 2:] > boxes[:, :2]).all(dim=1)
            shifted.append({"boxes": boxes[keep], "labels": target["labels"][keep] + 1})
        with self._precision(images):
            return self.model(list(images), shifted)


class Trunk(nn.Module):
    """The convolutional body of a zoo classifier cut into stages: forward returns every stage's output.

    Attributes:
        channels: Output channels of each stage.
        strides: How many input pixels one output cell of each stage spans (measured once when built).
    """

    def __init__(self, stages: list[tuple[str, nn.Module]], in_chans: int, input_size: tuple[int, int]):
        super().__init__()
        self.stages = nn.ModuleDict(stages)
        reference = next(self.parameters())
        probe = torch.zeros(1, in_chans, *input_size, device=reference.device, dtype=reference.dtype)
        with torch.no_grad(), eval_mode(self):
            outputs = self(probe)
        self.channels = [o.shape[1] for o in outputs]
        self.strides = [round(input_size[0] / o.shape[2]) for o in outputs]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for stage in self.stages.values():
            x = stage(x)
            outputs.append(x)
        return outputs


def zoo_trunk(name: str, in_chans: int, input_size: tuple[int, int]) -> Trunk:
    """The stages of zoo model `name` (built by cnnkit.create_model, so with cnnkit's input adaptations),
    without its pooling and classifier.

    Supported: fastnet (stages at strides 1, 2, 4, 8), torchvision ResNets (4, 4, 8, 16, 32 at 64 px and
    more) and MobileNets (cut before each strided block).

    Raises:
        ModelError: If `name` is not one of TRUNKS.
    """
    import torchvision.models as tvm

    from cnnkit.models.fastnet import FastNet
    from cnnkit.registry import create_model

    if name not in TRUNKS:
        raise ModelError(f"backbone={name!r} is not available for detection; choose one of {', '.join(TRUNKS)}")
    model = create_model(name, num_classes=1, in_chans=in_chans, input_size=input_size)
    if isinstance(model, FastNet):
        stages = [("stem", model.stem)] + [(f"stage{i + 1}", stage) for i, stage in enumerate(model.stages)]
    elif isinstance(model, tvm.ResNet):
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
        stages = [("stem", stem)] + [(f"layer{i}", getattr(model, f"layer{i}")) for i in range(1, 5)]
    else:  # MobileNetV2 / V3: a new stage starts at every block that halves the resolution
        stages, current = [], []
        for block in model.features:
            strided = getattr(block, "_is_cn", False) or getattr(block, "stride", 1) == 2
            if strided and current:
                stages.append((f"stage{len(stages)}", nn.Sequential(*current)))
                current = []
            current.append(block)
        stages.append((f"stage{len(stages)}", nn.Sequential(*current)))
    return Trunk(stages, in_chans, input_size)
