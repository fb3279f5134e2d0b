"""SimpleCNN: the guide's first convolutional network (three conv blocks and a two-layer classifier).

    3 x [Conv3x3 (padding 1) -> BatchNorm -> ReLU -> MaxPool2], channels 32, 64, 128
    -> flatten -> Dropout(0.5) -> Linear(128*h*w, 512) -> ReLU -> Dropout(0.5) -> Linear(512, num_classes)

In the guide it takes 3x32x32 CIFAR-10 images, so the flattened size is 128*4*4 = 2048. Here the
number of input channels and the image size are arguments: each pooling halves the size with floor, so
a 28x28 image (MNIST) is pooled 28 -> 14 -> 7 -> 3 and the classifier sees 128*3*3 = 1152 features
(the last row and column of the 7x7 map are dropped by the third pooling, as in any floor-mode pooling).
Because of the flatten, a model only accepts images of the `input_size` it was built for.

Deviation from the guide: the convolutions have no bias, since the BatchNorm shift that follows makes
it redundant (224 fewer parameters, same function class).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from cnnkit.errors import ModelError
from cnnkit.layers import ConvBnAct
from cnnkit.models._utils import check_input_size, check_positive, check_probability, image_size
from cnnkit.registry import register_model


class SimpleCNN(nn.Module):
    """Conv-BN-ReLU-MaxPool blocks, then a dropout-regularised two-layer classifier.

    Args:
        num_classes: Number of output logits.
        in_chans: Input image channels.
        input_size: (height, width) of the input images, or one int for square images.
        channels: Output channels of each conv block.
        hidden_features: Width of the hidden fully connected layer.
        drop_rate: Dropout probability before each fully connected layer.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        input_size: int | tuple[int, int] = 28,
        channels: tuple[int, ...] = (32, 64, 128),
        hidden_features: int = 512,
        drop_rate: float = 0.5,
    ) -> None:
        super().__init__()
        check_positive("num_classes", num_classes)
        check_positive("in_chans", in_chans)
        check_probability("drop_rate", drop_rate)
        self.input_size = image_size(input_size)
        height, width = self.input_size
        blocks = []
        for in_channels, out_channels in zip((in_chans, *channels), channels):
            blocks += [ConvBnAct(in_channels, out_channels, kernel_size=3), nn.MaxPool2d(2)]
            height, width = height // 2, width // 2
        if height < 1 or width < 1:
            raise ModelError(f"simple_cnn needs input_size of at least {2 ** len(channels)} pixels per side "
                             f"({len(channels)} poolings by 2), got {self.input_size}")
        self.features = nn.Sequential(*blocks)
        self.num_features = channels[-1] * height * width
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (B, C, h, w) -> (B, C*h*w)
            nn.Dropout(drop_rate),
            nn.Linear(self.num_features, hidden_features),
            nn.ReLU(),
            nn.Dropout(drop_rate),
            nn.Linear(hidden_features, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size("simple_cnn", x, self.input_size)  # the flatten fixes the image size
        return self.classifier(self.features(x))


@register_model(family="simple_cnn")
def simple_cnn(**kwargs) -> SimpleCNN:
    """The guide's SimpleCNN: 3 conv-BN-ReLU-pool blocks (32/64/128) and a 512-unit classifier."""
    return SimpleCNN(**kwargs)
