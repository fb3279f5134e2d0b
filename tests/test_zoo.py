"""The model zoo (torchvision and timm architectures behind cnnkit's registry), generated from the registry.

Default run: every zoo model is built on the meta device (shapes only, no memory, no arithmetic) and run at
28x28 grayscale and 32x32 RGB; the cheapest member of each family also runs forward and backward for real.
`-m slow` runs every zoo model for real. Parameter counts at the papers' configuration (3x224x224, 1000
classes) are checked against the published values on the meta device.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm

from cnnkit.errors import ModelError
from cnnkit.models.adapt import load_rgb_state_dict
from cnnkit.models.googlenet import AUX_LOSS_WEIGHT, auxiliary_loss
from cnnkit.registry import create_model, get_entry, list_models

torch.set_num_threads(1)  # the test machines have 2 shared cores

NUM_CLASSES = 7
ZOO = [name for name in list_models(task="classify") if get_entry(name).source != "cnnkit"]
# Run for real by default: the cheapest member of each family (RegNet X and Y, MobileNet V2 and V3 each),
# each measured at < 1 s for build + forward + backward (batch 2, 28x28, one thread, 2-core machine).
# AlexNet (3.9 s) and the VGGs (1.6-5 s) spend it initialising and differentiating their 100M+-parameter
# classifiers, so they run for real only with -m slow, like the remaining members of every family.
REAL_BY_DEFAULT = {
    "coatnet_0_224", "convnext_tiny", "densenet121", "efficientnet_b0", "ghostnet_100", "googlenet",
    "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf", "regnet_y_400mf", "resnet18",
    "shufflenet_v2_x0_5", "swin_t", "vit_small_patch16_224",
}
# What the issue asks for, by registry name: (family, source).
REQUIRED = {
    "alexnet": ("alexnet", "torchvision"), "vgg16": ("vgg", "torchvision"), "vgg16_bn": ("vgg", "torchvision"),
    "googlenet": ("googlenet", "torchvision"), "resnet50": ("resnet", "torchvision"),
    "densenet121": ("densenet", "torchvision"), "efficientnet_b0": ("efficientnet", "torchvision"),
    "efficientnet_b7": ("efficientnet", "torchvision"), "vit_b_16": ("vit", "torchvision"),
    "vit_small_patch16_224": ("vit", "timm"), "convnext_tiny": ("convnext", "torchvision"),
    "convnext_base": ("convnext", "torchvision"), "coatnet_0_224": ("coatnet", "timm"),
    "coatnet_1_224": ("coatnet", "timm"), "swin_t": ("swin", "torchvision"), "swin_b": ("swin", "torchvision"),
    "mobilenet_v2": ("mobilenet", "torchvision"), "mobilenet_v3_large": ("mobilenet", "torchvision"),
    "shufflenet_v2_x1_0": ("shufflenet", "torchvision"), "ghostnet_100": ("ghostnet", "timm"),
    "regnet_x_400mf": ("regnet", "torchvision"), "regnet_y_400mf": ("regnet", "torchvision"),
    "nasnetalarge": ("nasnet", "timm"), "lenet5": ("lenet", "cnnkit"),
}


def _meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):  # no memory, no init cost: shapes only
        return create_model(name, **kwargs)


def _count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(module for module in model.modules() if isinstance(module, nn.Conv2d))


def test_the_zoo_has_every_architecture_the_issue_names() -> None:
    for name, (family, source) in REQUIRED.items():
        entry = get_entry(name)
        assert (entry.family, entry.source) == (family, source), name
    assert {n for n in ZOO if n.startswith("vgg")} == {f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")}
    assert set(list_models("efficientnet")) == {f"efficientnet_b{i}" for i in range(8)}
    assert set(list_models("resnet")) == {f"resnet{d}" for d in (18, 34, 50, 101, 152)}
    assert set(list_models("densenet")) == {"densenet121", "densenet169", "densenet201"}
    assert set(list_models("swin")) == {"swin_t", "swin_s", "swin_b"}
    torchvision_regnets = {name for name in tvm.list_models() if name.startswith("regnet_")}
    assert set(list_models("regnet")) == torchvision_regnets and len(torchvision_regnets) == 15
    assert len(list_models("shufflenet")) == 4


# --- parameter counts at the papers' configuration --------------------------------------------------

@pytest.mark.parametrize("name, published, kwargs", [
    ("alexnet", 61.1e6, {}),  # Krizhevsky et al. 2012 (torchvision's single-tower version)
    ("vgg16", 138.4e6, {}),  # Simonyan and Zisserman 2015, Table 2 (configuration D: 138M)
    ("googlenet", 6.6e6, {"aux_logits": False}),  # Szegedy et al. 2015 (the inference network)
    ("resnet50", 25.6e6, {}),  # He et al. 2016
    ("densenet121", 8.0e6, {}),  # Huang et al. 2017
    ("efficientnet_b0", 5.3e6, {}),  # Tan and Le 2019, Table 2
    ("efficientnet_b7", 66.3e6, {}),  # ... 66M
    ("vit_b_16", 86.6e6, {}),  # Dosovitskiy et al. 2021, Table 1: 86M
    ("convnext_tiny", 28.6e6, {}),  # Liu et al. 2022: 28M
    ("swin_t", 28.3e6, {}),  # Liu et al. 2021: 29M
    ("mobilenet_v2", 3.5e6, {}),  # Sandler et al. 2018, Table 4: 3.4M
    ("mobilenet_v3_large", 5.5e6, {}),  # Howard et al. 2019: 5.4M
    ("shufflenet_v2_x1_0", 2.3e6, {}),  # Ma et al. 2018, Table 5: 2.3M
    ("ghostnet_100", 5.2e6, {}),  # Han et al. 2020
    ("regnet_y_400mf", 4.3e6, {}),  # Radosavovic et al. 2020
    ("coatnet_0_224", 25e6, {}),  # Dai et al. 2021
    ("nasnetalarge", 88.9e6, {}),  # Zoph et al. 2018, Table 2
])
def test_parameter_count_matches_the_paper(name: str, published: float, kwargs: dict) -> None:
    count = _count_parameters(_meta(name, **kwargs))  # defaults: 3 channels, 1000 classes, 224 px
    assert abs(count - published) <= 0.02 * published, f"{name}: {count:,} vs published {published:,.0f}"


def test_default_input_size_builds_the_library_architecture() -> None:
    # The builders that do not call the library's own variant builder: same modules, same shapes.
    def shapes(model: nn.Module) -> dict:
        return {key: tuple(value.shape) for key, value in model.state_dict().items()}

    with torch.device("meta"):
        pairs = [(create_model("swin_t"), tvm.swin_t()), (create_model("vit_b_16"), tvm.vit_b_16()),
                 (create_model("googlenet"), tvm.googlenet(init_weights=True, dropout=0.4)),  # the paper's 0.4
                 (create_model("coatnet_0_224"), timm.create_model("coatnet_0_224"))]
    # torchvision's RegNet builders cannot run on the meta device (see regnet.py): compare on the CPU.
    pairs += [(create_model(name), getattr(tvm, name)()) for name in ("regnet_x_400mf", "regnet_y_400mf")]
    for ours, library in pairs:
        assert shapes(ours) == shapes(library), type(library).__name__
        assert repr(ours) == repr(library)
    swin_rates = [module.p for module in pairs[0][0].modules() if type(module).__name__ == "StochasticDepth"]
    assert max(swin_rates) == pytest.approx(0.2)  # the paper's stochastic depth for Swin-T


# --- generated from the registry: every zoo model at Fashion-MNIST and CIFAR sizes -----------------

@pytest.mark.parametrize("name", ZOO)
def test_small_inputs_and_channels_on_the_meta_device(name: str) -> None:
    gray = _meta(name, num_classes=NUM_CLASSES, in_chans=1, input_size=28).train()
    assert gray(torch.empty(2, 1, 28, 28, device="meta")).shape == (2, NUM_CLASSES)
    assert _first_conv(gray).in_channels == 1
    rgb = _meta(name, num_classes=NUM_CLASSES, in_chans=3, input_size=32).eval()
    assert rgb(torch.empty(2, 3, 32, 32, device="meta")).shape == (2, NUM_CLASSES)


@pytest.mark.parametrize("name", [pytest.param(name, marks=() if name in REAL_BY_DEFAULT else pytest.mark.slow)
                                  for name in ZOO])
def test_forward_backward_on_28x28_grayscale(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=NUM_CLASSES, in_chans=1, input_size=28).train()
    images, targets = torch.randn(2, 1, 28, 28), torch.tensor([0, NUM_CLASSES - 1])
    logits = model(images)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, targets).backward()
    first_conv = _first_conv(model)
    assert first_conv.weight.grad is not None
    if first_conv.weight.grad.abs().sum() == 0:
        # A zero-initialised head (torchvision's ViT, as in the paper) passes no gradient back before its
        # first update: take one step and look again.
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        model.zero_grad()
        F.cross_entropy(model(images), targets).backward()
    assert first_conv.weight.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 1, 28, 28)).shape == (2, NUM_CLASSES)


# --- small-input stems and arguments -----------------------------------------------------------------

def test_small_inputs_keep_full_resolution_in_the_stem() -> None:
    small, paper = _meta("resnet18", input_size=28), _meta("resnet18", input_size=64)
    assert (small.conv1.kernel_size, small.conv1.stride, type(small.maxpool)) == ((3, 3), (1, 1), nn.Identity)
    assert (paper.conv1.kernel_size, paper.conv1.stride, type(paper.maxpool)) == ((7, 7), (2, 2), nn.MaxPool2d)
    assert _meta("vit_b_16", input_size=28).patch_size == 4 and _meta("vit_b_16").patch_size == 16
    assert _meta("vit_b_16", input_size=32, patch_size=8).seq_length == 4 * 4 + 1
    assert _meta("convnext_tiny", input_size=32).features[0][0].stride == (1, 1)
    assert _meta("coatnet_0_224", input_size=28).stem.conv1.padding == (3, 3)  # 28 -> 32: even at every stage


def test_zoo_arguments_are_checked_with_clear_errors() -> None:
    with pytest.raises(ModelError, match="at least 28x28"):
        create_model("resnet18", input_size=16)
    with pytest.raises(ModelError, match="patch size 16 divides"):
        create_model("vit_b_16", input_size=100)
    with pytest.raises(ModelError, match="multiples of 32"):
        create_model("coatnet_0_224", input_size=100)
    with pytest.raises(ModelError, match="does not accept"):
        create_model("resnet18", drop_rate=0.2)  # torchvision's ResNet has no dropout
    with pytest.raises(ModelError, match="drop_rate must be in"):
        create_model("efficientnet_b0", drop_rate=1.5)
    with pytest.raises(ModelError, match="num_classes"):
        create_model("mobilenet_v2", num_classes=0)


def test_dropout_and_stochastic_depth_reach_the_library_models() -> None:
    def rates(model: nn.Module, kind: str) -> list[float]:
        return [getattr(m, "p", getattr(m, "drop_prob", None)) for m in model.modules() if type(m).__name__ == kind]

    assert _meta("efficientnet_b0").classifier[0].p == 0.2  # the paper's, via torchvision's default
    assert _meta("efficientnet_b7").classifier[0].p == 0.5
    assert _meta("efficientnet_b0", drop_rate=0.3).classifier[0].p == 0.3
    assert 0.09 < max(rates(_meta("efficientnet_b0", drop_path_rate=0.1), "StochasticDepth")) <= 0.1
    assert max(rates(_meta("convnext_tiny"), "StochasticDepth")) == pytest.approx(0.1)
    assert max(rates(_meta("swin_b", drop_path_rate=0.05), "StochasticDepth")) == pytest.approx(0.05)
    assert max(rates(_meta("coatnet_0_224", drop_path_rate=0.2), "DropPath")) == pytest.approx(0.2)
    assert _meta("googlenet").dropout.p == 0.4 and _meta("ghostnet_100", drop_rate=0.1).drop_rate == 0.1
    assert _meta("vgg11", drop_rate=0.1).classifier[2].p == 0.1


@pytest.mark.parametrize("name", ["resnet18", "ghostnet_100", "vit_small_patch16_224"])
def test_rgb_weights_summed_for_grayscale_give_the_rgb_models_output(name: str) -> None:
    torch.manual_seed(0)
    rgb = create_model(name, num_classes=NUM_CLASSES, in_chans=3, input_size=32).eval()  # the "pretrained" model
    gray = create_model(name, num_classes=NUM_CLASSES, in_chans=1, input_size=32).eval()
    load_rgb_state_dict(gray, rgb.state_dict())
    torch.testing.assert_close(_first_conv(gray).weight, _first_conv(rgb).weight.sum(dim=1, keepdim=True))
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(gray(images), rgb(images.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)
    with pytest.raises(ModelError, match="do not fit"):
        load_rgb_state_dict(create_model(name, num_classes=3, in_chans=1, input_size=32), rgb.state_dict())


# --- GoogLeNet's auxiliary classifiers ---------------------------------------------------------------

def test_googlenet_auxiliary_loss_is_weighted_as_in_the_paper() -> None:
    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=NUM_CLASSES, in_chans=1, input_size=28).train()
    images, targets = torch.randn(2, 1, 28, 28), torch.tensor([1, 5])
    logits = model(images)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, NUM_CLASSES)
    aux1, aux2 = model.aux_logits_out
    assert aux1.shape == aux2.shape == (2, NUM_CLASSES)
    expected = AUX_LOSS_WEIGHT * (F.cross_entropy(aux1, targets) + F.cross_entropy(aux2, targets))
    assert AUX_LOSS_WEIGHT == 0.3
    aux = auxiliary_loss(model, targets, F.cross_entropy)
    torch.testing.assert_close(aux, expected)
    assert model.aux_logits_out is None  # read once: the graph it holds is released
    (F.cross_entropy(logits, targets) + aux).backward()
    assert model.aux1.fc2.weight.grad.abs().sum() > 0 and model.aux2.fc2.weight.grad.abs().sum() > 0

    class Wrapper(nn.Module):  # what DistributedDataParallel looks like to the task: the model is .module
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    model(images)
    assert auxiliary_loss(Wrapper(model), targets, F.cross_entropy) is not None
    with torch.no_grad():
        assert model.eval()(images).shape == (2, NUM_CLASSES)
    assert model.aux_logits_out is None and auxiliary_loss(model, targets, F.cross_entropy) is None
    no_aux = create_model("googlenet", num_classes=NUM_CLASSES, in_chans=1, input_size=28, aux_logits=False)
    assert no_aux.train()(images).shape == (2, NUM_CLASSES)
    assert auxiliary_loss(no_aux, targets, F.cross_entropy) is None
    assert auxiliary_loss(create_model("lenet5"), targets, F.cross_entropy) is None


def test_classification_task_adds_googlenet_auxiliary_losses():
    """The task's training loss is main + 0.3 x (aux1 + aux2) in training, and plain in evaluation."""
    import torch.nn.functional as F

    from cnnkit.tasks import ClassificationTask

    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=5, in_chans=1, input_size=28)
    task = ClassificationTask(model, [str(i) for i in range(5)])
    images, targets = torch.randn(2, 1, 28, 28), torch.tensor([0, 3])
    model.train()
    torch.manual_seed(1)
    result = task.training_step(model, images, targets)
    torch.manual_seed(1)
    logits = model(images)
    aux1, aux2 = model.aux_logits_out
    expected = F.cross_entropy(logits, targets) + 0.3 * (F.cross_entropy(aux1, targets) + F.cross_entropy(aux2, targets))
    assert torch.allclose(result["loss"], expected, atol=1e-5)
    model.eval()
    evaluation = task.evaluation_step(model, images, targets)
    assert torch.allclose(evaluation["loss"], F.cross_entropy(model(images), targets, reduction="sum"), atol=1e-4)
