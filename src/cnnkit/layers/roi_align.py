"""RoIAlign as two matrix products: the same numbers as torchvision's, a faster backward pass on CPUs.

RoIAlign (He et al. 2017, "Mask R-CNN") reads an `ph x pw` grid of bilinear samples from a feature map inside
each region of interest, averaging `sampling_ratio^2` samples per output bin. Bilinear interpolation is
separable: the value at (y, x) is sum_h sum_w wy[h] wx[w] F[h, w], where wy holds the two linear weights of y
(rows floor(y) and floor(y) + 1) and wx those of x. So one region's pooled output is

    out[c] = Wy @ F[c] @ Wx^T          Wy: (ph, H) row weights, Wx: (pw, W) column weights

two small dense matrix products, which batch over the regions of an image. torchvision's kernel loops over
samples and scatters gradients four values at a time, which on a CPU took 24 % of a Mask R-CNN training
step (profiled: ~110 ms per backward call at batch 16); as matrix products the whole operation runs on the
BLAS/oneDNN kernels and autograd derives the backward pass.

Edge rules are torchvision's (aligned=False, as `MultiScaleRoIAlign` uses): a region starts at x1 * scale and
is at least one feature pixel wide; a sample more than one pixel outside the map contributes zero; a sample
just outside is clamped to the border. `tests/test_detection_models.py` checks the outputs and gradients
against `torchvision.ops.roi_align`.

`MatmulRoIAlign` replaces `torchvision.ops.MultiScaleRoIAlign` where the heads pool one pyramid level with a
fixed sampling ratio on the CPU (cnnkit's R-CNN family on small images); anything else, and every non-CPU
device, goes to torchvision's code: on CUDA its kernel is the fast, well-tested one, and under autocast it
computes in fp32. On the CPU under bf16 autocast the two products here run in bf16 (weights included), as the
measured CPU figures were trained; fp32 runs match torchvision's numbers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign

__all__ = ["MatmulRoIAlign", "axis_weights", "matmul_roi_align", "uses_matmul"]


def axis_weights(start: Tensor, length: Tensor, bins: int, sampling_ratio: int, size: int) -> Tensor:
    """Interpolation weights (R, bins, size) along one axis: row i averages bin i's samples' linear weights.

    Args:
        start, length: (R,) each region's start and length in feature pixels (length already at least 1).
        bins: Output bins along this axis.
        sampling_ratio: Samples per bin along this axis.
        size: The feature map's extent along this axis.
    """
    step = length / bins  # (R,)
    offsets = (torch.arange(bins * sampling_ratio, device=start.device, dtype=start.dtype) + 0.5) / sampling_ratio
    position = start[:, None] + offsets[None] * step[:, None]  # (R, bins * g): sample positions
    inside = (position >= -1.0) & (position <= size)  # torchvision: farther out than one pixel counts zero
    position = position.clamp(0, size - 1)
    low = position.floor()
    fraction = position - low
    low = low.long()
    high = (low + 1).clamp(max=size - 1)
    weights = torch.zeros(*position.shape, size, device=start.device, dtype=start.dtype)  # (R, bins * g, size)
    weights.scatter_add_(2, low[..., None], ((1 - fraction) * inside)[..., None])
    weights.scatter_add_(2, high[..., None], (fraction * inside)[..., None])
    return weights.view(len(start), bins, sampling_ratio, size).mean(dim=2)


def matmul_roi_align(features: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
                     sampling_ratio: int) -> Tensor:
    """torchvision.ops.roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned=False).

    Args:
        features: (B, C, H, W) feature map.
        rois: (R, 5) rows of (batch index, x1, y1, x2, y2) in image coordinates.
        output_size: (ph, pw).
        spatial_scale: Feature pixels per image pixel.
        sampling_ratio: Samples per bin along each axis (a fixed number, 1 or more).

    Returns:
        (R, C, ph, pw), in the features' dtype.
    """
    batch, channels, height, width = features.shape
    ph, pw = output_size
    boxes = rois[:, 1:].float() * spatial_scale
    sizes = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1.0)  # (R, 2) width, height
    wy = axis_weights(boxes[:, 1], sizes[:, 1], ph, sampling_ratio, height).to(features.dtype)  # (R, ph, H)
    wx = axis_weights(boxes[:, 0], sizes[:, 0], pw, sampling_ratio, width).to(features.dtype)  # (R, pw, W)
    image_of = rois[:, 0].long()
    out = features.new_zeros(len(rois), ph, channels, pw)
    for image in range(batch):
        index = (image_of == image).nonzero().squeeze(1)
        if index.numel() == 0:
            continue
        # Rows first: (R_b * ph, H) @ (H, C * W) -> (R_b, ph, C, W); then columns, region by region.
        rows = wy[index].reshape(-1, height) @ features[image].transpose(0, 1).reshape(height, channels * width)
        rows = rows.view(len(index), ph * channels, width)
        out[index] = torch.bmm(rows, wx[index].transpose(1, 2)).view(len(index), ph, channels, pw)
    return out.permute(0, 2, 1, 3)  # (R, C, ph, pw)


def uses_matmul(features: Tensor) -> bool:
    """Whether `MatmulRoIAlign` computes as matrix products for `features`: on the CPU only (see the docstring)."""
    return features.device.type == "cpu"


class MatmulRoIAlign(MultiScaleRoIAlign):
    """torchvision's MultiScaleRoIAlign, computed by `matmul_roi_align` when it pools a single level with a
    fixed sampling ratio (otherwise torchvision's own code runs)."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        if len(self.featmap_names) != 1 or self.sampling_ratio < 1 or not uses_matmul(x[self.featmap_names[0]]):
            return super().forward(x, boxes, image_shapes)
        features = x[self.featmap_names[0]]
        # The level's scale as torchvision infers it: the nearest power of two to feature size / image size.
        original_height = max(shape[0] for shape in image_shapes)
        scale = 2.0 ** round(math.log2(features.shape[-2] / original_height))
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])
        return matmul_roi_align(features, rois, self.output_size, scale, self.sampling_ratio)
