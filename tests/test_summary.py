"""Model summaries: parameter and MAC counts against hand computation, output shapes against a real forward,
and receptive fields against the empirical ones.

The empirical receptive field of a unit is the set of input pixels with a non-zero gradient of that unit.
To make it equal to the theoretical one, every weight is set positive, the input is positive noise,
BatchNorm is the identity (eval mode, unit statistics), max pooling becomes average pooling of the same
window (a max routes the gradient through one pixel only). Sums of positive terms cannot cancel, and the
smallest corner gradients of these depths (about 9**-19 for resnet20) are far above float32's underflow.
The unit is chosen near the centre and the input made large enough that its field does not reach the
border (asserted).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import cnnkit
from cnnkit.cli import main
from cnnkit.errors import ConfigError, ModelError
from cnnkit.inspect import count_macs, parse_input_size, summary
from conftest import run_cli


def _positive(model: nn.Module) -> nn.Module:
    """An eval-mode copy with positive weights, identity BatchNorm and average instead of max pooling."""
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for child_name, child in parent.named_children():
            if isinstance(child, nn.MaxPool2d):
                assert child.dilation == 1
                setattr(parent, child_name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding,
                                                         ceil_mode=child.ceil_mode))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()  # mean 0, variance 1
                module.weight.fill_(1.0)
                module.bias.zero_()
    return model


def _empirical_extents(model: nn.Module, input_size, layer_names, offsets=((0, 0),)) -> dict[str, tuple]:
    """{layer: ((rows, cols) smallest, (rows, cols) largest)}: the extent of the input pixels that reach
    the layer's output unit at each offset from the centre (one offset: smallest == largest).

    With integer strides every interior unit sees the same extent; fractional strides (upsampling) make it
    depend on the unit's alignment, hence several offsets.
    """
    model = _positive(model)
    modules = dict(model.named_modules())
    outputs = {}
    hooks = [modules[name].register_forward_hook(lambda module, args, out, name=name: outputs.__setitem__(name, out))
             for name in layer_names]
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(1, *input_size, generator=generator) + 0.5).requires_grad_()
    model(x)
    for hook in hooks:
        hook.remove()
    extents = {}
    for name in layer_names:
        out = outputs[name]
        found = []
        for dy, dx in offsets:
            unit = out[0, :, out.shape[-2] // 2 + dy, out.shape[-1] // 2 + dx].sum()
            (grad,) = torch.autograd.grad(unit, x, retain_graph=True)
            reached = grad[0].abs().sum(0) > 0
            rows, cols = reached.any(1).nonzero().flatten(), reached.any(0).nonzero().flatten()
            assert rows.min() > 0 and cols.min() > 0 and rows.max() < x.shape[-2] - 1 \
                and cols.max() < x.shape[-1] - 1, f"{name}: the field reaches the border; use a larger input"
            found.append((int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)))
        extents[name] = (tuple(map(min, zip(*found))), tuple(map(max, zip(*found))))
    return extents


def _analytic(model: nn.Module, input_size) -> dict[str, tuple]:
    """{module name: (size, stride)} from the summary; the last call of a module called several times."""
    fields = {}
    for row in summary(model, input_size).rows:
        if row.receptive_field is not None and not row.receptive_field.is_global and len(row.output_shape) == 4:
            fields[row.name] = (row.receptive_field.size, row.receptive_field.stride)
    return fields


def _check_against_gradient(model, input_size, layer_names=None, offsets=((0, 0),)) -> dict[str, tuple]:
    analytic = _analytic(model, input_size)
    layer_names = layer_names or [name for name in analytic if name]
    empirical = _empirical_extents(model, input_size, layer_names, offsets)
    for name in layer_names:
        (size, _), (smallest, largest) = analytic[name], empirical[name]
        assert all(low <= side <= high for low, side, high in zip(smallest, size, largest)), \
            (name, analytic[name], empirical[name])
    return analytic


def _conv(cin, cout, kernel, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, bias=False, **kwargs)


# Receptive fields ---------------------------------------------------------------------------------------

def test_stacked_3x3_convolutions_see_5_then_7_pixels():
    model = nn.Sequential(_conv(1, 4, 3, padding=1), nn.ReLU(), _conv(4, 4, 3, padding=1), nn.ReLU(),
                          _conv(4, 4, 3, padding=1))
    analytic = _check_against_gradient(model, (1, 24, 24))
    assert [analytic[name] for name in ("0", "2", "4")] == [((3, 3), (1, 1)), ((5, 5), (1, 1)), ((7, 7), (1, 1))]


def test_dilated_strided_even_and_rectangular_kernels_match_the_gradient():
    model = nn.Sequential(
        _conv(1, 4, 3, dilation=2, padding=2),  # 1 + 2*2 = 5
        _conv(4, 4, 4, stride=2, padding=1),  # 5 + 3*1 = 8, stride 2
        _conv(4, 4, 1, stride=2),  # 8, stride 4
        _conv(4, 4, 3, dilation=3, padding=3),  # 8 + 2*3*4 = 32
        _conv(4, 4, (1, 3), padding=(0, 1)),  # 32 x (32 + 2*4 = 40)
        nn.AvgPool2d(3, stride=2, padding=1),  # 32 + 2*4 = 40 x 48, stride 8
    )
    analytic = _check_against_gradient(model, (1, 72, 72))
    assert analytic["0"] == ((5, 5), (1, 1))
    assert analytic["3"] == ((32, 32), (4, 4))
    assert analytic["5"] == ((40, 48), (8, 8))


def test_upsampling_and_transposed_convolution_match_the_gradient():
    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = _conv(1, 4, 3, stride=2, padding=1)
            self.mid = _conv(4, 4, 3, padding=1)
            self.up = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1, bias=False)
            self.out = _conv(4, 4, 3, padding=1)

        def forward(self, x):
            x = self.mid(F.interpolate(self.down(x), scale_factor=2, mode="bilinear"))  # fractional strides
            return self.out(self.up(x))

    # With fractional strides the analytic size is the average over unit alignments: the gradient of
    # units at 4 alignments gives 7 or 9 pixels for `up` and `out`, and the analytic 8 and 9 lie in between.
    analytic = _check_against_gradient(Decoder(), (1, 48, 48), offsets=[(0, 0), (1, 1), (2, 2), (3, 3)])
    # down: 3 / 2; bilinear: 3 + 1*2 = 5 / 1; mid: 7 / 1; up: 7 + 1*1 = 8 / 0.5; out: 8 + 2*0.5 = 9 / 0.5
    assert analytic["mid"] == ((7, 7), (1, 1))
    assert analytic["up"] == ((8, 8), (0.5, 0.5))
    assert analytic["out"] == ((9, 9), (0.5, 0.5))


@pytest.mark.parametrize("name, input_size, layers", [
    ("fastnet", (1, 96, 96), None),
    ("simple_cnn", (1, 64, 64), None),
    ("lenet5", (1, 32, 32), ["features.0", "features.2", "features.3", "features.5"]),
])
def test_receptive_fields_of_registered_models_match_the_gradient(name, input_size, layers):
    model = cnnkit.create_model(name, in_chans=input_size[0], input_size=input_size[1:])
    _check_against_gradient(model, input_size, layers)


@pytest.mark.parametrize("shortcut, input_size, layers, expected", [
    ("A", (1, 96, 96), ["stem.act", "stages.1.0.shortcut", "stages.1.0.act", "stages.2.2.act"], ((81, 81), (4, 4))),
    ("B", (1, 64, 64), ["stages.1.0.shortcut.bn", "stages.1.0.act", "stages.1.2.act"], ((37, 37), (2, 2))),
])
def test_residual_network_receptive_fields_match_the_gradient(shortcut, input_size, layers, expected):
    # Where a block adds its shortcut (smaller field) to its branch, the larger field wins.
    model = cnnkit.create_model("resnet20", shortcut=shortcut)
    analytic = _check_against_gradient(model, input_size, layers)
    assert analytic[layers[-1]] == expected  # 3 + 2 * (6 + 2*6 + 4*6) ... the paper's 3x3 stack, strides 1-2-4


def test_known_receptive_fields_lenet5_and_resnet18():
    lenet_fields = _analytic(cnnkit.create_model("lenet5", input_size=32), (1, 32, 32))
    assert lenet_fields["features.3"] == ((14, 14), (2, 2))  # C3
    assert lenet_fields["classifier.0"] == ((32, 32), (4, 4))  # C5 sees the whole 32x32 field
    # ...which the gradient confirms: C5's single unit reaches every input pixel.
    model = _positive(cnnkit.create_model("lenet5", input_size=32))
    x = (torch.rand(1, 1, 32, 32) + 0.5).requires_grad_()
    c5 = model.classifier[0](model.features(x))
    (grad,) = torch.autograd.grad(c5.sum(), x)
    assert c5.shape[-2:] == (1, 1) and bool((grad != 0).all())

    from torchvision.models import resnet18
    with torch.device("meta"):
        model = resnet18()
    fields = _analytic(model, (3, 224, 224))
    assert fields["layer4.1.relu"] == ((435, 435), (32, 32))  # the published value for ResNet-18


def test_global_ops_squeeze_excitation_and_attention():
    class SqueezeExcite(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = _conv(1, 4, 3, padding=1)
            self.gate = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            x = self.conv(x)
            return x * torch.sigmoid(self.gate(x.mean((2, 3), keepdim=True)))  # (B, C, 1, 1) gate

    model = nn.Sequential(SqueezeExcite(), _conv(4, 4, 3, padding=1))
    rows = {row.name: row for row in summary(model, (1, 16, 16)).rows}
    field = rows["1"].receptive_field  # the convolution after the gated map
    assert (field.size, field.global_context, field.size_text()) == ((5, 5), True, "5*")
    assert rows["0.gate"].receptive_field.is_global
    # The gate indeed makes the unit depend on every pixel: the gradient reaches the whole input.
    x = torch.rand(1, 1, 16, 16, requires_grad=True)
    out = _positive(model)(x)
    (grad,) = torch.autograd.grad(out[0, :, 8, 8].sum(), x)
    assert bool((grad != 0).all())

    from timm.models.vision_transformer import VisionTransformer
    vit = VisionTransformer(img_size=32, patch_size=8, in_chans=1, num_classes=10, embed_dim=32, depth=2,
                            num_heads=2)
    result = summary(vit, (1, 32, 32))
    rows = {row.name: row for row in result.rows}
    assert (rows["patch_embed.proj"].receptive_field.size, rows["patch_embed.proj"].receptive_field.stride) \
        == ((8, 8), (8, 8))
    assert rows["blocks.0.norm1"].receptive_field.size == (8, 8)  # LayerNorm over channels, per token
    assert rows["blocks.0.attn.qkv"].receptive_field.size == (8, 8)  # a linear layer on each token
    assert rows["blocks.0.attn.proj"].receptive_field.is_global  # after attention
    assert rows["head"].receptive_field.is_global
    assert result.totals.parameters == sum(p.numel() for p in vit.parameters())
    assert sum(row.parameters for row in result.rows) == result.totals.parameters
    assert not any("underestimated" in note for note in result.notes)


# Parameters, MACs and shapes ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["fastnet", "simple_cnn", "lenet5", "resnet20"])
def test_totals_equal_the_parameter_count_and_the_rows_add_up(name):
    with torch.device("meta"):  # shapes only, no arithmetic: the counts do not depend on the values
        model = cnnkit.create_model(name)
    result = summary(model, (1, 28, 28))
    expected = sum(p.numel() for p in model.parameters())
    assert result.totals.parameters == result.totals.trainable_parameters == expected
    assert sum(row.parameters for row in result.rows) == expected
    assert sum(row.macs for row in result.rows) == result.totals.macs == count_macs(model, (1, 28, 28))
    for depth in (0, 1, 2):
        folded = summary(model, (1, 28, 28), depth=depth)
        assert all(row.depth <= depth for row in folded.rows)
        assert sum(row.parameters for row in folded.rows) == expected
        assert sum(row.macs for row in folded.rows) == result.totals.macs


def test_macs_of_a_convolution_and_a_linear_layer_match_hand_computation():
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)  # 17x17 -> 9x9
    assert count_macs(conv, (3, 17, 17)) == 8 * 3 * 3 * 3 * 9 * 9
    grouped = nn.Conv2d(8, 16, 5, groups=4)  # 12x12 -> 8x8, 2 input channels per group
    assert count_macs(grouped, (8, 12, 12)) == 16 * 2 * 5 * 5 * 8 * 8
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 7))
    assert count_macs(linear, (3, 4, 4)) == 48 * 7
    assert count_macs(conv, (2, 3, 17, 17)) == 2 * 8 * 3 * 3 * 3 * 9 * 9  # an explicit batch of 2

    result = summary(cnnkit.create_model("fastnet"), (1, 28, 28))
    model = cnnkit.create_model("fastnet")
    modules = dict(model.named_modules())
    for row in result.rows:
        module = modules[row.name]
        if isinstance(module, nn.Conv2d):
            kernel = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            assert row.macs == torch.Size(row.output_shape).numel() * kernel, row.name
        elif isinstance(module, nn.Linear):
            assert row.macs == module.in_features * module.out_features
        else:
            assert row.macs == 0, row.name


def test_resnet18_macs_match_torchvision_published_value():
    from torchvision.models import ResNet18_Weights, resnet18

    with torch.device("meta"):  # counts shapes only: no memory, no arithmetic
        model = resnet18()
    published = ResNet18_Weights.IMAGENET1K_V1.meta["_ops"]  # 1.814, torchvision's "GFLOPS" (GMACs)
    assert count_macs(model, (3, 224, 224)) / 1e9 == pytest.approx(published, abs=5e-4)


def test_fastnet_rows_have_the_shapes_of_a_real_forward_in_execution_order():
    model = cnnkit.create_model("fastnet")
    shapes = []
    hooks = [module.register_forward_hook(lambda m, a, out, name=name: shapes.append((name, tuple(out.shape))))
             for name, module in model.named_modules() if not list(module.children())]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    result = summary(model.train(), (1, 28, 28))
    assert [(row.name, row.output_shape) for row in result.rows] == shapes
    assert shapes[0] == ("stem.0", (1, 24, 28, 28)) and shapes[-1] == ("head", (1, 10))
    assert result.totals.output_shape == (1, 10) and result.totals.input_shape == (1, 1, 28, 28)
    assert model.training and all(module.training for module in model.modules())  # mode restored
    assert [row.call for row in result.rows if row.name == "stages.0.act"] == [1, 2]  # GELU called twice


def test_summary_to_dict_and_table():
    result = summary(cnnkit.create_model("lenet5"), (1, 28, 28))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["totals"]["parameters"] == 61_706 and data["totals"]["flops"] == 2 * data["totals"]["macs"]
    c5 = next(row for row in data["rows"] if row["name"] == "classifier.0")
    assert c5["receptive_field"] == {"size": [32, 32], "stride": [4, 4], "global": False, "global_context": False}
    assert c5["output_shape"] == [1, 120, 1, 1] and c5["parameters"] == 16 * 25 * 120 + 120
    lines = result.table().splitlines()
    assert lines[0] == "LeNet5: input 1x1x28x28"
    assert lines[1].split() == ["layer", "type", "output", "shape", "params", "MACs", "RF", "size", "RF", "stride"]
    assert any(line.split()[:4] == ["classifier.0", "Conv2d", "1x120x1x1", "48,120"] for line in lines)
    assert any(line.startswith("total: 61,706 parameters") for line in lines)


def test_bad_arguments_raise_clear_errors():
    for text in ("28x28x", "1x28", "0x28x28", "ax28x28", ""):
        with pytest.raises(ConfigError, match="CxHxW"):
            parse_input_size(text)
    assert parse_input_size("3X224x224") == (3, 224, 224)
    with pytest.raises(ModelError, match=r"input of shape 1x3x28x28.*RuntimeError"):
        summary(nn.Conv2d(1, 4, 3), (3, 28, 28))  # wrong channel count
    with pytest.raises(ConfigError, match="depth"):
        summary(nn.Conv2d(1, 4, 3), (1, 8, 8), depth=-1)


# CLI ----------------------------------------------------------------------------------------------------

def test_cli_summary_prints_the_table_with_totals(capsys):
    assert main(["models", "summary", "fastnet", "--input", "1x28x28"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "fastnet: input 1x1x28x28"
    assert lines[3].split() == ["stem.0", "Conv2d", "1x24x28x28", "216", "169.34K", "3", "1"]
    expected = sum(p.numel() for p in cnnkit.create_model("fastnet").parameters())
    totals = [line for line in lines if line.startswith("total:")]
    assert len(totals) == 1 and totals[0].startswith(f"total: {expected:,} parameters"), totals
    assert "MACs" in totals[0]
    assert lines[lines.index(totals[0]) + 1].split()[:4] == ["input", "1x1x28x28", "->", "output"]

    assert main(["models", "summary", "resnet20", "--input", "3x32x32", "--num-classes", "100", "--json",
                 "--depth", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["input_shape"] == [1, 3, 32, 32] and data["totals"]["output_shape"] == [1, 100]
    assert [row["name"] for row in data["rows"]] == ["stem", "stages", "pool", "dropout", "fc"]


def test_cli_models_flops_prints_gmacs(capsys):
    assert main(["models", "--family", "fastnet", "--flops"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "family", "params", "GMACs"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) >= {"fastnet", "fastnet_wide"}
    macs = count_macs(cnnkit.create_model("fastnet"), (1, 28, 28))
    assert float(rows["fastnet"][3]) == pytest.approx(macs / 1e9, abs=1e-4)
    assert lines[-1].startswith("GMACs: multiply-accumulates per 1x28x28 image")

    assert main(["models", "--family", "lenet", "--input", "1x32x32", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["name"] == "lenet5" and row["input"] == [1, 32, 32] and row["flops"] == 2 * row["macs"]
    assert row["macs"] == count_macs(cnnkit.create_model("lenet5", input_size=32), (1, 32, 32))


@pytest.mark.parametrize("argv, message", [
    (["models", "summary", "fastnet", "--input", "28x28x"], "--input must be CxHxW"),
    (["models", "--input", "28x28x"], "got '28x28x'"),
    (["models", "summary", "fastnett"], "unknown model 'fastnett'. Did you mean fastnet"),
    (["models", "summary", "simple_cnn", "--input", "1x4x4"], "simple_cnn needs input_size of at least 8"),
])
def test_cli_bad_input_exits_2_with_a_clear_message(capsys, argv, message):
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("cnnkit models: error: ") and message in error, error


def test_cli_summary_through_the_entry_point():
    result = run_cli("models", "summary", "lenet5", "--depth", "1")
    assert result.returncode == 0, result.stderr
    assert "classifier" in result.stdout and "total: 61,706 parameters" in result.stdout
