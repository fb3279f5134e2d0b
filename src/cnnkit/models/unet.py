"""U-Net: Ronneberger, Fischer and Brox 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation".

An *encoder* halves the resolution stage by stage while it widens the channels (what is there); a
*decoder* climbs back up (where exactly), and at every resolution concatenates the encoder's features
of that resolution (the *skip connections*, the U's horizontal bars) before two 3x3 convolutions. The
skips hand the decoder the fine detail the encoder's downsampling threw away, which is why U-Net draws
sharp boundaries from few training images.

    image ─ enc1 ─────────────────────────────── concat ─ dec1 ─ 1x1 conv ─ logits (K, H, W)
              └ enc2 ──────────────── concat ─ dec2 ┘
                  └ enc3 ─ concat ─ dec3 ┘
                      └ enc4 (bottleneck) ┘            (each ┘: upsample x2)

Encoders (`encoder=`):
- "plain": the paper's, two 3x3 conv-BN-ReLU per stage and 2x2 max-pool between stages, with widths
  `base_width` x (1, 2, 4, 8, 16). The paper uses 64 (31M parameters) and unpadded convolutions that
  shrink the output; here 32 by default and padded ("same") convolutions, so the output is the input's
  size, and BatchNorm (not in the paper) for stable training from scratch.
- Any convolutional model of the zoo ("resnet18", "efficientnet_b0", "mobilenet_v3_large",
  "convnext_tiny", "densenet121", "vgg16_bn" ...): built by `cnnkit.create_model` (so in_chans and small
  inputs are handled as in classification), then cut into a feature extractor with torchvision's
  `create_feature_extractor` at the end of each resolution (`pyramid_nodes`: the tensor a module
  receives just before the resolution halves, and the last one at the deepest level). The classifier
  head is not part of the extracted graph.
- "timm:NAME": any timm model through timm's own `features_only=True` (e.g. "timm:resnet26d").

Decoder: for each encoder level from deep to shallow, upsample (bilinear) to the level's size,
concatenate, then two conv-BN-ReLU of `decoder_channels` (256, 128, 64, 32, 16 from the deepest level up,
as in segmentation_models_pytorch). When the shallowest encoder level is coarser than the input (a
ResNet's stem halves the image), one more block upsamples to full resolution without a skip.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.errors import ModelError
from cnnkit.layers.conv import ConvBnAct
from cnnkit.models._utils import check_positive, image_size
from cnnkit.registry import register_model

DECODER_CHANNELS = (256, 128, 64, 32, 16)  # deepest level first
NOT_CONVOLUTIONAL = ("vit", "swin", "coatnet")  # families whose features are not a CNN pyramid


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """The U-Net unit: two 3x3 conv-BN-ReLU."""
    return nn.Sequential(ConvBnAct(in_channels, out_channels, 3), ConvBnAct(out_channels, out_channels, 3))


class PlainEncoder(nn.Module):
    """The paper's encoder: double_conv per stage, 2x2 max-pool between stages; returns every stage's output."""

    def __init__(self, in_chans: int, base_width: int = 32, depth: int = 5):
        super().__init__()
        widths = [base_width * 2 ** level for level in range(depth)]
        self.stages = nn.ModuleList(double_conv(c_in, c_out) for c_in, c_out in zip([in_chans, *widths], widths))
        self.channels = widths
        self.reductions = [2 ** level for level in range(depth)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, stage in enumerate(self.stages):
            x = stage(x if index == 0 else F.max_pool2d(x, 2))
            features.append(x)  # (B, base_width * 2^i, H / 2^i, W / 2^i)
        return features


def _is_identity(module: nn.Module) -> bool:
    return isinstance(module, nn.Identity) or (isinstance(module, nn.Sequential) and len(module) == 0)


def pyramid_nodes(model: nn.Module, in_chans: int, size: tuple[int, int]) -> list[tuple[str, int, int]]:
    """(module name, channels, reduction) of the modules whose outputs form the model's feature pyramid.

    One forward pass at `size` (batch 1, eval mode) finds, for each resolution H/2^k x W/2^k, the first
    module (outermost, in call order) that receives a tensor of that resolution and returns a smaller
    one: the module that *produced* its input holds that level's features (ResNet: relu, layer1, layer2,
    layer3; EfficientNet: features.1, features.2 ...). The deepest level is the last module output at the
    smallest resolution (ResNet: layer4). Global pooling (1x1 outputs) is not a level, and identity
    modules (empty shortcuts) are never chosen. Shallow to deep; the
    image itself (reduction 1) only when a module produces full-resolution features (VGG, small inputs).
    """
    height, width = size
    # Level k is 1/2^k of the input: floor(H / 2^k) after unpadded 2x2 pooling, ceil(H / 2^k) after
    # padded stride-2 convolutions (28 -> 14 -> 7 -> 4), whichever the model does.
    levels: dict[tuple[int, int], int] = {}
    for rounding in (lambda value, k: value >> k, lambda value, k: -(-value >> k)):
        for k in range(8):
            levels.setdefault((rounding(height, k), rounding(width, k)), k)

    def level_of(x) -> int | None:
        # 1x1 maps are global pooling (a squeeze-excitation gate, the head), not a pyramid level.
        if not torch.is_tensor(x) or x.dim() != 4 or tuple(x.shape[-2:]) == (1, 1):
            return None
        return levels.get(tuple(x.shape[-2:]))

    completed: list[tuple[str, torch.Tensor]] = []  # (name, output), in the order modules finish
    started: dict[int, tuple[int, torch.Tensor]] = {}  # id(module) -> (call order, input)
    candidates: dict[int, tuple[int, str, int]] = {}  # level -> (call order, producer, channels)
    last_at_level: dict[int, tuple[str, int]] = {}

    def before(module, inputs):
        if inputs and level_of(inputs[0]) is not None:
            started[id(module)] = (len(started), inputs[0])

    def after(name):
        def hook(module, inputs, output):
            order, x = started.pop(id(module), (None, None))
            if x is not None and level_of(output) is not None and level_of(output) > level_of(x):
                producer = next((n for n, out in reversed(completed) if out is x), None)
                level = level_of(x)
                if producer is not None and (level not in candidates or order < candidates[level][0]):
                    candidates[level] = (order, producer, int(x.shape[1]))
            if torch.is_tensor(output) and not _is_identity(module):
                completed.append((name, output))
                if level_of(output) is not None:
                    last_at_level[level_of(output)] = (name, int(output.shape[1]))
        return hook

    handles = []
    for name, module in model.named_modules():
        if name:
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after(name))]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()
            model(torch.zeros(1, in_chans, height, width))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if len(last_at_level) < 2:
        raise ModelError(f"{type(model).__name__}'s feature maps do not halve a {height}x{width} image step by step "
                         "(e.g. a stride-4 11x11 stem): it cannot be a U-Net encoder; choose another encoder")
    deepest = max(last_at_level)
    nodes = {level: (producer, channels) for level, (_, producer, channels) in candidates.items() if level < deepest}
    nodes[deepest] = last_at_level[deepest]
    return [(*nodes[level], 2 ** level) for level in sorted(nodes) if level > 0 or nodes[level][0]]


class ZooEncoder(nn.Module):
    """A zoo model cut into its feature pyramid (torchvision's create_feature_extractor, FX graph)."""

    def __init__(self, name: str, in_chans: int, input_size: tuple[int, int]):
        super().__init__()
        from torchvision.models.feature_extraction import create_feature_extractor

        from cnnkit.registry import create_model, get_entry

        entry = get_entry(name)
        if entry.task != "classify" or entry.family in NOT_CONVOLUTIONAL:
            raise ModelError(f"encoder={name!r} is not a convolutional classification model with a feature pyramid; "
                             "use a CNN from `cnnkit models` (resnet18, efficientnet_b0 ...) or timm:NAME")
        model = create_model(name, num_classes=1, in_chans=in_chans, input_size=input_size)
        try:
            nodes = pyramid_nodes(model, in_chans, input_size)
        except ModelError as error:
            raise ModelError(f"encoder={name!r}: {error}") from None
        try:
            self.body = create_feature_extractor(model, return_nodes={node: str(i) for i, (node, _, _) in enumerate(nodes)})
        except Exception as error:  # noqa: BLE001 - FX tracing fails in many ways on dynamic code
            raise ModelError(f"encoder={name!r} cannot be traced into a feature extractor ({error}); try "
                             f"encoder='timm:{name}'") from None
        self.channels = [channels for _, channels, _ in nodes]
        self.reductions = [reduction for _, _, reduction in nodes]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x).values())


class TimmEncoder(nn.Module):
    """A timm model with features_only=True (random weights)."""

    def __init__(self, name: str, in_chans: int):
        super().__init__()
        import timm

        try:
            self.body = timm.create_model(name, features_only=True, pretrained=False, in_chans=in_chans)
        except Exception as error:  # noqa: BLE001 - unknown names, models without features_only ...
            raise ModelError(f"encoder='timm:{name}': timm cannot build it with features_only=True ({error})") from None
        self.channels = list(self.body.feature_info.channels())
        self.reductions = list(self.body.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x))


class DecoderBlock(nn.Module):
    """Upsample to the skip's size, concatenate the skip, two 3x3 conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int):
        super().__init__()
        self.convs = double_conv(in_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)  # (B, C, h, w) -> (B, C, H, W)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)  # the skip connection
        return self.convs(x)


class UNet(nn.Module):
    """Encoder (a list of feature maps, shallow to deep) + U-Net decoder + 1x1 classifier.

    Args:
        encoder: A module returning a list of feature maps with decreasing resolution; `encoder.channels`
            lists their channels and `encoder.reductions` their strides (1: the input's resolution).
        num_classes: K, the output channels (one logit per class and pixel).
        decoder_channels: Output channels of the decoder blocks, deepest first (the last value repeats
            if the encoder has more levels).
    """

    def __init__(self, encoder: nn.Module, num_classes: int, decoder_channels=DECODER_CHANNELS):
        super().__init__()
        self.encoder = encoder
        skips = list(reversed(encoder.channels[:-1]))  # deep to shallow, the bottleneck excluded
        widths = [decoder_channels[min(i, len(decoder_channels) - 1)] for i in range(len(skips) + 1)]
        blocks, channels = [], encoder.channels[-1]
        for skip, width in zip(skips, widths):
            blocks.append(DecoderBlock(channels, skip, width))
            channels = width
        self.decoder = nn.ModuleList(blocks)
        # A full-resolution block (no skip) when the shallowest features are smaller than the image.
        self.final = DecoderBlock(channels, 0, widths[len(skips)]) if encoder.reductions[0] > 1 else None
        self.head = nn.Conv2d(widths[len(skips)] if self.final is not None else channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        y = features[-1]
        for block, skip in zip(self.decoder, reversed(features[:-1])):
            y = block(y, skip, tuple(skip.shape[-2:]))
        if self.final is not None:
            y = self.final(y, None, tuple(x.shape[-2:]))
        return self.head(y)  # (B, K, H, W)


@register_model(family="unet", source="cnnkit", task="segment")
def unet(num_classes: int = 2, in_chans: int = 3, input_size=128, encoder: str = "plain", base_width: int = 32,
         decoder_channels=DECODER_CHANNELS) -> UNet:
    """U-Net (Ronneberger et al. 2015) with the paper's encoder (base_width 32) or any zoo/timm encoder."""
    check_positive("num_classes", num_classes)
    check_positive("in_chans", in_chans)
    size = image_size(input_size)
    if encoder == "plain":
        check_positive("base_width", base_width)
        if min(size) % 16:
            raise ModelError(f"the plain U-Net halves the image 4 times: input_size {size} must be a multiple of 16")
        return UNet(PlainEncoder(in_chans, base_width), num_classes, decoder_channels)
    if encoder.startswith("timm:"):
        return UNet(TimmEncoder(encoder.removeprefix("timm:"), in_chans), num_classes, decoder_channels)
    return UNet(ZooEncoder(encoder, in_chans, size), num_classes, decoder_channels)


@register_model(family="unet", source="cnnkit", task="segment")
def unet_resnet18(**kwargs) -> UNet:
    """U-Net with a ResNet-18 encoder (torchvision, via the zoo): skips at strides 2, 4, 8, 16."""
    return unet(encoder="resnet18", **kwargs)


@register_model(family="unet", source="cnnkit", task="segment")
def unet_resnet34(**kwargs) -> UNet:
    """U-Net with a ResNet-34 encoder (torchvision, via the zoo): skips at strides 2, 4, 8, 16."""
    return unet(encoder="resnet34", **kwargs)


@register_model(family="unet", source="cnnkit", task="segment")
def unet_efficientnet_b0(**kwargs) -> UNet:
    """U-Net with an EfficientNet-B0 encoder (torchvision, via the zoo)."""
    return unet(encoder="efficientnet_b0", **kwargs)
