"""Custom CNNs described in a small YAML file: `cnnkit train --model my_net.yaml`.

Written here: torchvision and timm build named architectures, and no well-kept library reads a flat,
checked layer list into a PyTorch network with errors that name the layer, the field and the shapes.
Every layer name maps to its constructor through the explicit table `_KINDS`; nothing is looked up by
string with eval or getattr.

The format (examples/my_net.yaml):

    layers:
      - conv: {filters: 32, kernel: 3}
      - batchnorm
      - relu
      - maxpool: {kernel: 2}
      - residual:
          - conv: {filters: 32}
          - batchnorm
      - globalavgpool
      - linear: {units: num_classes}

A layer is `- name` or `- name: {field: value, ...}` (`- name: {}` and `- name:` work too). Fields and
defaults:

    conv           filters (required), kernel=3, stride=1, padding=same (same | valid | integer),
                   dilation=1, groups=1, bias=auto (off when a batchnorm follows directly, else on)
    maxpool        kernel=2, stride=kernel, padding=0, ceil=false (floor: 7x7 pooled by 2 is 3x3; ceil: true
                   keeps the last row and column, 4x4, as fastnet's pools do)
    avgpool        as maxpool
    globalavgpool  (C, H, W) -> (C,): the mean of each channel
    globalmaxpool  (C, H, W) -> (C,): the maximum of each channel
    relu, gelu, sigmoid, tanh, swish (alias silu), leakyrelu (slope=0.01)
    batchnorm      BatchNorm2d on feature maps, BatchNorm1d on flat features
    dropout        rate=0.5, in [0, 1); a `drop_rate` setting replaces the rate of every dropout layer
    flatten        (C, H, W) -> (C*H*W,)
    linear         units (required): a positive integer or `num_classes`; bias=true
    residual       a list of layers (the body): output = shortcut(input) + body(input). The shortcut is
                   the identity when the body keeps the shape; otherwise a 1x1 convolution (strided to
                   match the size) + BatchNorm, as ResNet's option B. Written as a mapping
                   `residual: {projection: none, layers: [...]}`, `projection: none` forbids the
                   projection: a body that changes the shape is then an error.

Rules:
- Layers are numbered from 1 in the order they are written, and the modules carry the same numbers:
  layer 3 is `layers.3`, the second layer in the body of residual layer 5 is `layers.5.body.2`.
- Shapes are inferred layer by layer while building, from `in_chans` and `input_size`; a spec that does
  not fit raises `ModelSpecError` naming the layer, the field and the shapes.
- A linear layer needs a flat input. After a feature map this is an error that says to add `flatten`
  or `globalavgpool`: no silent flattening, since flattening a large map makes a large linear layer,
  and that should be a visible choice.
- The last layer gives the class scores: if it is not a linear layer, a linear layer to `num_classes`
  (module `head`) is appended; if it is one, its units must be `num_classes`.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import yaml

from cnnkit import safe_yaml
from cnnkit.errors import ModelError
from cnnkit.models._utils import check_input_size, check_positive, image_size
from cnnkit.registry import register_model

Shape = tuple[int, ...]  # one sample: (C, H, W) feature map or (F,) flat features


class ModelSpecError(ModelError):
    """A custom network spec that does not fit: an unknown layer or field, a bad value, a shape mismatch.

    Attributes:
        layer_path: 1-based layer numbers, outermost first ((5, 2): layer 2 in residual layer 5's body).
        field: The field at fault, or None.
    """

    def __init__(self, message: str, layer_path: tuple[int, ...] = (), field: str | None = None):
        super().__init__(message)
        self.layer_path, self.field = layer_path, field


# --- the spec's vocabulary -------------------------------------------------------------------------

REQUIRED = object()  # marks a field without a default

_FIELDS: dict[str, dict[str, Any]] = {
    "conv": {"filters": REQUIRED, "kernel": 3, "stride": 1, "padding": "same", "dilation": 1, "groups": 1,
             "bias": "auto"},
    "maxpool": {"kernel": 2, "stride": None, "padding": 0, "ceil": False},
    "avgpool": {"kernel": 2, "stride": None, "padding": 0, "ceil": False},
    "globalavgpool": {}, "globalmaxpool": {},
    "relu": {}, "leakyrelu": {"slope": 0.01}, "gelu": {}, "swish": {}, "sigmoid": {}, "tanh": {},
    "batchnorm": {},
    "dropout": {"rate": 0.5},
    "flatten": {},
    "linear": {"units": REQUIRED, "bias": True},
    "residual": {"layers": REQUIRED, "projection": "conv1x1"},
}
_ALIASES = {"silu": "swish", "conv2d": "conv", "dense": "linear", "bn": "batchnorm"}
_ACTIVATIONS: dict[str, Callable[[dict], nn.Module]] = {
    "relu": lambda fields: nn.ReLU(), "gelu": lambda fields: nn.GELU(), "swish": lambda fields: nn.SiLU(),
    "sigmoid": lambda fields: nn.Sigmoid(), "tanh": lambda fields: nn.Tanh(),
    "leakyrelu": lambda fields: nn.LeakyReLU(fields["slope"]),
}


@dataclass
class _Layer:
    """One parsed layer: its canonical name, checked fields, and where it is (for messages)."""

    name: str
    fields: dict[str, Any]
    path: tuple[int, ...]
    label: str  # "layer 4 (residual) > 2 (conv)"
    body: list[_Layer] = field(default_factory=list)  # residual only
    output_shape: Shape = ()  # set while building

    def error(self, message: str, field_name: str | None = None) -> ModelSpecError:
        return ModelSpecError(f"{self.label}: {message}", self.path, field_name)


def _label(path: tuple[int, ...], name: str | None = None, names: tuple[str, ...] = ()) -> str:
    """'layer 4 (residual) > 2 (conv)' for path (4, 2)."""
    parts = [f"{index} ({kind})" for index, kind in zip(path[:-1], names)]
    parts.append(f"{path[-1]} ({name})" if name else str(path[-1]))
    return "layer " + " > ".join(parts)


def _close(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- parsing: names, fields and values, before any shape is known ---------------------------------

def _parse_layers(items: Any, path: tuple[int, ...] = (), names: tuple[str, ...] = ()) -> list[_Layer]:
    where = _label(path, names[-1], names[:-1]) if path else "the spec"
    if not isinstance(items, list) or not items:
        raise ModelSpecError(f"{where}: layers must be a non-empty list of layers (`- conv: {{filters: 32}}`), "
                             f"got {items!r}", path, "layers")
    return [_parse_layer(item, path + (index,), names) for index, item in enumerate(items, 1)]


def _parse_layer(item: Any, path: tuple[int, ...], names: tuple[str, ...]) -> _Layer:
    where = _label(path, None, names)
    if isinstance(item, str):
        written, raw = item, None
    elif isinstance(item, dict) and len(item) == 1:
        written, raw = next(iter(item.items()))
    elif isinstance(item, dict) and item:
        keys = ", ".join(map(str, item))
        raise ModelSpecError(f"{where}: one layer per list item, written `- name: {{field: value}}`; got the keys "
                             f"{keys}. If these are one layer's fields, indent them under its name", path)
    else:
        raise ModelSpecError(f"{where}: a layer is written `- relu` or `- conv: {{filters: 32}}`, got {item!r}", path)
    name = _ALIASES.get(_normalized(written), _normalized(written))
    if name not in _FIELDS:
        raise ModelSpecError(f"{where}: unknown layer {written!r}{_close(name, _FIELDS)} "
                             f"(known: {', '.join(_FIELDS)})", path)
    if name == "residual" and isinstance(raw, list):
        raw = {"layers": raw}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        example = "{" + next(iter(_FIELDS[name]), "field") + ": ...}" if _FIELDS[name] else "{}"
        raise ModelSpecError(f"{_label(path, name, names)}: the fields of {name} are a mapping, "
                             f"`- {name}: {example}`; got {raw!r}", path)
    label = _label(path, name, names)
    layer = _Layer(name, {}, path, label)
    for key in raw:
        if key not in _FIELDS[name]:
            takes = f"{name} takes {', '.join(_FIELDS[name])}" if _FIELDS[name] else f"{name} takes no fields"
            raise ModelSpecError(f"{label}: unknown field {key!r}{_close(str(key), _FIELDS[name])}; {takes}",
                                 path, str(key))
    for key, default in _FIELDS[name].items():
        if key not in raw and default is REQUIRED:
            raise ModelSpecError(f"{label}: missing field {key!r} (e.g. `- {name}: {{{key}: ...}}`)", path, key)
        layer.fields[key] = raw.get(key, default)
    _check_values(layer, label)
    if name == "residual":
        layer.body = _parse_layers(layer.fields["layers"], path, names + (name,))
    return layer


def _normalized(written: Any) -> str:
    return str(written).lower().replace("_", "").replace("-", "")


def _check_values(layer: _Layer, label: str) -> None:
    """Check each field's value on its own (shapes come later); raise naming the layer and field."""

    def fail(key: str, expected: str) -> None:
        raise ModelSpecError(f"{label}: {key} must be {expected}, got {layer.fields[key]!r}", layer.path, key)

    def is_int(value: Any, minimum: int) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= minimum

    fields = layer.fields
    for key in ("filters", "kernel", "dilation", "groups"):
        if key in fields and not is_int(fields[key], 1):
            fail(key, "a positive integer")
    if "stride" in fields and not (is_int(fields["stride"], 1) or (fields["stride"] is None and layer.name != "conv")):
        fail("stride", "a positive integer")
    if layer.name == "conv":
        if not (fields["padding"] in ("same", "valid") or is_int(fields["padding"], 0)):
            fail("padding", "'same', 'valid' or a non-negative integer")
        if fields["padding"] == "same" and fields["kernel"] % 2 == 0:
            raise layer.error(f"padding 'same' needs an odd kernel, got kernel {fields['kernel']}; "
                              "use an odd kernel or an integer padding", "padding")
        if fields["bias"] not in ("auto", True, False):
            fail("bias", "true, false or auto")
    elif "padding" in fields:  # pools
        if fields["padding"] == "valid":
            fields["padding"] = 0
        if not is_int(fields["padding"], 0):
            fail("padding", "a non-negative integer (or 'valid')")
        if fields["padding"] > fields["kernel"] // 2:
            raise layer.error(f"padding {fields['padding']} is more than half the kernel ({fields['kernel']}); "
                              "PyTorch pools allow at most kernel // 2", "padding")
        if not isinstance(fields.get("ceil", False), bool):
            fail("ceil", "true or false")
    if layer.name == "linear":
        if not (fields["units"] == "num_classes" or is_int(fields["units"], 1)):
            fail("units", "a positive integer or num_classes")
        if not isinstance(fields["bias"], bool):
            fail("bias", "true or false")
    if "rate" in fields and not (isinstance(fields["rate"], (int, float)) and not isinstance(fields["rate"], bool)
                                 and 0 <= fields["rate"] < 1):
        fail("rate", "a number in [0, 1)")
    if "slope" in fields and not (isinstance(fields["slope"], (int, float)) and not isinstance(fields["slope"], bool)):
        fail("slope", "a number")
    if "projection" in fields and fields["projection"] not in ("conv1x1", "none", None):
        fail("projection", "conv1x1 or none")


def _set_dropout(layers: list[_Layer], rate: float) -> int:
    count = 0
    for layer in layers:
        if layer.name == "dropout":
            layer.fields["rate"], count = rate, count + 1
        count += _set_dropout(layer.body, rate)
    return count


def check_spec(spec: Any) -> list[_Layer]:
    """Check a spec's structure, names and values (everything that does not depend on shapes).

    Raises:
        ModelSpecError: naming the layer and field.
    """
    if not isinstance(spec, dict):
        hint = "; put the list under `layers:`" if isinstance(spec, list) else ""
        raise ModelSpecError(f"a network spec is a mapping with a `layers:` list, got {type(spec).__name__}{hint}")
    for key in spec:
        if key not in ("layers", "description"):
            raise ModelSpecError(f"unknown top-level key {key!r}{_close(str(key), ['layers', 'description'])}; "
                                 "a spec has `layers:` and an optional `description:`", (), str(key))
    if "layers" not in spec:
        raise ModelSpecError("the spec has no `layers:` list", (), "layers")
    if not isinstance(spec.get("description", ""), str):  # checkpoints store the spec as JSON
        raise ModelSpecError(f"description must be text, got {spec['description']!r}", (), "description")
    return _parse_layers(spec["layers"])


# --- building: shapes inferred layer by layer ------------------------------------------------------

def _shape_text(shape: Shape) -> str:
    return f"({', '.join(map(str, shape))})" if len(shape) > 1 else f"({shape[0]},)"


def _needs_map(layer: _Layer, shape: Shape) -> None:
    if len(shape) != 3:
        raise layer.error(f"expects a feature map (C, H, W) but gets the flat {_shape_text(shape)}; "
                          f"{layer.name} layers go before flatten, global pooling and linear layers")


def _spatial(layer: _Layer, shape: Shape, padding: int, extent: int, what: str) -> tuple[int, int]:
    """Output (H, W) of a sliding window of size `extent`; raise when it does not fit the input."""
    _, height, width = shape
    if extent > min(height, width) + 2 * padding:
        padded = f" plus padding {padding}" if padding else ""
        fix = "use padding: same, a smaller kernel or fewer poolings" if layer.name == "conv" else \
            "use a smaller kernel or fewer poolings"
        raise layer.error(f"{what} is larger than the {height}x{width} input{padded} "
                          f"(shape {_shape_text(shape)}); {fix}", "kernel")
    stride = layer.fields["stride"] or layer.fields["kernel"]
    if not layer.fields.get("ceil"):
        return ((height + 2 * padding - extent) // stride + 1, (width + 2 * padding - extent) // stride + 1)

    def ceil_size(size: int) -> int:  # PyTorch's ceil_mode: the last window starts inside the input or left padding
        out = -(-(size + 2 * padding - extent) // stride) + 1
        return out - 1 if (out - 1) * stride >= size + padding else out

    return ceil_size(height), ceil_size(width)


def _build_conv(layer: _Layer, shape: Shape, next_name: str | None) -> tuple[nn.Module, Shape]:
    _needs_map(layer, shape)
    fields, channels = layer.fields, shape[0]
    for count, what in ((channels, f"the {channels} input channels"), (fields["filters"], "filters")):
        if count % fields["groups"]:
            raise layer.error(f"groups {fields['groups']} must divide {what} ({count}); input shape "
                              f"{_shape_text(shape)}", "groups")
    extent = fields["dilation"] * (fields["kernel"] - 1) + 1
    padding = {"same": (extent - 1) // 2, "valid": 0}.get(fields["padding"], fields["padding"])
    what = f"kernel {fields['kernel']}" + (f" (dilated to {extent})" if extent != fields["kernel"] else "")
    height, width = _spatial(layer, shape, padding, extent, what)
    bias = next_name != "batchnorm" if fields["bias"] == "auto" else fields["bias"]  # BN's shift replaces a bias
    conv = nn.Conv2d(channels, fields["filters"], fields["kernel"], stride=fields["stride"], padding=padding,
                     dilation=fields["dilation"], groups=fields["groups"], bias=bias)
    return conv, (fields["filters"], height, width)


def _build_pool(layer: _Layer, shape: Shape) -> tuple[nn.Module, Shape]:
    _needs_map(layer, shape)
    kernel, padding = layer.fields["kernel"], layer.fields["padding"]
    stride = layer.fields["stride"] or kernel
    height, width = _spatial(layer, shape, padding, kernel, f"kernel {kernel}")
    pool = nn.MaxPool2d if layer.name == "maxpool" else nn.AvgPool2d
    return pool(kernel, stride=stride, padding=padding, ceil_mode=layer.fields["ceil"]), (shape[0], height, width)


class GlobalPool(nn.Module):
    """Global average or max pooling to flat features: (B, C, H, W) -> (B, C)."""

    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) if self.mode == "avg" else x.amax(dim=(2, 3))

    def extra_repr(self) -> str:
        return self.mode


class Residual(nn.Module):
    """output = shortcut(x) + body(x); the shortcut is the identity or a 1x1 conv + BatchNorm projection."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Module):
        super().__init__()
        self.body, self.shortcut = body, shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


def _projection_stride(shape: Shape, out: Shape) -> int | None:
    """The stride s with ceil(H / s), ceil(W / s) == the body's output size, or None when none exists."""
    for stride in range(1, max(shape[1:]) + 1):
        if -(-shape[1] // stride) == out[1] and -(-shape[2] // stride) == out[2]:
            return stride
    return None


def _build_residual(layer: _Layer, shape: Shape, num_classes: int) -> tuple[nn.Module, Shape]:
    body, out = _build_sequence(layer.body, shape, num_classes)
    if out == shape:
        return Residual(body, nn.Identity()), out
    where = f"the body turns {_shape_text(shape)} into {_shape_text(out)}"
    if layer.fields["projection"] in ("none", None):
        raise layer.error(f"{where}, and projection is none, so input and body output cannot be added; keep "
                          "the shape in the body or drop `projection: none`", "projection")
    if len(shape) != 3 or len(out) != 3:
        raise layer.error(f"{where}; a residual shortcut needs a feature map on both sides "
                          "(flatten, global pooling and linear layers go outside the residual)")
    stride = _projection_stride(shape, out)
    if stride is None:
        raise layer.error(f"{where}: no strided 1x1 projection maps {shape[1]}x{shape[2]} to {out[1]}x{out[2]}; "
                          "use padding: same in the body so only strides change the size", "projection")
    shortcut = nn.Sequential(OrderedDict(conv=nn.Conv2d(shape[0], out[0], 1, stride=stride, bias=False),
                                         bn=nn.BatchNorm2d(out[0])))
    return Residual(body, shortcut), out


def _build_layer(layer: _Layer, shape: Shape, next_name: str | None, num_classes: int) -> tuple[nn.Module, Shape]:
    name = layer.name
    if name == "conv":
        return _build_conv(layer, shape, next_name)
    if name in ("maxpool", "avgpool"):
        return _build_pool(layer, shape)
    if name in ("globalavgpool", "globalmaxpool"):
        _needs_map(layer, shape)
        return GlobalPool("avg" if name == "globalavgpool" else "max"), (shape[0],)
    if name in _ACTIVATIONS:
        return _ACTIVATIONS[name](layer.fields), shape
    if name == "batchnorm":
        return (nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d)(shape[0]), shape
    if name == "dropout":
        return nn.Dropout(layer.fields["rate"]), shape
    if name == "flatten":
        return nn.Flatten(), (math.prod(shape),)
    if name == "linear":
        if len(shape) != 1:
            raise layer.error(f"expects a flat input but gets {_shape_text(shape)}; add a flatten or "
                              "globalavgpool layer before it")
        units = num_classes if layer.fields["units"] == "num_classes" else layer.fields["units"]
        return nn.Linear(shape[0], units, bias=layer.fields["bias"]), (units,)
    if name == "residual":
        return _build_residual(layer, shape, num_classes)
    raise AssertionError(f"no builder for {name}")  # _FIELDS and this function list the same names


def _build_sequence(layers: list[_Layer], shape: Shape, num_classes: int) -> tuple[nn.Sequential, Shape]:
    modules = OrderedDict()
    for position, layer in enumerate(layers):
        next_name = layers[position + 1].name if position + 1 < len(layers) else None
        modules[str(layer.path[-1])], shape = _build_layer(layer, shape, next_name, num_classes)
        layer.output_shape = shape
    return nn.Sequential(modules), shape


class CustomCNN(nn.Module):
    """A network built from a spec (see the module docstring), with shapes checked at build time.

    Args:
        spec: The spec as loaded from YAML: {"layers": [...], "description": "..."}.
        num_classes: Output classes: the units of the final linear layer.
        in_chans: Input channels.
        input_size: (height, width) of the input images, or one int for square images.
        drop_rate: If set, the rate of every dropout layer (the spec must then have one).

    Attributes:
        layer_shapes: (label, output shape of one sample) per layer, nested layers included.
        fixed_size: Whether the network only takes `input_size` images (a flatten of a feature map).
    """

    def __init__(self, spec: dict, num_classes: int = 10, in_chans: int = 1,
                 input_size: int | tuple[int, int] = 28, drop_rate: float | None = None):
        super().__init__()
        check_positive("num_classes", num_classes)
        check_positive("in_chans", in_chans)
        self.input_size = image_size(input_size)
        layers = check_spec(spec)
        if drop_rate is not None:
            if not 0 <= drop_rate < 1:
                raise ModelSpecError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
            if _set_dropout(layers, drop_rate) == 0 and drop_rate > 0:
                raise ModelSpecError(f"drop_rate={drop_rate} is set but the spec has no dropout layer to apply "
                                     f"it to; add `- dropout: {{rate: {drop_rate}}}` where you want it")
        shape = (in_chans, *self.input_size)
        self.layers, shape = _build_sequence(layers, shape, num_classes)  # errors in layer order first
        last = layers[-1]
        if last.name == "linear" and last.fields["units"] not in ("num_classes", num_classes):
            raise last.error(f"the last layer gives the class scores, so units must be num_classes "
                             f"({num_classes} here), got {last.fields['units']}; write `units: num_classes`, "
                             "or end with another layer to have a linear classifier appended", "units")
        self.head: nn.Module = nn.Identity()
        if last.name != "linear":
            if len(shape) != 1:
                raise ModelSpecError(f"after layer {last.path[-1]} ({last.name}): the network ends with a "
                                     f"{_shape_text(shape)} feature map, but the classifier appended after the "
                                     "last layer needs a flat input; end with a globalavgpool or flatten layer")
            self.head = nn.Linear(shape[0], num_classes)
        self.layer_shapes = list(_shapes(layers))
        self.fixed_size = any(layer.name == "flatten" and len(before) == 3
                              for layer, before in _inputs(layers, (in_chans, *self.input_size)))
        self.description = str(spec.get("description") or "")

    def get_classifier(self) -> nn.Module:
        """The layer that gives the class scores: the appended head, or the spec's final linear layer."""
        return self.head if isinstance(self.head, nn.Linear) else self.layers[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_size:
            check_input_size("this custom network (it flattens a feature map)", x, self.input_size)
        return self.head(self.layers(x))  # (B, C, H, W) -> (B, num_classes)


def _shapes(layers: list[_Layer]):
    for layer in layers:
        yield layer.label, layer.output_shape
        yield from _shapes(layer.body)


def _inputs(layers: list[_Layer], shape: Shape):
    """(layer, input shape) for every layer, nested ones included."""
    for layer in layers:
        yield layer, shape
        yield from _inputs(layer.body, shape)
        shape = layer.output_shape


# --- files -----------------------------------------------------------------------------------------

def is_spec_file(name: Any) -> bool:
    """Whether a --model value names a YAML network description rather than a registered architecture."""
    return str(name).lower().endswith((".yaml", ".yml"))


def load_spec(path: str | Path) -> dict:
    """Read a YAML network spec and check its structure, names and values (not yet its shapes).

    Returns:
        The spec as plain data ({"layers": [...]}), JSON-serialisable: checkpoints store it.

    Raises:
        ModelSpecError: naming the file and the line (YAML syntax errors, unknown layers or fields, bad values).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelSpecError(f"network spec {path} does not exist (a model name ending in .yaml is read as a "
                             "network description; see examples/my_net.yaml)")
    text = path.read_text(encoding="utf-8", errors="replace")
    spec = safe_yaml.load(text, path, ModelSpecError)  # no aliases, size capped; errors name the line
    with _errors_in_file(path, text):
        check_spec(spec)
    return spec


@contextlib.contextmanager
def _errors_in_file(path: str | Path, text: str | None = None):
    """Prefix the ModelSpecErrors raised inside with the spec file and the line of the layer (or field)."""
    try:
        yield
    except ModelSpecError as error:
        if str(error).startswith(str(path)):
            raise
        lines = _line_numbers(text if text is not None else Path(path).read_text())
        layer_path = error.layer_path
        keys = [(layer_path[:end], key) for end in range(len(layer_path), -1, -1) for key in (error.field, None)]
        line = next((lines[key] for key in keys if key in lines), None)
        where = f"{path}, line {line}" if line else str(path)
        raise ModelSpecError(f"{where}: {error}", layer_path, error.field) from None


def _line_numbers(text: str) -> dict[tuple[tuple[int, ...], str | None], int]:
    """{(layer path, field or None): 1-based line} from the YAML node tree."""
    lines: dict = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines

    def mapping(node) -> dict:
        return {key.value: (key, value) for key, value in node.value} if isinstance(node, yaml.MappingNode) else {}

    def walk(sequence, path: tuple[int, ...]) -> None:
        if not isinstance(sequence, yaml.SequenceNode):
            return
        for index, item in enumerate(sequence.value, 1):
            here = path + (index,)
            lines[(here, None)] = item.start_mark.line + 1
            entries = mapping(item)
            if len(entries) != 1:
                continue
            _, value = next(iter(entries.values()))
            for key, (key_node, _) in mapping(value).items():
                lines[(here, key)] = key_node.start_mark.line + 1
            walk(value if isinstance(value, yaml.SequenceNode) else mapping(value).get("layers", (None, None))[1],
                 here)

    for key, (key_node, value) in mapping(root).items():
        lines[((), key)] = key_node.start_mark.line + 1
        if key == "layers":
            walk(value, ())
    return lines


def model_from_file(path: str | Path, **kwargs) -> CustomCNN:
    """Build the network a YAML spec file describes; errors name the file and line."""
    spec = load_spec(path)
    with _errors_in_file(path):
        return custom_cnn(spec=spec, **kwargs)


def check_spec_file(path: str | Path, **kwargs) -> dict:
    """Load a spec file and build it once on the meta device (no memory, no random numbers drawn) to check
    its shapes with these arguments; return the spec, for a self-describing checkpoint."""
    spec = load_spec(path)
    with _errors_in_file(path), torch.device("meta"):
        custom_cnn(spec=spec, **kwargs)
    return spec


# The network of examples/my_net.yaml: what `custom_cnn` builds without a spec (registry tests, `cnnkit models`).
DEFAULT_SPEC: dict = {
    "description": "a small CNN for 28x28 grayscale images",
    "layers": [
        {"conv": {"filters": 32, "kernel": 3, "padding": "same"}}, "batchnorm", "relu", {"maxpool": {"kernel": 2}},
        {"residual": [{"conv": {"filters": 32, "kernel": 3, "padding": "same"}}, "batchnorm", "relu",
                      {"conv": {"filters": 32, "kernel": 3, "padding": "same"}}]},
        {"conv": {"filters": 64, "kernel": 3, "stride": 2, "padding": "same"}}, "gelu", "globalavgpool",
        {"dropout": {"rate": 0.3}}, {"linear": {"units": 128}}, "swish", {"linear": {"units": "num_classes"}},
    ],
}


@register_model(family="custom", source="cnnkit")
def custom_cnn(spec: dict | None = None, num_classes: int = 10, in_chans: int = 1,
               input_size: int | tuple[int, int] = 28, drop_rate: float | None = None) -> CustomCNN:
    """A CNN from a YAML spec (`--model my_net.yaml`); without one, the network of examples/my_net.yaml."""
    return CustomCNN(DEFAULT_SPEC if spec is None else spec, num_classes=num_classes, in_chans=in_chans,
                     input_size=input_size, drop_rate=drop_rate)
