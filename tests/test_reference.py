"""cnnkit's PyTorch ops against the from-scratch NumPy reference (cnnkit.reference), and the reference
against the guide's worked examples computed by hand.

Comparisons run in float64 on both sides, to ATOL = 1e-5; sizes stay small because the reference loops.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.layers.conv import ConvBnAct
from cnnkit.reference import (
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

ATOL = 1e-5


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _torch(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, dtype=np.float64))


def _assert_close(reference: np.ndarray, actual: torch.Tensor) -> None:
    actual = actual.detach().numpy()
    assert reference.shape == actual.shape
    np.testing.assert_allclose(reference, actual, rtol=0, atol=ATOL)


# --------------------------------------------------------------------------------------------
# The guide's worked examples
# --------------------------------------------------------------------------------------------

GUIDE_IMAGE = np.array([[1, 2, 3, 0, 1],
                        [0, 1, 2, 3, 1],
                        [1, 0, 1, 2, 3],
                        [2, 1, 0, 1, 2],
                        [3, 2, 1, 0, 1]])
VERTICAL_EDGE = np.array([[1, 0, -1],
                          [1, 0, -1],
                          [1, 0, -1]])
# Each output is (left column sum - right column sum) of a 3x3 window. Column sums of rows 0-2 are
# [2, 3, 6, 5, 5], so row 0 is [2-6, 3-5, 6-5]; rows 1-3 give [3, 2, 3, 6, 6] -> [3-3, 2-6, 3-6];
# rows 2-4 give [6, 3, 2, 3, 6] -> [6-2, 3-3, 2-6].
GUIDE_EDGES = np.array([[-4, -2, 1],
                        [0, -4, -3],
                        [4, 0, -4]])

POOL_INPUT = np.array([[1, 3, 2, 4],
                       [5, 6, 1, 2],
                       [7, 2, 8, 1],
                       [3, 4, 6, 5]])
# max of each 2x2 block: max(1,3,5,6)=6, max(2,4,1,2)=4, max(7,2,3,4)=7, max(8,1,6,5)=8.
POOL_MAX = np.array([[6, 4], [7, 8]])
# mean of the same blocks: 15/4, 9/4, 16/4, 20/4.
POOL_MEAN = np.array([[3.75, 2.25], [4.0, 5.0]])


def test_guide_convolve2d_example():
    np.testing.assert_array_equal(convolve2d(GUIDE_IMAGE, VERTICAL_EDGE), GUIDE_EDGES)
    torch_result = F.conv2d(_torch(GUIDE_IMAGE)[None, None], _torch(VERTICAL_EDGE)[None, None])
    np.testing.assert_array_equal(torch_result[0, 0].numpy(), GUIDE_EDGES)


def test_small_convolution_by_hand():
    image = np.arange(16).reshape(4, 4)  # rows [0..3], [4..7], [8..11], [12..15]
    kernel = np.array([[1, 0], [0, -1]])  # top-left minus bottom-right: always 0 - 5 = -5
    np.testing.assert_array_equal(convolve2d(image, kernel), np.full((3, 3), -5))
    # stride 2 keeps windows at (0,0), (0,2), (2,0), (2,2); a [[1,1],[1,1]] kernel sums them:
    # 0+1+4+5=10, 2+3+6+7=18, 8+9+12+13=42, 10+11+14+15=50.
    np.testing.assert_array_equal(convolve2d(image, np.ones((2, 2)), stride=2), [[10, 18], [42, 50]])


def test_guide_max_pool_example():
    np.testing.assert_array_equal(max_pool(POOL_INPUT, size=2), POOL_MAX)
    torch_result = nn.MaxPool2d(2)(_torch(POOL_INPUT)[None, None])
    np.testing.assert_array_equal(torch_result[0, 0].numpy(), POOL_MAX)


def test_guide_avg_pool_example():
    np.testing.assert_array_equal(avg_pool(POOL_INPUT, size=2), POOL_MEAN)
    np.testing.assert_array_equal(F.avg_pool2d(_torch(POOL_INPUT)[None, None], 2)[0, 0].numpy(), POOL_MEAN)


def test_convolution_is_cross_correlation_not_flipped():
    image = np.zeros((3, 3))
    image[1, 1] = 1.0  # an impulse returns the kernel rotated by 180 degrees under cross-correlation
    kernel = np.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(convolve2d(image, kernel, padding="same"), kernel[::-1, ::-1])


# --------------------------------------------------------------------------------------------
# Convolution against torch
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("padding", ["valid", "same", 0, 1, 2])
def test_convolve2d_matches_torch(rng, padding):
    image, kernel = rng.normal(size=(7, 6)), rng.normal(size=(3, 3))
    expected = F.conv2d(_torch(image)[None, None], _torch(kernel)[None, None], padding=padding)[0, 0]
    _assert_close(convolve2d(image, kernel, padding=padding), expected)


@pytest.mark.parametrize("padding", ["valid", "same", 1])
@pytest.mark.parametrize("batched", [False, True])
def test_conv2d_matches_torch_channels_filters_bias(rng, padding, batched):
    x = rng.normal(size=(2, 3, 7, 8))
    weights, bias = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    expected = F.conv2d(_torch(x), _torch(weights), _torch(bias), padding=padding)
    if batched:
        _assert_close(conv2d(x, weights, bias, padding=padding), expected)
    else:
        _assert_close(conv2d(x[0], weights, bias, padding=padding), expected[0])


@pytest.mark.parametrize("kernel_size,padding", [(3, 0), (3, 1), (5, 2), (2, 0), (1, 0)])
def test_conv2d_stride_2_matches_torch(rng, kernel_size, padding):
    x = rng.normal(size=(1, 2, 9, 8))
    weights = rng.normal(size=(3, 2, kernel_size, kernel_size))
    expected = F.conv2d(_torch(x), _torch(weights), stride=2, padding=padding)
    _assert_close(conv2d(x, weights, stride=2, padding=padding), expected)


@pytest.mark.parametrize("size", [8, 9])
def test_same_padding_with_stride_matches_explicit_tensorflow_split(rng, size):
    # 'same' at stride 2 gives ceil(n / 2) outputs; an odd total padding puts the extra zero after
    # (bottom/right), as TensorFlow does. torch has no strided 'same', so pad explicitly with F.pad.
    x, weights = rng.normal(size=(1, 2, size, size)), rng.normal(size=(3, 2, 3, 3))
    before, after = same_padding(size, 3, stride=2)
    assert (before, after) == ((0, 1) if size == 8 else (1, 1))
    padded = F.pad(_torch(x), (before, after, before, after))
    expected = F.conv2d(padded, _torch(weights), stride=2)
    result = conv2d(x, weights, stride=2, padding="same")
    assert result.shape[-2:] == (-(-size // 2),) * 2
    _assert_close(result, expected)


def test_nn_conv2d_as_cnnkit_uses_it(rng):
    torch.manual_seed(0)
    x = rng.normal(size=(2, 3, 6, 6))
    for module, padding in [(nn.Conv2d(3, 4, 3, padding="same"), "same"),
                            (nn.Conv2d(3, 4, 5, padding=5 // 2), 5 // 2),
                            (nn.Conv2d(3, 4, 3, stride=2, padding=1), 1)]:
        module = module.double()
        reference = conv2d(x, module.weight.detach().numpy(), module.bias.detach().numpy(),
                           stride=module.stride[0], padding=padding)
        _assert_close(reference, module(_torch(x)))


def test_cnnkit_conv_layer_matches_reference(rng):
    torch.manual_seed(0)
    layer = ConvBnAct(3, 4, kernel_size=3, padding="same", norm=False, act_layer=None).double()
    x = rng.normal(size=(2, 3, 5, 5))
    conv = layer.conv
    reference = conv2d(x, conv.weight.detach().numpy(), conv.bias.detach().numpy(), padding="same")
    _assert_close(reference, layer(_torch(x)))


def test_float32_torch_agrees_to_1e_5(rng):
    x, weights = rng.normal(size=(1, 3, 8, 8)), rng.normal(size=(2, 3, 3, 3))
    expected = F.conv2d(torch.from_numpy(x).float(), torch.from_numpy(weights).float(), padding=1)
    np.testing.assert_allclose(conv2d(x, weights, padding=1), expected.double().numpy(), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Pooling against torch
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size,stride", [(2, None), (3, None), (3, 2), (2, 1)])
@pytest.mark.parametrize("shape", [(7, 6), (3, 7, 6), (2, 3, 7, 6)])
def test_pooling_matches_torch(rng, size, stride, shape):
    x = rng.normal(size=shape)
    batched = _torch(x).reshape((-1,) + shape[-3:] if len(shape) > 2 else (1, 1) + shape)
    for reference_op, torch_op in [(max_pool, F.max_pool2d), (avg_pool, F.avg_pool2d)]:
        expected = torch_op(batched, size, stride=stride).reshape(reference_op(x, size, stride).shape)
        _assert_close(reference_op(x, size, stride), expected)


def test_nn_max_pool2d_as_cnnkit_uses_it(rng):
    x = rng.normal(size=(2, 3, 7, 7))  # odd size: floor mode drops the last row and column
    result = max_pool(x, 2)
    assert result.shape == (2, 3, 3, 3)
    _assert_close(result, nn.MaxPool2d(2)(_torch(x)))


def test_global_avg_pool_matches_adaptive_avg_pool(rng):
    x = rng.normal(size=(2, 3, 5, 4))
    _assert_close(global_avg_pool(x), F.adaptive_avg_pool2d(_torch(x), 1).flatten(1))
    _assert_close(global_avg_pool(x), nn.AdaptiveAvgPool2d(1)(_torch(x))[..., 0, 0])


# --------------------------------------------------------------------------------------------
# Activations, fully connected layer and softmax against torch
# --------------------------------------------------------------------------------------------

ACTIVATION_INPUT = np.linspace(-6.0, 6.0, 121)  # includes 0 and both tails


@pytest.mark.parametrize("reference_op,torch_op", [
    (relu, F.relu),
    (leaky_relu, F.leaky_relu),
    (lambda x: leaky_relu(x, slope=0.2), lambda x: F.leaky_relu(x, 0.2)),
    (gelu, F.gelu),
    (lambda x: gelu(x, approximate="tanh"), lambda x: F.gelu(x, approximate="tanh")),
    (swish, F.silu),
    (sigmoid, torch.sigmoid),
])
def test_activations_match_torch(rng, reference_op, torch_op):
    for x in (ACTIVATION_INPUT, rng.normal(size=(2, 3, 4)) * 3):
        _assert_close(reference_op(x), torch_op(_torch(x)))


def test_activation_modules_match_torch():
    x = _torch(ACTIVATION_INPUT)
    _assert_close(relu(ACTIVATION_INPUT), nn.ReLU()(x))
    _assert_close(gelu(ACTIVATION_INPUT), nn.GELU()(x))
    _assert_close(swish(ACTIVATION_INPUT), nn.SiLU()(x))


def test_sigmoid_and_softmax_do_not_overflow():
    with np.errstate(over="raise"):
        np.testing.assert_array_equal(sigmoid(np.array([-1000.0, 1000.0])), [0.0, 1.0])
        np.testing.assert_allclose(softmax(np.array([1000.0, 1000.0])), [0.5, 0.5])


def test_linear_matches_torch(rng):
    torch.manual_seed(0)
    layer = nn.Linear(6, 4).double()
    x = rng.normal(size=(3, 6))
    weight, bias = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    _assert_close(linear(x, weight, bias), layer(_torch(x)))
    _assert_close(linear(x, weight), F.linear(_torch(x), _torch(weight)))


@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_matches_torch(rng, axis):
    x = rng.normal(size=(3, 5, 4)) * 5
    result = softmax(x, axis=axis)
    _assert_close(result, F.softmax(_torch(x), dim=axis))
    np.testing.assert_allclose(result.sum(axis=axis), 1.0)


# --------------------------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------------------------

def test_even_kernel_with_same_padding_raises():
    with pytest.raises(ValueError, match="padding='same' needs an odd kernel size, got 2"):
        convolve2d(np.zeros((4, 4)), np.ones((2, 2)), padding="same")
    with pytest.raises(ValueError, match="odd kernel size, got 4"):
        conv2d(np.zeros((1, 6, 6)), np.ones((1, 1, 4, 4)), padding="same")


def test_stride_larger_than_input_keeps_only_first_window(rng):
    image, kernel = rng.normal(size=(5, 5)), rng.normal(size=(3, 3))
    result = convolve2d(image, kernel, stride=10)
    assert result.shape == (1, 1)
    assert result[0, 0] == pytest.approx(np.sum(image[:3, :3] * kernel))
    _assert_close(result, F.conv2d(_torch(image)[None, None], _torch(kernel)[None, None], stride=10)[0, 0])
    # 'same' still gives ceil(5 / 10) = 1 output, its window centred on pixel (0, 0).
    assert convolve2d(image, kernel, stride=10, padding="same").shape == (1, 1)

    x = rng.normal(size=(1, 2, 4, 4))
    pooled = max_pool(x, size=2, stride=8)
    np.testing.assert_array_equal(pooled, x[..., :2, :2].max(axis=(-2, -1), keepdims=True))
    _assert_close(pooled, F.max_pool2d(_torch(x), 2, stride=8))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="larger than the padded image"):
        convolve2d(np.zeros((2, 2)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        convolve2d(np.zeros((4, 4)), np.ones((3, 3)), stride=0)
    with pytest.raises(ValueError, match="padding must be 'valid', 'same' or a non-negative integer"):
        convolve2d(np.zeros((4, 4)), np.ones((3, 3)), padding="full")
    with pytest.raises(ValueError, match="expect 2 input channels, x has 3"):
        conv2d(np.zeros((3, 4, 4)), np.ones((1, 2, 3, 3)))
    with pytest.raises(ValueError, match="window 3x3 is larger than the input 2x2"):
        max_pool(np.zeros((2, 2)), size=3)
