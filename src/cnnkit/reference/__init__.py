"""The guide's from-scratch NumPy operations, kept as readable test oracles (see `ops`)."""

from cnnkit.reference.ops import (
    avg_pool,
    conv2d,
    convolve2d,
    gelu,
    global_avg_pool,
    leaky_relu,
    linear,
    max_pool,
    relu,
    same_padding,
    sigmoid,
    softmax,
    swish,
)

__all__ = [
    "avg_pool",
    "conv2d",
    "convolve2d",
    "gelu",
    "global_avg_pool",
    "leaky_relu",
    "linear",
    "max_pool",
    "relu",
    "same_padding",
    "sigmoid",
    "softmax",
    "swish",
]
