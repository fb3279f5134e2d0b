"""Small reusable blocks shared by the model families."""

from cnnkit.layers.conv import ConvBnAct, same_padding
from cnnkit.layers.drop_path import DropPath, drop_path_rates

__all__ = ["ConvBnAct", "DropPath", "drop_path_rates", "same_padding"]
