"""A classifier head over features pooled from several depths of a backbone (hypercolumns for classification).

Why: the last features of a network serve the classes it was trained on; frozen, they keep little of what
a new task needs, while earlier stages hold more general features (Yosinski et al. 2014, "How transferable
are features in deep neural networks?"; Hariharan et al. 2015 call features read across depths
"hypercolumns"). Measured (benchmarks/transfer_learning.py's setting: resnet20 pretrained on Fashion-MNIST
classes 0-4, a linear probe on 40 images of each class 5-9, accuracy on 1,000 other *training* images per
class, seeds 0 / 1): the global-average-pooled last stage (the model's own head) 87.4 / 86.9%; the three
stages' global averages concatenated 90.7 / 89.6%; the last two stages each pooled to 2x2 92.6 / 92.7%; the
three stages at 2x2 (head_levels=3, head_grid=2) 93.4 / 93.3%.

How: the wrapped model runs unchanged, except that its own classifier is replaced by nn.Identity. Forward
hooks keep, for each of the last `levels` spatial resolutions, the output of the block that finishes last at
that resolution (a stage, a residual block: found once, by a forward pass at construction). Each kept map
(B, C_i, H_i, W_i) is average-pooled to (B, C_i, grid, grid) and flattened; the concatenation
(B, sum C_i * grid^2) goes through dropout into one nn.Linear, the new head. `levels=1, grid=1` is the usual
global-average-pooled last stage.

For CNNs, whose blocks return (B, C, H, W) maps; transformer blocks (tokens) are not levels. Built by
`create_model(name, head_levels=N, head_grid=G)` (config: `head_levels`, `head_grid`), so a checkpoint's
architecture record rebuilds it.
"""

from __future__ import annotations

import threading

import torch
import torch.nn as nn

from cnnkit.errors import ModelError
from cnnkit.models.anatomy import backbone_blocks, classifier_module, replace_module

# Models whose blocks return channels-last maps (B, H, W, C) or tokens: a map's channels cannot be told apart.
UNSUPPORTED = ("SwinTransformer", "VisionTransformer")


class MultiLevelClassifier(nn.Module):
    """A backbone whose classifier reads average-pooled features from its last `levels` resolutions.

    Args:
        backbone: A classifier of the zoo (its head is replaced by nn.Identity, in place).
        levels: How many resolution levels the head reads, counted from the top (>= 1).
        grid: Each level's map is average-pooled to grid x grid (1: global average pooling).
        in_chans, input_size: The input the backbone takes (a forward pass at this size finds the levels).
        drop_rate: Dropout before the head.
    """

    def __init__(self, backbone: nn.Module, levels: int, grid: int = 1, in_chans: int = 3,
                 input_size: tuple[int, int] = (224, 224), drop_rate: float = 0.0):
        super().__init__()
        if type(backbone).__name__ in UNSUPPORTED:
            raise ModelError(f"head_levels needs a CNN whose blocks return (B, C, H, W) maps; "
                             f"{type(backbone).__name__} returns tokens: leave head_levels at 0")
        if not isinstance(levels, int) or levels < 1 or not isinstance(grid, int) or grid < 1:
            raise ModelError(f"head_levels and head_grid must be positive integers, got {levels!r} and {grid!r}")
        blocks = [module for block in backbone_blocks(backbone) for module in block]
        old_head = classifier_module(backbone)
        num_classes = old_head.out_features
        replace_module(backbone, old_head, nn.Identity())
        self.backbone = backbone
        self._blocks = blocks  # registered under backbone; a plain list keeps them out of state_dict twice
        taps, shapes = self._find_levels(levels, in_chans, input_size)
        self.level_shapes = shapes  # (C, H, W) of each level at input_size, from the bottom
        # The maps of the forward pass running in each thread (servers run one model in several threads);
        # a plain dict, so the model still deep-copies (EMA) and pickles.
        self._maps_by_thread: dict[int, list[torch.Tensor]] = {}
        for block in taps:
            block.register_forward_hook(self._keep)
        self.pool = nn.AdaptiveAvgPool2d(grid)  # (B, C, H, W) -> (B, C, grid, grid)
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(sum(channels for channels, _, _ in shapes) * grid * grid, num_classes)

    def _find_levels(self, levels, in_chans, input_size):
        """The block that finishes last at each of the last `levels` resolutions, and its output shape (C, H, W).

        The candidates are the backbone's blocks (a residual block, an inverted residual ...) and the layers
        of blocks that are plain nn.Sequential stacks (VGG's and DenseNet's `features`); one forward pass
        watches them finish, and at each output size (H, W) the last to finish is the level's output.
        Blocks that run more than once per pass are passed over.
        """
        candidates = []
        for block in self._blocks:
            candidates.append(block)
            if isinstance(block, nn.Sequential):
                candidates.extend(block.children())
        finished = []  # (module, output shape) in the order modules finish
        hooks = [module.register_forward_hook(
            lambda module, inputs, output: finished.append((module, output.shape))
            if isinstance(output, torch.Tensor) and output.dim() == 4 else None)
            for module in candidates]
        was_training = self.backbone.training
        try:
            self.backbone.eval()
            with torch.no_grad():
                self.backbone(torch.zeros(1, in_chans, *input_size))
        finally:
            for hook in hooks:
                hook.remove()
            self.backbone.train(was_training)
        calls = {}
        for module, _ in finished:
            calls[id(module)] = calls.get(id(module), 0) + 1
        last_at = {}  # (H, W) -> (module, shape), in order of first appearance
        for module, shape in finished:
            if calls[id(module)] == 1:
                last_at[tuple(shape[2:])] = (module, tuple(shape[1:]))
        found = list(last_at.values())
        if len(found) < levels:
            raise ModelError(f"head_levels={levels}: {type(self.backbone).__name__} has only {len(found)} "
                             f"resolution levels at {input_size[0]}x{input_size[1]} px")
        chosen = found[-levels:]
        return [module for module, _ in chosen], [shape for _, shape in chosen]

    def _keep(self, module, inputs, output) -> None:
        maps = self._maps_by_thread.get(threading.get_ident())  # None: the block ran outside this model's forward
        if maps is not None:
            maps.append(output)

    def get_classifier(self) -> nn.Module:
        return self.head

    def feature_blocks(self) -> list[list[nn.Module]]:
        """The backbone's blocks from the input up (for freezing and gradual unfreezing)."""
        return [[block] for block in self._blocks]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, D) concatenated pooled features, D = sum C_i * grid^2."""
        thread = threading.get_ident()
        self._maps_by_thread[thread] = []
        try:
            self.backbone(x)
        finally:
            maps = self._maps_by_thread.pop(thread)
        return torch.cat([self.pool(feature_map).flatten(1) for feature_map in maps], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.forward_features(x)))


def multilevel(backbone: nn.Module, levels: int, grid: int, in_chans: int | None, input_size,
               drop_rate: float = 0.0) -> MultiLevelClassifier:
    """Wrap a freshly built zoo model (create_model's `head_levels`/`head_grid`)."""
    if in_chans is None:
        first_conv = next((m for m in backbone.modules() if isinstance(m, nn.Conv2d)), None)
        in_chans = first_conv.in_channels if first_conv is not None else 3
    if input_size is None:
        input_size = getattr(backbone, "input_size", 224)
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    return MultiLevelClassifier(backbone, levels, grid, in_chans, size, drop_rate)
