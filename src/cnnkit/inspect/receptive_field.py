"""Receptive fields, computed analytically while a model runs.

A `ReceptiveFieldTracker` is a `torch.overrides.TorchFunctionMode`: it sees every torch function a
forward pass calls (F.conv2d, F.max_pool2d, torch.cat, Tensor.__add__, Tensor.flatten ...) and gives each
output tensor the receptive field of its units from those of its inputs, in input pixels along H and W:

    size:   the extent of the input region one unit can see (theoretical: padding and clipping ignored)
    stride: the distance in input pixels between neighbouring units (the "jump")

A convolution or pooling with kernel k, stride s and dilation d gives size + (k - 1) * d * jump and
jump * s; a transposed convolution gives size + floor((k - 1) * d / s) * jump and jump / s; interpolation
adds its taps (nearest 1, linear 2, cubic 4) and scales the jump by in/out. Ops on several tensors
(residual additions, concatenation, gating) take the largest size and jump of their inputs, so
branches are handled wherever they meet. Tracing ops instead of module types is what makes it work on
any nn.Module: torchvision and timm models, functional code inside forward(), transformers.

Each tensor also records which of its dimensions index spatial positions, through flatten, view,
permute, transpose and indexing, so that an op which mixes positions is recognised wherever it happens:

- "global" (the unit depends on the whole input): global and adaptive pooling to 1, reductions over
  spatial dims (x.mean((2, 3))), linear layers and matrix products that contract a spatial dim (a
  classifier after flatten), softmax over one, attention (scaled_dot_product_attention,
  nn.MultiheadAttention), FFTs, grid_sample, sorting or cumulative ops along a spatial dim.
- Conservative (reported as global, an upper bound): a 1-D or 3-D convolution or pooling over spatial
  dims, a 2-D one over dims that are not exactly the last two (e.g. on flattened tokens), so local
  windowed attention (Swin) is reported as global.
- "global context" (marked *): a local unit multiplied or added with a spatially broadcast global tensor,
  such as a squeeze-and-excitation gate (B, C, 1, 1). The local size stays meaningful, but the unit
  also depends on the whole input (which the gradient test would show).
- Normalisation layers are pointwise, as in every receptive-field analysis: exact for BatchNorm in
  eval mode; GroupNorm, LayerNorm over spatial dims and train-mode BatchNorm statistics see the whole
  map, which is ignored.
- Any other op is treated as pointwise. Ops not in the known list are collected in
  `ReceptiveFieldTracker.unrecognized` so a summary can say the result may be an underestimate.
- Adaptive pooling to a size that does not divide the input is approximated by its largest bin and
  a fractional stride in/out.

Written here: torchscan and torch-receptive-field compute receptive fields from module types only
(they miss residual additions and functional ops) and are not dependencies of cnnkit.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from fractions import Fraction
from math import ceil, floor

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

Pair = tuple[Fraction, Fraction]


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of the units of one tensor, in input pixels.

    Attributes:
        size: (height, width) of the input region one unit sees; None when the unit sees the whole input.
        stride: (height, width) distance in input pixels between neighbouring units; None when global.
        global_context: The unit has a local `size` but also depends on the whole input through a
            spatially broadcast branch (a squeeze-and-excitation gate, for example).
    """

    size: tuple[float, float] | None
    stride: tuple[float, float] | None
    global_context: bool = False

    @property
    def is_global(self) -> bool:
        """True when every unit depends on the whole input."""
        return self.size is None

    def size_text(self) -> str:
        """"global", "7" (square) or "7x5" (height x width); a trailing * marks global context."""
        return "global" if self.size is None else _pair_text(self.size) + ("*" if self.global_context else "")

    def stride_text(self) -> str:
        """"-" when global, else "4" or "4x2"."""
        return "-" if self.stride is None else _pair_text(self.stride)

    def to_dict(self) -> dict:
        return {"size": None if self.size is None else list(self.size),
                "stride": None if self.stride is None else list(self.stride),
                "global": self.is_global, "global_context": self.global_context}


def _number(value: Fraction) -> float:
    return int(value) if value.denominator == 1 else round(float(value), 3)


def _pair_text(pair: tuple[float, float]) -> str:
    return f"{pair[0]:g}" if pair[0] == pair[1] else f"{pair[0]:g}x{pair[1]:g}"


@dataclass(frozen=True)
class _State:
    """What the tracker knows about one tensor."""

    size: Pair | None  # None: global
    jump: Pair | None
    context: bool
    spatial: tuple[bool, ...]  # per tensor dim: does this dim index spatial positions?

    def with_spatial(self, spatial) -> _State:
        return _State(self.size, self.jump, self.context, tuple(spatial))

    def made_global(self, spatial=None) -> _State:
        return _State(None, None, False, tuple(self.spatial if spatial is None else spatial))


# Ops that keep each unit's receptive field (elementwise maths, activations, normalisation, dtype and
# memory-layout changes, copies and selections). Anything else unknown is also treated this way but
# reported in `unrecognized`.
_POINTWISE = set("""
add sub rsub mul div true_divide truediv floor_divide remainder fmod pow neg abs exp exp2 expm1 log log2 log10
log1p sqrt rsqrt square reciprocal sign floor ceil round trunc frac erf erfc erfinv sin cos tan atan sinh cosh
sigmoid tanh relu relu6 leaky_relu elu selu celu gelu silu mish hardswish hardsigmoid hardtanh softplus softsign
logsigmoid tanhshrink softshrink hardshrink threshold prelu rrelu glu clamp clip clamp_min clamp_max maximum
minimum fmax fmin where masked_fill lerp addcmul addcdiv nan_to_num isnan isinf isfinite eq ne lt le gt ge
logical_and logical_or logical_not logical_xor bitwise_and bitwise_or bitwise_not
iadd isub imul idiv itruediv radd rmul rdiv rtruediv rpow
dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout
batch_norm layer_norm group_norm instance_norm rms_norm local_response_norm
to type type_as float double half bfloat16 contiguous clone detach requires_grad copy fill zero
view reshape view_as reshape_as flatten unflatten squeeze unsqueeze expand expand_as broadcast_to repeat tile
chunk split split_with_sizes tensor_split narrow select unbind cat concat concatenate stack pad constant_pad_nd
roll flip fliplr flipud getitem setitem get index_select gather masked_select take_along_dim
permute transpose swapaxes swapdims movedim t
""".split())
_CONSTANT_RESULT = re.compile(r"^(new_\w+|\w+_like)$")  # torch.zeros_like(x), x.new_ones(...): no dependence
_SHAPE_ONLY_SECOND = {"view_as", "reshape_as", "expand_as", "type_as"}  # the 2nd tensor gives only a shape/type
_REDUCTIONS = {"mean": 1, "sum": 1, "nansum": 1, "nanmean": 1, "amax": 1, "amin": 1, "max": 1, "min": 1,
               "std": 1, "var": 1, "std_mean": 1, "var_mean": 1, "logsumexp": 1, "prod": 1, "norm": 2,
               "median": 1, "nanmedian": 1, "argmax": 1, "argmin": 1, "all": 1, "any": 1, "count_nonzero": 1,
               "aminmax": 1}
# Ops whose output units mix all positions along argument `dim` (index, default when absent).
_ALONG_DIM = {"softmax": (1, None), "log_softmax": (1, None), "softmin": (1, None), "normalize": (2, 1),
              "cumsum": (1, None), "cumprod": (1, None), "cummax": (1, None), "cummin": (1, None),
              "logcumsumexp": (1, None), "sort": (1, -1), "argsort": (1, -1), "topk": (2, -1),
              "kthvalue": (2, -1)}
_ALWAYS_GLOBAL = {"scaled_dot_product_attention", "multi_head_attention_forward", "grid_sample",
                  "affine_grid", "nonzero", "unique"}
_TAPS = {"nearest": 1, "nearest-exact": 1, "linear": 2, "bilinear": 2, "trilinear": 2, "bicubic": 4}


def _arg(args, kwargs, index, name, default=None):
    if index is not None and len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _pair(value, n: int = 2) -> tuple[int, ...]:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return tuple(value) * n if len(value) == 1 else tuple(value)
    return (value,) * n


def _dims(dim, ndim: int) -> list[int]:
    if dim is None:
        return list(range(ndim))
    dims = dim if isinstance(dim, (list, tuple)) else [dim]
    return [d % ndim for d in dims] if ndim else []


def _reshape_spatial(in_shape, in_spatial, out_shape) -> tuple[bool, ...]:
    """Which output dims index positions after a reshape: dims kept at either end keep their role;
    the dims merged or split in between index positions if any input dim there did."""
    in_shape, out_shape = tuple(in_shape), tuple(out_shape)
    prefix = 0
    while prefix < min(len(in_shape), len(out_shape)) and in_shape[prefix] == out_shape[prefix]:
        prefix += 1
    suffix = 0
    while (suffix < min(len(in_shape), len(out_shape)) - prefix
           and in_shape[-1 - suffix] == out_shape[-1 - suffix]):
        suffix += 1
    middle = any(in_spatial[prefix:len(in_shape) - suffix])
    return (tuple(in_spatial[:prefix]) + (middle,) * (len(out_shape) - prefix - suffix)
            + tuple(in_spatial[len(in_shape) - suffix:]))


def _layout(state: _State, in_shape, out_shape) -> tuple[bool, ...]:
    """Default: same number of dims keeps each dim's role (pad, cat, narrow, elementwise); else reshape."""
    if len(in_shape) == len(out_shape):
        return state.spatial
    return _reshape_spatial(in_shape, state.spatial, out_shape)


class ReceptiveFieldTracker(TorchFunctionMode):
    """Tracks the receptive field of every tensor computed while the mode is active.

        tracker = ReceptiveFieldTracker()
        with tracker:
            x = tracker.watch(torch.zeros(1, 3, 64, 64))
            y = model(x)
        tracker.field(y)  # ReceptiveField(size=..., stride=...)
    """

    def __init__(self) -> None:
        super().__init__()
        self._states: dict[int, tuple[weakref.ref, _State]] = {}
        self.unrecognized: set[str] = set()  # ops treated as pointwise without being known to be
        self.used_parameters: set[int] = set()  # ids of the nn.Parameters that ops read

    def watch(self, tensor: torch.Tensor) -> torch.Tensor:
        """Mark `tensor` (B, C, H, W) as the input: each unit sees 1 pixel, neighbours 1 pixel apart."""
        spatial = (False,) * (tensor.ndim - 2) + (True, True)
        self._set(tensor, _State((Fraction(1), Fraction(1)), (Fraction(1), Fraction(1)), False, spatial))
        return tensor

    def field(self, tensor: torch.Tensor) -> ReceptiveField | None:
        """The receptive field of `tensor`'s units, or None if it does not depend on the input."""
        state = self._get(tensor)
        if state is None:
            return None
        if state.size is None:
            return ReceptiveField(None, None)
        return ReceptiveField(tuple(map(_number, state.size)), tuple(map(_number, state.jump)), state.context)

    def _get(self, tensor) -> _State | None:
        entry = self._states.get(id(tensor))
        # The weak reference guards against a freed tensor's id being reused by a new one.
        return entry[1] if entry is not None and entry[0]() is tensor else None

    def _set(self, tensor: torch.Tensor, state: _State) -> None:
        if len(state.spatial) != tensor.ndim:  # a rule got the layout wrong: fall back to the shape
            state = state.with_spatial((False,) * max(tensor.ndim - 2, 0) + (True,) * min(tensor.ndim, 2))
        self._states[id(tensor)] = (weakref.ref(tensor), state)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", "").strip("_")
        if name == "setitem":  # x[index] = value: x now also depends on value
            inputs = [t for t in (args[0], args[2]) if isinstance(t, torch.Tensor) and self._get(t)]
            if inputs:
                self._set(args[0], self._combine(inputs, args[0]))
            return result
        flat_args = tree_flatten((args, kwargs))[0]
        self.used_parameters.update(id(t) for t in flat_args if isinstance(t, torch.nn.Parameter))
        outputs = [t for t in tree_flatten(result)[0] if isinstance(t, torch.Tensor)]
        if not outputs or _CONSTANT_RESULT.match(name):
            return result
        if name in _SHAPE_ONLY_SECOND:
            flat_args = [args[0]]
        inputs = [t for t in flat_args if isinstance(t, torch.Tensor) and self._get(t)]
        if not inputs:
            return result  # computed from parameters and constants only
        try:
            states = self._propagate(func, name, args, kwargs, inputs, outputs)
        except Exception:  # noqa: BLE001 - a rule that cannot read unusual arguments must not stop the forward
            self.unrecognized.add(f"{name} (unreadable arguments, treated as global)")
            states = [_State(None, None, False, ()) for _ in outputs]  # _set gives them a default layout
        for out, state in zip(outputs, states):
            self._set(out, state)
        return result

    def _combine(self, inputs, out: torch.Tensor) -> _State:
        """Elementwise rule: the largest size and jump of the inputs, laid out like the largest input.

        A global input broadcast over the output's positions (an SE gate of shape (B, C, 1, 1)) keeps
        the local size and sets global context; a global input with the output's positions makes it global.
        """
        states = [self._get(t) for t in inputs]
        # The layout comes from the largest input, preferring one that is local and has positions.
        main = max(zip(inputs, states), key=lambda pair: (pair[0].numel(), pair[1].size is not None,
                                                          sum(pair[1].spatial)))[0]
        spatial = _layout(self._get(main), main.shape, out.shape)
        local = [s for s in states if s.size is not None]
        context = any(s.context for s in states)
        for tensor, state in zip(inputs, states):
            if state.size is not None:
                continue
            # Broadcast over a position dim: size 1 there, or stride 0 (an expanded view, as in expand_as).
            sizes = (1,) * (out.ndim - tensor.ndim) + tuple(tensor.shape)[-out.ndim:] if out.ndim else ()
            strides = (0,) * (out.ndim - tensor.ndim) + tuple(tensor.stride())[-out.ndim:] if out.ndim else ()
            broadcast = any(flag and out.shape[i] > 1 and (sizes[i] == 1 or strides[i] == 0)
                            for i, flag in enumerate(spatial) if i < len(sizes))
            if not broadcast:
                return _State(None, None, False, spatial)
            context = True
        if not local:
            return _State(None, None, False, spatial)
        size = tuple(max(s.size[axis] for s in local) for axis in range(2))
        jump = tuple(max(s.jump[axis] for s in local) for axis in range(2))
        return _State(size, jump, context, spatial)

    def _propagate(self, func, name, args, kwargs, inputs, outputs) -> list[_State]:
        x = args[0] if args and isinstance(args[0], torch.Tensor) else inputs[0]
        state = self._get(x) or self._get(inputs[0])
        out = outputs[0]
        if name in ("conv1d", "conv2d", "conv3d"):
            weight = args[1]
            n = weight.ndim - 2
            return [self._window(state, x, weight.shape[2:], _pair(_arg(args, kwargs, 3, "stride", 1), n),
                                 _pair(_arg(args, kwargs, 5, "dilation", 1), n))]
        if name in ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
            weight = args[1]
            n = weight.ndim - 2
            stride = _pair(_arg(args, kwargs, 3, "stride", 1), n)
            dilation = _pair(_arg(args, kwargs, 7, "dilation", 1), n)
            taps = [floor(Fraction((k - 1) * d, s)) + 1 for k, d, s in zip(weight.shape[2:], dilation, stride)]
            return [self._window(state, x, taps, [Fraction(1, s) for s in stride], (1,) * n)]
        match = re.fullmatch(r"(max|avg|lp)_pool([123])d(_with_indices)?", name)
        if match:
            n = int(match.group(2))
            offset = 1 if match.group(1) == "lp" else 0  # lp_pool2d(input, norm_type, kernel_size, stride)
            kernel = _pair(_arg(args, kwargs, 1 + offset, "kernel_size"), n)
            stride = _pair(_arg(args, kwargs, 2 + offset, "stride"), n) or kernel
            dilation = _pair(_arg(args, kwargs, 4, "dilation", 1), n) if match.group(1) == "max" else (1,) * n
            return [self._window(state, x, kernel, stride, dilation)] * len(outputs)
        if re.fullmatch(r"adaptive_(max|avg)_pool[123]d(_with_indices)?", name):
            return [self._resample(state, x, out, adaptive=True)] * len(outputs)
        if name == "interpolate":
            mode = _arg(args, kwargs, 3, "mode", "nearest")
            if mode == "area":
                return [self._resample(state, x, out, adaptive=True)]
            antialias = bool(_arg(args, kwargs, 6, "antialias", False))
            return [self._resample(state, x, out, taps=_TAPS.get(mode, 4), antialias=antialias)]
        if name in ("pixel_shuffle", "pixel_unshuffle"):
            return [self._resample(state, x, out, taps=1, block=name == "pixel_unshuffle")]
        if name == "unfold" and func is F.unfold:  # im2col: (B, C, H, W) -> (B, C*kh*kw, L)
            kernel = _pair(_arg(args, kwargs, 1, "kernel_size"))
            field = self._window(state, x, kernel, _pair(_arg(args, kwargs, 4, "stride", 1)),
                                 _pair(_arg(args, kwargs, 2, "dilation", 1)))
            return [field.with_spatial((False, False, True))]
        if name in ("linear", "matmul", "mm", "bmm", "einsum"):
            return [self._contract(name, args, kwargs, inputs, out)]
        if name in _ALWAYS_GLOBAL or name.startswith("fft"):
            return [self._combine(inputs, o).made_global() for o in outputs]
        if name in _REDUCTIONS and not (len(args) > 1 and isinstance(args[1], torch.Tensor)):
            dims = _dims(_arg(args, kwargs, _REDUCTIONS[name], "dim"), x.ndim)
            mixed = any(state.spatial[d] for d in dims)
            keep = [flag for d, flag in enumerate(state.spatial) if d not in dims]
            spatial = state.spatial if out.ndim == x.ndim else keep if out.ndim == len(keep) else None
            result = self._combine(inputs, out)
            result = result.made_global(spatial) if mixed else result.with_spatial(spatial or result.spatial)
            return [result] * len(outputs)
        if name in _ALONG_DIM:
            index, default = _ALONG_DIM[name]
            dims = _dims(_arg(args, kwargs, index, "dim", default), x.ndim)
            result = self._combine(inputs, out)
            return [result.made_global() if any(state.spatial[d] for d in dims) else result] * len(outputs)
        if name in ("permute", "transpose", "swapaxes", "swapdims", "movedim", "t"):
            return [state.with_spatial(self._permuted(state, name, args, kwargs, x))]
        if name == "flatten":
            start, end = (d % max(x.ndim, 1) for d in (_arg(args, kwargs, 1, "start_dim", 0),
                                                       _arg(args, kwargs, 2, "end_dim", -1)))
            flags = state.spatial
            return [state.with_spatial(flags[:start] + (any(flags[start:end + 1]),) + flags[end + 1:])]
        if name in ("unsqueeze", "unbind", "select", "stack"):
            return self._insert_or_remove(name, args, kwargs, inputs, outputs, x, state)
        if name in ("expand", "broadcast_to", "repeat", "tile"):
            return [state.with_spatial((False,) * (out.ndim - x.ndim) + state.spatial)]
        if name == "getitem":
            return [self._indexed(state, x, args[1], out)]
        if name not in _POINTWISE:
            self.unrecognized.add(name)
        return [self._combine(inputs, o) for o in outputs]

    def _window(self, state, x, kernel, stride, dilation) -> _State:
        """A sliding window over the last len(kernel) dims of x (convolution, pooling, im2col)."""
        n = len(kernel)
        window_dims = state.spatial[x.ndim - n:]
        if not any(window_dims):
            return state  # the window slides over channels (ECA's conv1d): positions are not mixed
        if state.size is None:
            return state
        if n != 2 or state.spatial != (False,) * (x.ndim - 2) + (True, True):
            return state.made_global()  # conservative: see the module docstring
        size = tuple(state.size[a] + (kernel[a] - 1) * dilation[a] * state.jump[a] for a in range(2))
        jump = tuple(state.jump[a] * Fraction(stride[a]) for a in range(2))
        return _State(size, jump, state.context, state.spatial)

    def _resample(self, state, x, out, taps=1, adaptive=False, antialias=False, block=False) -> _State:
        """Resize the last two dims from x's to out's size: interpolation, adaptive pooling, pixel shuffle."""
        if not any(state.spatial[x.ndim - 2:]) or state.size is None:
            return state.with_spatial(_layout(state, x.shape, out.shape))
        if state.spatial != (False,) * (x.ndim - 2) + (True, True):
            return state.made_global()
        kernel, stride = [], []
        for n_in, n_out in zip(x.shape[-2:], out.shape[-2:]):
            ratio = Fraction(n_in, n_out)
            if adaptive:
                if n_out == 1 and n_in > 1:
                    return state.made_global()  # global pooling
                kernel.append(max(ceil((i + 1) * n_in / n_out) - floor(i * n_in / n_out) for i in range(n_out)))
            elif block:  # pixel_unshuffle: each unit gathers a ratio x ratio block
                kernel.append(ratio)
            else:
                kernel.append(taps * max(ratio, 1) if antialias else taps)
            stride.append(ratio)
        size = tuple(state.size[a] + (kernel[a] - 1) * state.jump[a] for a in range(2))
        jump = tuple(state.jump[a] * stride[a] for a in range(2))
        return _State(size, jump, state.context, state.spatial)

    def _contract(self, name, args, kwargs, inputs, out) -> _State:
        """linear / matmul / einsum: global if a contracted dim indexes positions, else elementwise."""
        if name == "einsum":
            equation, operands = args[0], list(args[1:])
            if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
                operands = list(operands[0])
            if "..." in equation:
                return self._combine(inputs, out).made_global()  # rare; conservative
            terms, result_term = equation.replace(" ", "").split("->")
            spatial_letters = set()
            for term, operand in zip(terms.split(","), operands):
                state = self._get(operand) if isinstance(operand, torch.Tensor) else None
                if state is not None:
                    spatial_letters |= {letter for letter, flag in zip(term, state.spatial) if flag}
            combined = self._combine(inputs, out)
            if spatial_letters - set(result_term):
                return combined.made_global()
            return combined.with_spatial([letter in spatial_letters for letter in result_term])
        a = _arg(args, kwargs, 0, "input")
        b = args[1] if len(args) > 1 else kwargs.get("weight", kwargs.get("other", kwargs.get("mat2")))
        state_a = self._get(a) if isinstance(a, torch.Tensor) else None
        state_b = self._get(b) if isinstance(b, torch.Tensor) and name != "linear" else None
        contracted = (state_a is not None and state_a.spatial and state_a.spatial[-1]) or \
                     (state_b is not None and b.ndim >= 1 and state_b.spatial[-2 if b.ndim >= 2 else -1])
        combined = self._combine(inputs, out)
        if name == "linear":
            spatial = state_a.spatial if state_a is not None else combined.spatial
        else:
            flags_a = state_a.spatial if state_a is not None else (False,) * a.ndim
            flags_b = state_b.spatial if state_b is not None else (False,) * b.ndim
            rows = tuple(flags_a[-2:-1]) if a.ndim >= 2 else ()
            cols = tuple(flags_b[-1:]) if b.ndim >= 2 else ()
            count = out.ndim - len(rows) - len(cols)
            batch_a = (False,) * count + tuple(flags_a[:-2])  # batch dims broadcast from the right
            batch_b = (False,) * count + tuple(flags_b[:-2])
            batch = tuple(fa or fb for fa, fb in zip(batch_a[-count:] if count else (), batch_b[-count:] if count else ()))
            spatial = batch + rows + cols
        return combined.made_global(spatial) if contracted else combined.with_spatial(spatial)

    @staticmethod
    def _permuted(state, name, args, kwargs, x) -> tuple[bool, ...]:
        flags, ndim = list(state.spatial), x.ndim
        if name == "permute":
            order = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
            return tuple(flags[d % ndim] for d in kwargs.get("dims", order))
        if name == "t":
            return tuple(reversed(flags))
        if name == "movedim":
            source = _dims(_arg(args, kwargs, 1, "source"), ndim)
            destination = _dims(_arg(args, kwargs, 2, "destination"), ndim)
            rest = iter(d for d in range(ndim) if d not in source)
            order = dict(zip(destination, source))
            return tuple(flags[order[d] if d in order else next(rest)] for d in range(ndim))
        first, second = _arg(args, kwargs, 1, "dim0") % ndim, _arg(args, kwargs, 2, "dim1") % ndim
        flags[first], flags[second] = flags[second], flags[first]
        return tuple(flags)

    def _insert_or_remove(self, name, args, kwargs, inputs, outputs, x, state) -> list[_State]:
        if name == "stack":
            combined = self._combine(inputs, outputs[0])
            first = self._get(inputs[0])
            dim = _arg(args, kwargs, 1, "dim", 0) % outputs[0].ndim
            return [combined.with_spatial(first.spatial[:dim] + (False,) + first.spatial[dim:])]
        dim = _arg(args, kwargs, 1, "dim", 0)
        if name == "unsqueeze":
            dim %= x.ndim + 1
            return [state.with_spatial(state.spatial[:dim] + (False,) + state.spatial[dim:])]
        dim %= x.ndim
        return [state.with_spatial(state.spatial[:dim] + state.spatial[dim + 1:])] * len(outputs)

    def _indexed(self, state, x, index, out) -> _State:
        """x[index]: basic indexing keeps, drops or adds dims; a slice step on H or W multiplies the jump."""
        items = index if isinstance(index, tuple) else (index,)
        if any(isinstance(item, (torch.Tensor, list, bool)) for item in items):
            return state.with_spatial(_layout(state, x.shape, out.shape))  # advanced indexing: a selection
        consumed = sum(1 for item in items if item is not None and item is not Ellipsis)
        kept, dim = [], 0  # (is spatial, slice step) of each output dim
        for item in items:
            if item is None:
                kept.append((False, 1))
            elif item is Ellipsis:
                count = x.ndim - consumed
                kept += [(flag, 1) for flag in state.spatial[dim:dim + count]]
                dim += count
            elif isinstance(item, slice):
                kept.append((state.spatial[dim], item.step or 1))
                dim += 1
            else:  # an integer removes the dim
                dim += 1
        kept += [(flag, 1) for flag in state.spatial[dim:]]
        flags = tuple(flag for flag, _ in kept)
        steps = [step for flag, step in kept if flag]
        if state.size is None or len(steps) != 2 or sum(state.spatial) != 2:
            return state.with_spatial(flags)  # a step on folded positions (tokens) is not tracked
        jump = tuple(state.jump[a] * steps[a] for a in range(2))
        return _State(state.size, jump, state.context, flags)

