"""Per-layer model summary: output shape, parameters, MACs and receptive field of every layer, and totals.

    from cnnkit.inspect import summary, count_macs
    print(summary(model, input_size=(1, 28, 28)).table())
    count_macs(model, (3, 224, 224))  # multiply-accumulates (MACs) of one image

One forward pass (batch 1 by default), in eval mode and without gradients, with three observers:
- forward hooks on every module give the rows, in the order the modules are called;
- torch.utils.flop_counter.FlopCounterMode counts convolutions, linear layers, matrix products and
  attention (its FLOPs are 2 x MACs; elementwise ops such as activations, normalisation, additions and
  pooling are not counted, as in torchvision's and timm's published numbers);
- cnnkit.inspect.receptive_field.ReceptiveFieldTracker follows the receptive field through every op.

Rows: every leaf module call; a container appears too when it has parameters of its own or its own
forward() does counted work (timm's Attention computes q @ k there), so the parameter and MAC columns add
up to the totals. `depth=N` folds everything nested deeper than N into its ancestor's row. A module
called several times has one row per call, and its parameters are counted on the first call only.

Registered models are built on the meta device when possible (no memory, no arithmetic: only shapes),
and on the CPU when a builder or forward needs real values.

The counting is torch's; the table is ours rather than torchinfo's, which is not a dependency, has no
receptive fields and attributes work by module type instead of by the ops that actually run.
"""

from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn as nn
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from cnnkit.errors import CnnkitError, ConfigError, ModelError
from cnnkit.inspect.receptive_field import ReceptiveField, ReceptiveFieldTracker


@dataclass
class LayerRow:
    """One module call.

    Attributes:
        name: Qualified module name ("stages.0.conv1"); "" for the model itself.
        type: Class name of the module.
        depth: Nesting depth (1 for the model's direct children).
        call: 1 for the first call of this module in the forward pass, 2 for the second ...
        output_shape: Shape of the (first) output tensor, batch included.
        parameters: Parameters of the module itself (of everything inside it for a row folded by `depth`),
            0 when already counted on an earlier row.
        macs: Multiply-accumulates of this call.
        receptive_field: Receptive field of the output units in input pixels (None: not input-dependent).
    """

    name: str
    type: str
    depth: int
    call: int
    output_shape: tuple[int, ...] | None
    parameters: int
    macs: int
    receptive_field: ReceptiveField | None

    def to_dict(self) -> dict:
        result = asdict(self)
        result["output_shape"] = list(self.output_shape) if self.output_shape is not None else None
        result["receptive_field"] = self.receptive_field.to_dict() if self.receptive_field else None
        return result


@dataclass
class SummaryTotals:
    """Whole-model numbers. `activation_bytes` sums the outputs of every leaf-module call: a rough size
    of what training keeps for the backward pass (in-place activations are counted again)."""

    parameters: int
    trainable_parameters: int
    parameter_bytes: int
    macs: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...] | None
    activation_bytes: int

    @property
    def flops(self) -> int:
        """FLOPs, counting a multiply-accumulate as two operations."""
        return 2 * self.macs


@dataclass
class ModelSummary:
    """The result of `summary`: rows in execution order, totals, and notes on how to read them."""

    model: str
    rows: list[LayerRow]
    totals: SummaryTotals
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        totals = asdict(self.totals)
        totals.update(flops=self.totals.flops, input_shape=list(self.totals.input_shape),
                      output_shape=None if self.totals.output_shape is None else list(self.totals.output_shape))
        return {"model": self.model, "rows": [row.to_dict() for row in self.rows], "totals": totals,
                "notes": self.notes}

    def table(self) -> str:
        """The summary as aligned text: a header, one line per row, the totals and the notes."""
        header = ("layer", "type", "output shape", "params", "MACs", "RF size", "RF stride")
        lines = [(row.name or "(model)") + (f" (call {row.call})" if row.call > 1 else "") for row in self.rows]
        cells = [(name, row.type, _shape_text(row.output_shape), f"{row.parameters:,}", _si(row.macs),
                  row.receptive_field.size_text() if row.receptive_field else "-",
                  row.receptive_field.stride_text() if row.receptive_field else "-")
                 for name, row in zip(lines, self.rows)]
        widths = [max(len(text) for text in column) for column in zip(header, *cells)]
        right = {3, 4, 5, 6}  # numbers are right-aligned

        def line(values) -> str:
            return "  ".join(v.rjust(w) if i in right else v.ljust(w)
                             for i, (v, w) in enumerate(zip(values, widths))).rstrip()

        totals = self.totals
        text = [f"{self.model}: input {_shape_text(totals.input_shape)}", line(header),
                line(["-" * w for w in widths]), *map(line, cells), line(["-" * w for w in widths]),
                f"total: {totals.parameters:,} parameters ({totals.trainable_parameters:,} trainable, "
                f"{_mib(totals.parameter_bytes)}), {_si(totals.macs)} MACs = {_si(totals.flops)} FLOPs",
                f"       input {_shape_text(totals.input_shape)} -> output {_shape_text(totals.output_shape)}, "
                f"activations {_mib(totals.activation_bytes)} (outputs of every layer)"]
        notes = [textwrap.fill(note, 110, initial_indent="note: ", subsequent_indent="      ") for note in self.notes]
        return "\n".join(text + notes)

    def __str__(self) -> str:
        return self.table()


def _shape_text(shape) -> str:
    return "-" if shape is None else "x".join(map(str, shape)) or "scalar"


def _si(value: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(value)


def _mib(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.2f} MiB"


def parse_input_size(text: str, what: str = "--input") -> tuple[int, int, int]:
    """Parse "CxHxW" (channels x height x width, e.g. "1x28x28") into a tuple of three ints.

    Raises:
        ConfigError: Naming `what` and the expected format.
    """
    parts = str(text).strip().lower().split("x")
    if len(parts) != 3 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ConfigError(f"{what} must be CxHxW, channels x height x width as positive integers "
                          f"(e.g. 1x28x28 or 3x224x224); got {text!r}")
    return tuple(int(part) for part in parts)


def _input_shape(input_size) -> tuple[int, ...]:
    shape = tuple(int(side) for side in input_size)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ConfigError(f"input size must be (channels, height, width) or (batch, channels, height, width) "
                          f"of positive integers, got {tuple(input_size)!r}")
    return shape


def _example_input(model: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    reference = next(iter(model.parameters()), None)
    if reference is None:
        reference = next(iter(model.buffers()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
    return torch.zeros(shape, device=device, dtype=dtype)


def _in_eval_mode(model: nn.Module, run: Callable[[], object]):
    """Run `run()` with the model in eval mode and no gradients; restore every module's mode after."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            return run()
    finally:
        for module, training in modes:
            module.training = training


def _guarded(label: str, shape: tuple[int, ...], run: Callable[[], object]):
    """Turn a failure of the model's own forward into a ModelError that names the input shape."""
    try:
        return run()
    except CnnkitError:
        raise
    except Exception as error:  # noqa: BLE001 - any error from user model code, reported with its type
        raise ModelError(f"{label} cannot run on an input of shape {_shape_text(shape)}: "
                         f"{type(error).__name__}: {error}") from error


def _count(model: nn.Module, shape: tuple[int, ...]) -> int:
    x = _example_input(model, shape)
    with FlopCounterMode(display=False) as counter:
        _in_eval_mode(model, lambda: model(x))
    return counter.get_total_flops() // 2  # the counter's FLOPs are 2 per multiply-accumulate


def count_macs(model: nn.Module, input_shape) -> int:
    """Multiply-accumulates (MACs) of one forward pass; FLOPs are twice this.

    Named after the FLOP counter it uses (torch.utils.flop_counter), but returns MACs, the unit of
    torchvision's and timm's published "GFLOPs" tables (resnet18 at 3x224x224: 1.81 G).

    Args:
        model: Any nn.Module, on any device (the meta device counts without computing).
        input_shape: (channels, height, width) for one image, or (batch, channels, height, width).

    Raises:
        ModelError: If the forward pass fails at this input shape.
    """
    shape = _input_shape(input_shape)
    return _guarded(type(model).__name__, shape, lambda: _count(model, shape))


class _Call:
    """One module call seen by the hooks."""

    def __init__(self, module: nn.Module, name: str, call: int, flops_before: int) -> None:
        self.module, self.name, self.call = module, name, call
        self.depth = name.count(".") + 1 if name else 0
        self.is_leaf = next(module.children(), None) is None
        self.flops_before, self.flops, self.child_flops = flops_before, 0, 0
        self.output_shape, self.output_bytes, self.field = None, 0, None


def _summarize(model: nn.Module, shape: tuple[int, ...], depth: int | None, label: str) -> ModelSummary:
    names = {module: name for name, module in model.named_modules()}
    calls, stack, call_counts = [], [], {}
    tracker = ReceptiveFieldTracker()
    counter = FlopCounterMode(display=False)

    def before(module, args):
        call_counts[module] = call_counts.get(module, 0) + 1
        record = _Call(module, names[module], call_counts[module], counter.get_total_flops())
        calls.append(record)
        stack.append(record)

    def after(module, args, output):
        if not stack or stack[-1].module is not module:
            return  # the forward raised inside a child; the error surfaces from model(x)
        record = stack.pop()
        record.flops = counter.get_total_flops() - record.flops_before
        if stack:
            stack[-1].child_flops += record.flops
        tensors = [t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)]
        if tensors:
            record.output_shape = tuple(tensors[0].shape)
            record.output_bytes = sum(t.numel() * t.element_size() for t in tensors)
            record.field = tracker.field(tensors[0])

    handles = []
    for module in names:
        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    x = _example_input(model, shape)
    try:
        with counter, tracker:
            output = _in_eval_mode(model, lambda: model(tracker.watch(x)))
    finally:
        for handle in handles:
            handle.remove()

    rows, counted = [], set()

    def take(parameters) -> int:
        fresh = [p for p in parameters if id(p) not in counted]
        counted.update(id(p) for p in fresh)
        return sum(p.numel() for p in fresh)

    called = {record.module for record in calls}
    chosen = []  # (record, own parameters of a container or None for a whole-module row, MACs x 2)
    for record in calls:
        if depth is not None and record.depth > depth:
            continue
        if record.is_leaf or record.depth == depth:
            chosen.append((record, None, record.flops))
        else:  # a container: only what its own forward() adds, including the weights of children it
            # uses without calling them (nn.MultiheadAttention's out_proj, F.linear(x, self.qkv.weight))
            own = list(record.module.parameters(recurse=False)) + [
                p for child in record.module.children() if child not in called for p in child.parameters()
                if id(p) in tracker.used_parameters]
            if not own and record.flops == record.child_flops:
                continue
            chosen.append((record, own, record.flops - record.child_flops))
    # Whole-module rows (leaves, folded rows) claim their parameters first, in call order; containers then
    # get only what no called layer inside them claims. A container whose layers sit in a ModuleDict or
    # ModuleList it never calls (a detector's trunk stages) would otherwise take them all, leaving its
    # convolutions at 0 parameters.
    claimed = {index: take(record.module.parameters())
               for index, (record, own, _) in enumerate(chosen) if own is None}
    claimed.update({index: take(own) for index, (record, own, _) in enumerate(chosen) if own is not None})
    for index, (record, own, flops) in enumerate(chosen):
        if own is not None and not claimed[index] and flops == 0:
            continue  # a container left with nothing of its own
        rows.append(LayerRow(record.name, type(record.module).__name__, record.depth, record.call,
                             record.output_shape, claimed[index], flops // 2, record.field))

    all_parameters = list(model.parameters())
    outputs = [t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)]
    totals = SummaryTotals(
        parameters=sum(p.numel() for p in all_parameters),
        trainable_parameters=sum(p.numel() for p in all_parameters if p.requires_grad),
        parameter_bytes=sum(p.numel() * p.element_size() for p in all_parameters),
        macs=counter.get_total_flops() // 2, input_shape=shape,
        output_shape=tuple(outputs[0].shape) if outputs else None,
        activation_bytes=sum(record.output_bytes for record in calls if record.is_leaf))
    return ModelSummary(label, rows, totals, _notes(rows, totals, tracker, depth))


def _notes(rows: list[LayerRow], totals: SummaryTotals, tracker: ReceptiveFieldTracker, depth) -> list[str]:
    notes = ["MACs = multiply-accumulates of convolutions, linear layers, matrix products and attention "
             "(torch.utils.flop_counter); 1 MAC = 2 FLOPs; activations, normalisation, additions and pooling "
             "are not counted",
             "RF = receptive field of one output unit in input pixels: size and stride (HxW when they differ), "
             "theoretical (padding ignored); global = depends on the whole input"]
    if any(row.receptive_field and row.receptive_field.global_context for row in rows):
        notes.append("* = local receptive field, plus the whole input through a global branch "
                     "(squeeze-and-excitation gate or similar)")
    if tracker.unrecognized:
        notes.append("receptive field treated as pointwise through ops it does not know, so it may be "
                     f"underestimated after: {', '.join(sorted(tracker.unrecognized))}")
    if depth is not None:
        notes.append(f"modules nested deeper than {depth} are folded into their ancestor's row")
    if any(row.call > 1 for row in rows):
        notes.append("modules called several times have one row per call; parameters count on the first")
    unused = totals.parameters - sum(row.parameters for row in rows)
    if unused > 0:
        notes.append(f"{unused:,} parameters are not used by this forward pass (an unused head, for example)")
    return notes


def summary(model: nn.Module, input_size=(1, 28, 28), depth: int | None = None) -> ModelSummary:
    """Summarize a model layer by layer: output shape, parameters, MACs and receptive field, plus totals.

    Args:
        model: Any nn.Module, on any device; it is run once in eval mode without gradients
            (its train/eval modes are restored). A model on the meta device is summarized without computing.
        input_size: (channels, height, width) of one input image, or (batch, channels, height, width).
        depth: Show modules down to this nesting depth only, folding deeper ones into their ancestor's
            row (1: the model's direct children); None shows every layer.

    Returns:
        A ModelSummary: `.rows`, `.totals`, `.notes`, `.table()` for text, `.to_dict()` for JSON.

    Raises:
        ConfigError: For a malformed input size or depth.
        ModelError: If the forward pass fails at this input size.
    """
    if depth is not None and (not isinstance(depth, int) or depth < 0):
        raise ConfigError(f"depth must be a non-negative integer or None, got {depth!r}")
    shape = _input_shape(input_size)
    label = type(model).__name__
    return _guarded(label, shape, lambda: _summarize(model, shape, depth, label))


def build_model(name: str, input_size, num_classes: int = 10) -> nn.Module:
    """`create_model(name)` for inputs of `input_size` (channels, height, width)."""
    from cnnkit.registry import create_model

    channels, height, width = input_size
    return create_model(name, num_classes=num_classes, in_chans=channels,
                        input_size=height if height == width else (height, width))


def _meta_first(name: str, input_size, num_classes: int, run: Callable[[nn.Module], object],
                guarded: Callable[[nn.Module], object]):
    """run(model built on the meta device); if meta cannot do it, guarded(model built on the CPU)."""
    try:
        with torch.device("meta"):
            model = build_model(name, input_size, num_classes)
        return run(model)
    except CnnkitError:
        raise
    except Exception:  # noqa: BLE001 - meta tensors hold no values (.item(), data-dependent shapes): use the CPU
        pass
    return guarded(build_model(name, input_size, num_classes))


def summarize_model(name: str, input_size=(1, 28, 28), num_classes: int = 10,
                    depth: int | None = None) -> ModelSummary:
    """`summary` of a registered model (or a model YAML file) built for `input_size` and `num_classes`."""
    shape = _input_shape(input_size)
    result = _meta_first(name, shape[1:], num_classes, lambda model: _summarize(model, shape, depth, name),
                         lambda model: summary(model, shape[1:], depth))
    result.model = name
    return result


def model_cost(name: str, input_size=(1, 28, 28), num_classes: int = 10, macs: bool = True) -> tuple[int, int | None]:
    """(parameters, MACs or None) of a registered model, built on the meta device when possible."""
    shape = _input_shape(input_size)

    def run(model: nn.Module, count: Callable) -> tuple[int, int | None]:
        return sum(p.numel() for p in model.parameters()), count(model, shape) if macs else None

    return _meta_first(name, shape[1:], num_classes, lambda model: run(model, _count),
                       lambda model: run(model, count_macs))
