"""AnyNetX and RegNetX as cnnkit YAML network specs: Radosavovic, Kosaraju, Girshick, He and Dollar 2020,
"Designing Network Design Spaces", CVPR.

AnyNetX (the paper's section 3.1): a stem (3x3 conv, BN, ReLU), four stages of X blocks, a head (global
average pooling, linear). Stage i has d_i blocks of width w_i, bottleneck ratio b_i and group width g_i; its
first block has stride 2. An X block is 1x1 conv (w_in -> w/b), BN, ReLU, 3x3 group conv (groups of g
channels, stride s), BN, ReLU, 1x1 conv (w/b -> w), BN, added to the shortcut (identity, or a strided 1x1
conv + BN where the shape changes), then ReLU.

RegNetX (section 3.3) fixes the widths by a quantised linear rule of a few numbers (depth d, w_0, w_a, w_m):
u_j = w_0 + w_a * j for block j < d; s_j = round(log(u_j / w_0) / log(w_m)); w_j = w_0 * w_m^s_j rounded to a
multiple of 8; blocks of equal width form a stage. The widths are then made compatible with the group width
(w / b a multiple of g). `regnet_design` follows torchvision's `BlockParams.from_init_params` exactly,
including its rounding (`make_divisible`, half up); pycls rounds halves to even, so a few published configs
differ in one stage (regnet_x_400mf's last stage: 400 in torchvision, 384 in pycls).

Written here rather than taken from torchvision/timm: the search needs the network as a cnnkit YAML spec
(`cnnkit train --model winner.yaml`), its MACs from the spec without building it, and small-image stems.
Deviations: no squeeze-and-excitation (RegNetY), since the YAML format has no SE layer; the stem has stride 1
for inputs below 64 px (28x28 images go through the stages at 14, 7, 4 and 2 px).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from cnnkit.errors import ModelError
from cnnkit.models._utils import check_positive, image_size
from cnnkit.models.custom import CustomCNN
from cnnkit.registry import register_model

QUANTUM = 8  # block widths are multiples of 8 (the paper's q)


def make_divisible(value: float, divisor: int) -> int:
    """`value` rounded (half up) to a multiple of `divisor`, at least `divisor`, never below 90% of `value`
    (torchvision's and TensorFlow's `_make_divisible`)."""
    result = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return result + divisor if result < 0.9 * value else result


def regnet_block_widths(depth: int, w_0: int, w_a: float, w_m: float, quantum: int = QUANTUM) -> list[int]:
    """The paper's quantised linear widths, one per block (equations 2-4 of Radosavovic et al. 2020)."""
    if depth < 1 or w_0 <= 0 or w_a < 0 or w_m <= 1 or w_0 % quantum:
        raise ModelError(f"RegNet needs depth >= 1, w_0 > 0 a multiple of {quantum}, w_a >= 0 and w_m > 1; got "
                         f"depth={depth}, w_0={w_0}, w_a={w_a}, w_m={w_m}")
    widths = []
    for block in range(depth):
        linear_width = w_0 + w_a * block  # u_j
        step = round(math.log(linear_width / w_0) / math.log(w_m))  # s_j, rounded
        widths.append(int(round(w_0 * w_m ** step / quantum)) * quantum)
    return widths


@dataclass(frozen=True)
class AnyNetDesign:
    """An AnyNetX network: per stage its depth, width, group width and bottleneck ratio (w / b inside)."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    group_widths: tuple[int, ...]
    bottleneck_ratios: tuple[float, ...]
    stem_width: int = 32

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


def regnet_design(depth: int, w_0: int, w_a: float, w_m: float, group_width: int, bottleneck_ratio: float = 1.0,
                  stem_width: int = 32) -> AnyNetDesign:
    """The stages of a RegNetX: quantised linear widths grouped into stages, made group-compatible.

    Matches torchvision's `BlockParams.from_init_params(depth, w_0, w_a, w_m, group_width,
    bottleneck_multiplier=1 / bottleneck_ratio)` (tests/test_search_spaces.py checks the 15 published configs).
    """
    block_widths = regnet_block_widths(depth, w_0, w_a, w_m)
    depths, widths = [], []
    for width in block_widths:
        if widths and widths[-1] == width:
            depths[-1] += 1
        else:
            depths.append(1)
            widths.append(width)
    inner = [int(width / bottleneck_ratio) for width in widths]
    groups = [min(group_width, width) for width in inner]
    inner = [make_divisible(width, group) for width, group in zip(inner, groups)]
    widths = [int(width * bottleneck_ratio) for width in inner]
    return AnyNetDesign(tuple(depths), tuple(widths), tuple(groups), (float(bottleneck_ratio),) * len(depths),
                        stem_width)


def _conv(filters: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> dict:
    fields = {"filters": filters, "kernel": kernel}
    if stride != 1:
        fields["stride"] = stride
    if groups != 1:
        fields["groups"] = groups
    return {"conv": fields}


def stem_stride_for(input_size: int | tuple[int, int]) -> int:
    """1 below 64 px (small images keep their resolution in the stem), else 2 (the paper's)."""
    return 1 if min(image_size(input_size)) < 64 else 2


def anynet_spec(design: AnyNetDesign, stem_stride: int = 1) -> dict:
    """The cnnkit YAML spec (cnnkit.models.custom) of an AnyNetX network."""
    _check_design(design)
    layers: list = [_conv(design.stem_width, 3, stem_stride), "batchnorm", "relu"]
    for depth, width, group, ratio in zip(design.depths, design.widths, design.group_widths,
                                          design.bottleneck_ratios):
        inner = int(round(width / ratio))
        for block in range(depth):
            body = [_conv(inner, 1), "batchnorm", "relu",
                    _conv(inner, 3, 2 if block == 0 else 1, inner // group), "batchnorm", "relu",
                    _conv(width, 1), "batchnorm"]
            layers += [{"residual": body}, "relu"]
    layers += ["globalavgpool", {"linear": {"units": "num_classes"}}]
    text = ", ".join(f"{name}={list(value) if isinstance(value, tuple) else value}"
                     for name, value in asdict(design).items())
    return {"description": f"AnyNetX ({text})", "layers": layers}


def anynet_macs(design: AnyNetDesign, in_chans: int = 1, input_size: int | tuple[int, int] = 28,
                num_classes: int = 10, stem_stride: int = 1) -> int:
    """Multiply-accumulates of one forward pass, from the design alone (convolutions and the linear head,
    the operations `cnnkit.inspect.summary.count_macs` counts)."""
    height, width = image_size(input_size)
    height, width = -(-height // stem_stride), -(-width // stem_stride)
    macs = height * width * design.stem_width * in_chans * 9
    channels = design.stem_width
    for depth, out, group, ratio in zip(design.depths, design.widths, design.group_widths, design.bottleneck_ratios):
        inner = int(round(out / ratio))
        for block in range(depth):
            stride = 2 if block == 0 else 1
            out_h, out_w = -(-height // stride), -(-width // stride)
            macs += height * width * channels * inner  # 1x1 at the input resolution
            macs += out_h * out_w * inner * group * 9  # 3x3 group conv: g input channels per output channel
            macs += out_h * out_w * inner * out  # 1x1 expansion
            if stride != 1 or channels != out:
                macs += out_h * out_w * channels * out  # strided 1x1 projection shortcut
            height, width, channels = out_h, out_w, out
    return macs + channels * num_classes


def _check_design(design: AnyNetDesign) -> None:
    stages = len(design.depths)
    if not stages or any(len(values) != stages for values in
                         (design.widths, design.group_widths, design.bottleneck_ratios)):
        raise ModelError(f"an AnyNet design needs as many widths, group widths and bottleneck ratios as stages "
                         f"(depths); got {design}")
    check_positive("stem_width", design.stem_width)
    for depth, width, group, ratio in zip(design.depths, design.widths, design.group_widths,
                                          design.bottleneck_ratios):
        check_positive("depth", depth)
        check_positive("width", width)
        inner = width / ratio
        if ratio <= 0 or inner != int(inner) or int(inner) % group:
            raise ModelError(f"stage width {width} / bottleneck ratio {ratio} must be an integer multiple of the "
                             f"group width {group}")


@register_model(family="anynet")
def anynet(depths=(1, 1, 3, 4), widths=(16, 32, 64, 128), group_widths=(8, 8, 8, 8),
           bottleneck_ratios=(1.0, 1.0, 1.0, 1.0), stem_width: int = 16, num_classes: int = 10, in_chans: int = 1,
           input_size: int | tuple[int, int] = 28) -> CustomCNN:
    """AnyNetX (Radosavovic et al. 2020) from per-stage depths, widths, group widths and bottleneck ratios."""
    design = AnyNetDesign(tuple(depths), tuple(widths), tuple(group_widths), tuple(map(float, bottleneck_ratios)),
                          stem_width)
    return CustomCNN(anynet_spec(design, stem_stride_for(input_size)), num_classes=num_classes, in_chans=in_chans,
                     input_size=input_size)
