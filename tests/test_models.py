"""Model contracts, generated from the registry: every registered builder gets the same checks.

Builder contract: keyword arguments num_classes, in_chans, input_size; forward takes (B, in_chans, H, W)
floats and returns logits (B, num_classes), in train and eval mode alike.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cnnkit.errors import ModelError
from cnnkit.layers import ConvBnAct, DropPath, drop_path_rates
from cnnkit.models.resnet_cifar import CifarResNet, WideResNet
from cnnkit.registry import create_model, get_entry, list_models, register_model

torch.set_num_threads(1)  # the test machines have 2 shared cores

NUM_CLASSES = 7
# Models whose forward/backward test takes more than ~2 s on one CPU thread are listed here and run only
# with `-m slow`. None is, so far: the largest, wrn28_10 (36.5M parameters), measured 1.3 s for
# build + forward + backward at batch 2, 28x28 (2-core CI machine, one thread).
SLOW_MODELS: set[str] = set()


def _model_params(names: list[str]) -> list:
    return [pytest.param(name, marks=pytest.mark.slow if name in SLOW_MODELS else (), id=name)
            for name in names]


# cnnkit's own models. The zoo of torchvision/timm models (ImageNet-sized, ~60 of them) has its own
# registry-generated tests in test_zoo.py, which keep the default run fast with the meta device.
ALL_MODELS = _model_params([name for name in list_models(task="classify") if get_entry(name).source == "cnnkit"])


def _count_parameters(name: str, **kwargs) -> int:
    with torch.device("meta"):  # no memory, no init cost: counting only
        model = create_model(name, **kwargs)
    return sum(parameter.numel() for parameter in model.parameters())


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(module for module in model.modules() if isinstance(module, nn.Conv2d))


# --- generated from the registry -------------------------------------------------------------------

@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_backward(name: str, in_chans: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, in_chans=in_chans, input_size=28).train()
    images = torch.randn(2, in_chans, 28, 28)
    logits = model(images)
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([0, NUM_CLASSES - 1])).backward()
    first_conv = _first_conv(model)
    assert first_conv.in_channels == in_chans
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_eval_forward_is_deterministic_at_32x32(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, in_chans=3, input_size=32).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        first, second = model(images), model(images)
    assert first.shape == (2, NUM_CLASSES)
    assert torch.equal(first, second)


@pytest.mark.parametrize("name", list_models())
def test_registry_entry_documents_the_model(name: str) -> None:
    entry = get_entry(name)
    assert entry.description, f"{name}: the builder's docstring needs a one-line description"
    assert entry.source in {"cnnkit", "torchvision", "timm"}


# --- parameter counts against the papers -----------------------------------------------------------

@pytest.mark.parametrize("name, in_chans, published, tolerance", [
    ("lenet5", 1, 60_000, 0.05),  # LeCun et al. 1998: "about 60,000" (sparse C3; ours is full: 61,706)
    ("resnet20", 3, 0.27e6, 0.03),  # He et al. 2015, Table 6 (CIFAR-10)
    ("resnet56", 3, 0.85e6, 0.03),
    ("resnet110", 3, 1.7e6, 0.03),
    ("wrn28_10", 3, 36.5e6, 0.01),  # Zagoruyko and Komodakis 2016, results tables
    ("wrn40_4", 3, 8.9e6, 0.01),
])
def test_parameter_count_matches_paper(name: str, in_chans: int, published: float, tolerance: float) -> None:
    count = _count_parameters(name, num_classes=10, in_chans=in_chans, input_size=32)
    assert abs(count - published) <= tolerance * published, f"{name}: {count:,} vs published {published:,.0f}"


def test_exact_counts_of_reference_implementations() -> None:
    # LeNet-5 with full C3: C1 156 + C3 2,416 + C5 48,120 + F6 10,164 + output 850.
    assert _count_parameters("lenet5", input_size=32) == 61_706
    # Exact counts (3x32x32, 10 classes) of widely used reimplementations: option A resnet20 269,722,
    # WRN-28-10 36,479,194 (osmr/imgclsmob's wrn28_10_cifar10, among others).
    assert _count_parameters("resnet20", in_chans=3) == 269_722
    assert _count_parameters("wrn28_10", in_chans=3) == 36_479_194
    # option B adds two 1x1 projections + BN: 16*32 + 32*64 weights and 2*(32 + 64) BN parameters.
    assert _count_parameters("resnet20", shortcut="B") - _count_parameters("resnet20") == 2_752


# --- model-specific behaviour ----------------------------------------------------------------------

def test_simple_cnn_flatten_size_follows_input_size() -> None:
    assert create_model("simple_cnn", input_size=32, in_chans=3).num_features == 128 * 4 * 4  # the guide's
    assert create_model("simple_cnn", input_size=28).num_features == 128 * 3 * 3  # 28 -> 14 -> 7 -> 3
    model = create_model("simple_cnn", input_size=(28, 36)).eval()
    assert model(torch.randn(1, 1, 28, 36)).shape == (1, 10)


def test_fixed_size_models_reject_other_sizes_with_a_clear_message() -> None:
    for name in ("simple_cnn", "lenet5"):
        with pytest.raises(ModelError, match=r"built for 28x28 images, got 32x32"):
            create_model(name, input_size=28)(torch.randn(1, 1, 32, 32))
    with pytest.raises(ModelError, match="at least 8 pixels"):
        create_model("simple_cnn", input_size=4)


def test_lenet5_pads_28x28_into_the_32x32_field() -> None:
    torch.manual_seed(0)
    at_28 = create_model("lenet5", input_size=28).eval()
    at_32 = create_model("lenet5", input_size=32).eval()
    at_32.load_state_dict(at_28.state_dict())
    digits = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(at_28(digits), at_32(nn.functional.pad(digits, (2, 2, 2, 2))))
    assert isinstance(at_32.pad, nn.ZeroPad2d) and at_32.pad.padding == (0, 0, 0, 0)


@pytest.mark.parametrize("input_size", [20, 64, (24, 48)])
def test_lenet5_adapts_other_sizes_to_5x5_before_c5(input_size) -> None:
    model = create_model("lenet5", input_size=input_size, activation="relu").eval()
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    assert model(torch.randn(1, 1, height, width)).shape == (1, 10)


def test_resnet_options_and_stochastic_depth_schedule() -> None:
    model = create_model("resnet20", shortcut="B", drop_rate=0.2, drop_path_rate=0.1)
    rates = [module.drop_prob for module in model.modules() if isinstance(module, DropPath)]
    assert rates == pytest.approx([0.1 * index / 9 for index in range(1, 10)])
    assert sum(isinstance(module, ConvBnAct) and module.conv.kernel_size == (1, 1)
               for module in model.modules()) == 2  # the two option B projections
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    wide = create_model("wrn16_4", drop_rate=0.3, drop_path_rate=0.2)
    wide_rates = [module.drop_prob for module in wide.modules() if isinstance(module, DropPath)]
    assert len(wide_rates) == 6 and wide_rates[-1] == pytest.approx(0.2)
    with pytest.raises(ModelError, match="6n \\+ 2"):
        CifarResNet(depth=21)
    with pytest.raises(ModelError, match="6n \\+ 4"):
        WideResNet(depth=27)
    with pytest.raises(ModelError, match="shortcut"):
        create_model("resnet20", shortcut="C")


def test_layers() -> None:
    block = ConvBnAct(3, 8, kernel_size=5, stride=2)
    assert block.conv.bias is None and block.conv.padding == (2, 2)
    assert block(torch.randn(1, 3, 15, 15)).shape == (1, 8, 8, 8)  # "same": ceil(15 / 2)
    assert ConvBnAct(3, 8, norm=False).conv.bias is not None
    with pytest.raises(ModelError, match="odd kernel"):
        ConvBnAct(3, 8, kernel_size=2)
    assert drop_path_rates(0.0, 3) == [0.0, 0.0, 0.0]
    with pytest.raises(ModelError, match="drop_path_rate"):
        drop_path_rates(1.0, 3)


# --- registry --------------------------------------------------------------------------------------

def test_registry_rejects_duplicate_names() -> None:
    def resnet20(**kwargs):
        """An impostor."""

    with pytest.raises(ModelError, match="'resnet20' is registered twice"):
        register_model(family="resnet_cifar")(resnet20)
    assert get_entry("resnet20").description.startswith("ResNet-20")  # the original is untouched


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(ModelError, match=r"unknown model 'resnet21'\. Did you mean .*resnet20"):
        create_model("resnet21")


def test_bad_arguments_raise_model_error() -> None:
    with pytest.raises(ModelError, match="does not accept"):
        create_model("resnet20", not_an_argument=1)
    with pytest.raises(ModelError, match="num_classes"):
        create_model("lenet5", num_classes=0)
    with pytest.raises(ModelError, match="input_size"):
        create_model("simple_cnn", input_size=(28,))



def test_fastnet_act_relu_swaps_every_activation_and_bad_names_are_refused():
    import torch.nn as nn

    from cnnkit import create_model
    from cnnkit.errors import ModelError

    relu = create_model("fastnet", num_classes=10, in_chans=1, input_size=28, act="relu")
    kinds = {type(module) for module in relu.modules() if isinstance(module, (nn.GELU, nn.ReLU))}
    assert kinds == {nn.ReLU}
    assert {type(m) for m in create_model("fastnet").modules() if isinstance(m, (nn.GELU, nn.ReLU))} == {nn.GELU}
    with pytest.raises(ModelError, match="act='swish'"):
        create_model("fastnet", act="swish")
