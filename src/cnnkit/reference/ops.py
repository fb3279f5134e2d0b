"""The guide's CNN operations written from scratch in NumPy: readable test oracles, not fast paths.

Every function here is plain NumPy, with explicit loops where the loop is the lesson (sliding a
kernel or a pooling window over an image). They exist so that tests can check cnnkit's PyTorch
layers against an implementation a reader can verify by hand; nothing in cnnkit calls them at
training time. Written by hand on purpose: the point is the reading, and torch is what they check.
All results are float64, so the reference is never the less precise side of a comparison.

Shapes use N = batch, C = channels, F = filters (output channels), H x W = height x width.

Convolution (cross-correlation, as in every deep learning framework: the kernel is not flipped)
    convolve2d(image (H, W), kernel (kh, kw), stride, padding) -> (H_out, W_out)
        One channel, one kernel: the guide's example.
    conv2d(x (C, H, W) or (N, C, H, W), weights (F, C, kh, kw), bias (F,) or None, stride, padding)
        -> (F, H_out, W_out) or (N, F, H_out, W_out). Each filter sums convolve2d over the channels.
    padding: "valid" (none), "same" (odd kernels; output size ceil(n / stride)) or an integer p
    (p zeros on every side). Output size per axis: floor((n + pad_total - k) / stride) + 1.

Pooling (windows of size x size, stride defaults to size, floor mode: a ragged edge is dropped)
    max_pool(x, size=2, stride=None), avg_pool(x, size=2, stride=None)
        x is (H, W), (C, H, W) or (N, C, H, W); the last two axes are pooled.
    global_avg_pool(x (..., H, W)) -> (...): the mean of each feature map.

Activations (elementwise, any shape)
    relu(x) = max(x, 0)
    leaky_relu(x, slope=0.01) = x if x > 0 else slope * x
    gelu(x) = x * Phi(x), Phi the standard normal CDF (exact erf form; approximate="tanh" as well)
    sigmoid(x) = 1 / (1 + exp(-x))
    swish(x) = x * sigmoid(x)   (PyTorch calls it SiLU)

Classifier head
    linear(x (..., in), weight (out, in), bias (out,) or None) -> (..., out): a fully connected
        layer with PyTorch's weight layout, y = x @ weight.T + bias.
    softmax(x, axis=-1): exp(x) / sum(exp(x)), computed after subtracting the max for stability.
"""

from __future__ import annotations

import math

import numpy as np

Padding = str | int


# --------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------

def _check_stride(stride: int) -> None:
    if not isinstance(stride, (int, np.integer)) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")


def same_padding(size: int, kernel_size: int, stride: int = 1) -> tuple[int, int]:
    """Zeros to add before and after one axis so that the output has ceil(size / stride) elements.

    The total is split as TensorFlow and PyTorch split it for padding="same": half before, and the
    odd one left over (only possible when stride > 1) after. At stride 1 with an odd kernel this is
    (k // 2, k // 2), the symmetric padding cnnkit's layers use. Note that at stride > 1 cnnkit's
    `ConvBnAct` pads k // 2 on both sides instead; the output size is the same, the window
    positions can differ by one pixel. Pass padding=k // 2 to reproduce that exactly.

    Args:
        size: Input length along the axis.
        kernel_size: Kernel length along the axis; must be odd.
        stride: Step between windows.

    Returns:
        (before, after) padding.

    Raises:
        ValueError: For an even kernel, which cannot be centred on a pixel.
    """
    _check_stride(stride)
    if kernel_size % 2 == 0:
        raise ValueError(f"padding='same' needs an odd kernel size, got {kernel_size}; "
                         "pass an explicit integer padding for even kernels")
    output_size = math.ceil(size / stride)
    total = max((output_size - 1) * stride + kernel_size - size, 0)
    before = total // 2
    return before, total - before


def _padding_per_axis(padding: Padding, image_shape: tuple[int, int], kernel_shape: tuple[int, int],
                      stride: int) -> list[tuple[int, int]]:
    """Resolve a padding argument into [(top, bottom), (left, right)]."""
    if padding == "valid":
        return [(0, 0), (0, 0)]
    if padding == "same":
        return [same_padding(n, k, stride) for n, k in zip(image_shape, kernel_shape)]
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool) and padding >= 0:
        return [(int(padding), int(padding))] * 2
    raise ValueError(f"padding must be 'valid', 'same' or a non-negative integer, got {padding!r}")


def convolve2d(image: np.ndarray, kernel: np.ndarray, stride: int = 1,
               padding: Padding = "valid") -> np.ndarray:
    """Slide one kernel over one single-channel image: the guide's 2-D convolution.

    Strictly this is cross-correlation: the kernel is not flipped, which is what PyTorch,
    TensorFlow and every other deep learning framework compute under the name "convolution"
    (flipping would make no difference to a learned kernel). Each output pixel is the sum of the
    element-wise product of the kernel and the image window under it.

    Args:
        image: (H, W) array.
        kernel: (kh, kw) array.
        stride: Step between windows, in pixels, along both axes.
        padding: "valid" (no padding; output floor((H - kh) / stride) + 1), "same" (odd kernels;
            output ceil(H / stride)) or an integer number of zeros added on every side.

    Returns:
        (H_out, W_out) float64 array.

    Raises:
        ValueError: For arrays that are not 2-D, a bad stride or padding, an even kernel with
            "same", or a kernel larger than the padded image.
    """
    image = np.asarray(image, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    if image.ndim != 2 or kernel.ndim != 2:
        raise ValueError(f"convolve2d takes a 2-D image and a 2-D kernel, got shapes {image.shape} "
                         f"and {kernel.shape}; use conv2d for channels and batches")
    _check_stride(stride)
    (top, bottom), (left, right) = _padding_per_axis(padding, image.shape, kernel.shape, stride)
    padded = np.pad(image, ((top, bottom), (left, right)))  # zeros around the border

    kernel_height, kernel_width = kernel.shape
    padded_height, padded_width = padded.shape
    if kernel_height > padded_height or kernel_width > padded_width:
        raise ValueError(f"kernel {kernel.shape} is larger than the padded image {padded.shape}; "
                         "use a smaller kernel or more padding")
    output_height = (padded_height - kernel_height) // stride + 1
    output_width = (padded_width - kernel_width) // stride + 1

    output = np.zeros((output_height, output_width))
    for i in range(output_height):
        for j in range(output_width):
            row, col = i * stride, j * stride
            window = padded[row:row + kernel_height, col:col + kernel_width]
            output[i, j] = np.sum(window * kernel)
    return output


def conv2d(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None = None, stride: int = 1,
           padding: Padding = "valid") -> np.ndarray:
    """A convolutional layer: several filters, each spanning every input channel.

    Filter f is a stack of C kernels, one per input channel; its output map is the sum of the C
    single-channel convolutions plus the filter's bias. Same layout as torch.nn.functional.conv2d.

    Args:
        x: (C, H, W) or (N, C, H, W) input.
        weights: (F, C, kh, kw) filters.
        bias: (F,) biases, or None.
        stride: Step between windows along both axes.
        padding: "valid", "same" (odd kernels) or an integer; see `convolve2d`.

    Returns:
        (F, H_out, W_out), or (N, F, H_out, W_out) for a batched input; float64.

    Raises:
        ValueError: For mismatched shapes, or any error `convolve2d` raises.
    """
    x = np.asarray(x, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    unbatched = x.ndim == 3
    if unbatched:
        x = x[np.newaxis]  # (C, H, W) -> (1, C, H, W)
    if x.ndim != 4 or weights.ndim != 4:
        raise ValueError(f"conv2d takes x (C, H, W) or (N, C, H, W) and weights (F, C, kh, kw), "
                         f"got shapes {x.shape} and {weights.shape}")
    batch_size, channels = x.shape[:2]
    num_filters = weights.shape[0]
    if weights.shape[1] != channels:
        raise ValueError(f"weights expect {weights.shape[1]} input channels, x has {channels}")
    if bias is not None:
        bias = np.asarray(bias, dtype=np.float64)
        if bias.shape != (num_filters,):
            raise ValueError(f"bias must have shape ({num_filters},), got {bias.shape}")

    outputs = []
    for n in range(batch_size):
        feature_maps = []
        for f in range(num_filters):
            feature_map = sum(convolve2d(x[n, c], weights[f, c], stride, padding) for c in range(channels))
            if bias is not None:
                feature_map = feature_map + bias[f]
            feature_maps.append(feature_map)
        outputs.append(np.stack(feature_maps))  # (F, H_out, W_out)
    output = np.stack(outputs)  # (N, F, H_out, W_out)
    return output[0] if unbatched else output


# --------------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------------

def _pool(x: np.ndarray, size: int, stride: int | None, reduce, name: str) -> np.ndarray:
    """Apply `reduce` to every size x size window of the last two axes."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"{name} takes (H, W), (C, H, W) or (N, C, H, W), got shape {x.shape}")
    stride = size if stride is None else stride
    _check_stride(size)
    _check_stride(stride)
    height, width = x.shape[-2:]
    if size > height or size > width:
        raise ValueError(f"{name} window {size}x{size} is larger than the input {height}x{width}")
    output_height = (height - size) // stride + 1  # floor mode: a ragged edge is dropped
    output_width = (width - size) // stride + 1

    output = np.zeros(x.shape[:-2] + (output_height, output_width))
    for i in range(output_height):
        for j in range(output_width):
            row, col = i * stride, j * stride
            window = x[..., row:row + size, col:col + size]
            output[..., i, j] = reduce(window, axis=(-2, -1))  # every channel at once
    return output


def max_pool(x: np.ndarray, size: int = 2, stride: int | None = None) -> np.ndarray:
    """Keep the largest value of each size x size window.

    Args:
        x: (H, W), (C, H, W) or (N, C, H, W); the last two axes are pooled.
        size: Window side.
        stride: Step between windows; defaults to `size` (non-overlapping windows).

    Returns:
        Same leading axes, spatial size floor((H - size) / stride) + 1; float64.

    Raises:
        ValueError: For a bad shape, size or stride, or a window larger than the input.
    """
    return _pool(x, size, stride, np.max, "max_pool")


def avg_pool(x: np.ndarray, size: int = 2, stride: int | None = None) -> np.ndarray:
    """Average each size x size window. Arguments, shapes and errors as in `max_pool`."""
    return _pool(x, size, stride, np.mean, "avg_pool")


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    """Average each feature map to one number: (..., H, W) -> (...).

    torch's adaptive_avg_pool2d(x, 1) gives the same values with two trailing axes of size 1.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"global_avg_pool needs at least (H, W), got shape {x.shape}")
    return x.mean(axis=(-2, -1))


# --------------------------------------------------------------------------------------------
# Activations
# --------------------------------------------------------------------------------------------

def relu(x: np.ndarray) -> np.ndarray:
    """max(x, 0): negatives become zero."""
    return np.maximum(np.asarray(x, dtype=np.float64), 0.0)


def leaky_relu(x: np.ndarray, slope: float = 0.01) -> np.ndarray:
    """x for x > 0, slope * x otherwise: negatives keep a small gradient."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, x, slope * x)


_erf = np.vectorize(math.erf, otypes=[np.float64])  # NumPy has no erf; math.erf is exact enough


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """Gaussian Error Linear Unit: x * Phi(x), Phi the standard normal CDF.

    Exact form: 0.5 * x * (1 + erf(x / sqrt(2))). The tanh approximation from the GELU paper,
    0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3))), is what BERT and GPT-2 used and
    what torch computes with approximate="tanh"; it differs from the exact form by under 1e-3.

    Args:
        x: Any shape.
        approximate: "none" for the erf form, "tanh" for the approximation.
    """
    x = np.asarray(x, dtype=np.float64)
    if approximate == "none":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), written so that exp never overflows for large |x|."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))  # in (0, 1]
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def swish(x: np.ndarray) -> np.ndarray:
    """x * sigmoid(x), also called SiLU (torch.nn.SiLU)."""
    x = np.asarray(x, dtype=np.float64)
    return x * sigmoid(x)


# --------------------------------------------------------------------------------------------
# Classifier head
# --------------------------------------------------------------------------------------------

def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Fully connected layer: every output is a weighted sum of every input, plus a bias.

    Args:
        x: (..., in_features), e.g. (N, in_features) after flattening.
        weight: (out_features, in_features), PyTorch's layout.
        bias: (out_features,), or None.

    Returns:
        (..., out_features) float64 array: x @ weight.T + bias.
    """
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    if weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear expects x (..., in) and weight (out, in), got {x.shape} and {weight.shape}")
    output = x @ weight.T
    if bias is not None:
        output = output + np.asarray(bias, dtype=np.float64)
    return output


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Turn scores into probabilities that sum to 1 along `axis`.

    Subtracting the maximum first leaves the result unchanged (it cancels between numerator and
    denominator) and keeps exp from overflowing for large scores.
    """
    x = np.asarray(x, dtype=np.float64)
    shifted = x - np.max(x, axis=axis, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / np.sum(exponentials, axis=axis, keepdims=True)
