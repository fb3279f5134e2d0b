"""The preprocessing a model was trained with, stored in its checkpoint and applied again at predict time.

Storing it (channels, size, mean, std) with the weights makes the guide's pitfall "incorrect
preprocessing at test time" impossible: `cnnkit predict` reads it from the run, never from flags.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy
import torch
from PIL import Image

from cnnkit.errors import DataError


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become model inputs: decode to `channels`, resize to `image_size`, normalize.

    Attributes:
        channels: 1 (grayscale) or 3 (RGB).
        image_size: (height, width) the model sees.
        mean: Per-channel mean in [0, 1] units, from the training split.
        std: Per-channel standard deviation in [0, 1] units, from the training split.
    """

    channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "image_size": list(self.image_size), "mean": list(self.mean), "std": list(self.std),
                "resize": "bilinear, antialiased", "alpha": "composited onto black", "value_range": "uint8 / 255"}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        return cls(int(values["channels"]), tuple(values["image_size"]), tuple(values["mean"]), tuple(values["std"]))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> float32 normalized, exactly as the training loader does."""
        scale = torch.tensor([1 / (255 * s) for s in self.std]).view(1, -1, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(self.mean, self.std)]).view(1, -1, 1, 1)
        return images.float() * scale + shift

    def load(self, sources: Iterable[str | Path | Image.Image | numpy.ndarray | torch.Tensor]) -> torch.Tensor:
        """Decode files, PIL images, arrays or tensors into one uint8 batch (B, C, H, W) of the model's size."""
        from cnnkit.data.images import decode_image

        batch = []
        for source in sources:
            if isinstance(source, torch.Tensor):
                source = Image.fromarray(_as_hwc_uint8(source.numpy(), "tensor"))
            elif isinstance(source, numpy.ndarray):
                source = Image.fromarray(_as_hwc_uint8(source, "array"))
            batch.append(decode_image(source, channels=self.channels, size=self.image_size))
        if not batch:
            raise DataError("no images given to predict")
        return torch.stack(batch)


def _as_hwc_uint8(array: numpy.ndarray, kind: str) -> numpy.ndarray:
    """Accept (H, W), (H, W, C) or (C, H, W) arrays with C in {1, 3, 4}; uint8, or floats in [0, 1]."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3):
        raise DataError(f"cannot read a {kind} of shape {array.shape} as an image: expected (H, W), (H, W, C) or (C, H, W)")
    if array.dtype != numpy.uint8:
        if numpy.issubdtype(array.dtype, numpy.floating):
            array = numpy.clip(array * 255 + 0.5, 0, 255)
        array = array.astype(numpy.uint8)
    return numpy.ascontiguousarray(array)
