"""LeNet-5: LeCun, Bottou, Bengio and Haffner 1998, "Gradient-Based Learning Applied to Document
Recognition", Proc. IEEE 86(11), section II.B.

    32x32 input -> C1 conv5x5, 6 maps (28x28) -> S2 subsampling (14x14) -> C3 conv5x5, 16 maps (10x10)
    -> S4 subsampling (5x5) -> C5 conv5x5, 120 maps (1x1) -> F6 fully connected 84 -> output num_classes

61,706 parameters for 10 classes; the paper reports about 60,000 (its C3 is sparser, see below).

Deviations from the paper, each the usual modern reading of it:
- C3 connects every S2 map to every C3 map; the paper's Table I connects each C3 map to only 3, 4 or 6
  of the S2 maps (1,516 weights+biases instead of our 2,416) to break symmetry and save computation.
- S2 and S4 are plain 2x2 average pooling. The paper's subsampling units multiply the 2x2 sum by a
  trainable coefficient, add a trainable bias and apply the sigmoid (12 + 32 parameters).
- The output layer is linear (logits for cross-entropy), not the paper's Euclidean RBF units with
  fixed 7x12 bitmap codes and its MAP criterion.
- Activations are plain tanh by default (`activation="tanh"`); the paper used the scaled
  1.7159 * tanh(2/3 * a). `activation="relu"` gives the common modern variant.

Input sizes: the paper's MNIST digits are 28x28 images centred in a 32x32 field, so smaller images are
zero-padded (centred) to 32x32 inside the model. Larger images pass through C1..S4 unchanged and an
adaptive average pooling brings the S4 maps to the 5x5 that C5 expects (identity at 32x32).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnkit.errors import ModelError
from cnnkit.models._utils import check_input_size, check_positive, image_size
from cnnkit.registry import register_model

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
_FIELD = 32  # the paper's input field, 32x32


class LeNet5(nn.Module):
    """LeNet-5 with full C3 connections, average-pooling subsampling and a linear output layer.

    Args:
        num_classes: Number of output logits.
        in_chans: Input image channels.
        input_size: (height, width) of the input images, or one int for square images. Smaller than
            32 is zero-padded to 32 (centred); larger is average-pooled to 5x5 before C5.
        activation: "tanh" (the paper) or "relu".
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        input_size: int | tuple[int, int] = 28,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        check_positive("num_classes", num_classes)
        check_positive("in_chans", in_chans)
        if activation not in _ACTIVATIONS:
            raise ModelError(f"lenet5 activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        act_layer = _ACTIVATIONS[activation]
        self.input_size = image_size(input_size)
        height, width = self.input_size
        pad_height, pad_width = max(_FIELD - height, 0), max(_FIELD - width, 0)
        # (left, right, top, bottom): centre the image in the 32x32 field, the extra pixel right/bottom.
        self.pad = nn.ZeroPad2d((pad_width // 2, pad_width - pad_width // 2,
                                 pad_height // 2, pad_height - pad_height // 2))
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 6, kernel_size=5), act_layer(),  # C1: (B, 6, 28, 28) at 32x32
            nn.AvgPool2d(2),  # S2: (B, 6, 14, 14)
            nn.Conv2d(6, 16, kernel_size=5), act_layer(),  # C3: (B, 16, 10, 10)
            nn.AvgPool2d(2),  # S4: (B, 16, 5, 5)
        )
        padded_size = (max(height, _FIELD), max(width, _FIELD))
        s4_size = tuple(((side - 4) // 2 - 4) // 2 for side in padded_size)
        self.to_5x5 = nn.AdaptiveAvgPool2d(5) if s4_size != (5, 5) else nn.Identity()
        self.classifier = nn.Sequential(
            nn.Conv2d(16, 120, kernel_size=5), act_layer(),  # C5: (B, 120, 1, 1)
            nn.Flatten(),  # (B, 120, 1, 1) -> (B, 120)
            nn.Linear(120, 84), act_layer(),  # F6
            nn.Linear(84, num_classes),  # output layer (logits)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size("lenet5", x, self.input_size)  # padding and pooling were set for this size
        return self.classifier(self.to_5x5(self.features(self.pad(x))))


@register_model(family="lenet")
def lenet5(**kwargs) -> LeNet5:
    """LeNet-5 (LeCun et al. 1998): tanh conv/avg-pool network, 28x28 input padded to 32x32."""
    return LeNet5(**kwargs)
