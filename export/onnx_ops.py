"""The ONNX operators the reader knows, each as the torch function that computes the same thing.

Every entry of :data:`OPS` takes the :class:`Node` and its inputs (tensors, :class:`Ints` for
small integer tensors, None for absent optional inputs) and returns its output or list of
outputs. An attribute form an op does not implement raises :meth:`Node.fail`. :data:`REFUSED`
names the ops the reader knows and refuses, with what to do instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from onnxcam.errors import OnnxcamError
from onnxcam_export.quantization import INTEGER_RANGES, dequantize, fake_quantize, quantize

_FLOAT_TYPES = {1: torch.float32, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16}
_INT_TYPES = {6: torch.int32, 7: torch.int64, 2: torch.uint8, 3: torch.int8, 4: torch.uint16,
              5: torch.int16, 12: torch.uint32, 13: torch.uint64}
_BOOL = 9


@dataclass(frozen=True)
class Ints:
    """A 0-D or 1-D integer tensor kept as Python integers (or SymInts while tracing)."""

    values: tuple
    scalar: bool = False

    @classmethod
    def of(cls, values, scalar: bool = False) -> "Ints":
        return cls(tuple(values), scalar)

    def list(self) -> list:
        return list(self.values)


Value = Union[torch.Tensor, Ints]


class Node:
    """One ONNX node: op type, name, input and output names, decoded attributes."""

    def __init__(self, proto, opset: int):
        from onnx import helper

        self.op, self.name, self.opset = proto.op_type, proto.name or proto.output[0], opset
        self.inputs, self.outputs = list(proto.input), list(proto.output)
        self.attrs = {}
        for attribute in proto.attribute:
            value = helper.get_attribute_value(attribute)
            self.attrs[attribute.name] = value.decode() if isinstance(value, bytes) else value

    def fail(self, what: str) -> OnnxcamError:
        return OnnxcamError(f"ONNX op {self.op} (node {self.name!r}): {what}")

    def get(self, key: str, default=None):
        return self.attrs.get(key, default)


def as_tensor(value: Value) -> torch.Tensor:
    if isinstance(value, Ints):
        data = torch.tensor(value.values, dtype=torch.int64)
        return data.reshape(()) if value.scalar else data
    return value


def _ints(value: Optional[Value], node: Node) -> Optional[list]:
    """A shape-like input as a Python list (None when the optional input is absent)."""
    if value is None:
        return None
    if isinstance(value, Ints):
        return value.list()
    if value.dtype.is_floating_point or value.dim() > 1:
        raise node.fail("expects a constant 1-D integer input here")
    return [int(v) for v in value.reshape(-1).tolist()]


def to_ints(tensor: torch.Tensor) -> Value:
    """Small integer constants become Ints; anything else stays a tensor."""
    if tensor.dtype in (torch.int64, torch.int32) and tensor.dim() <= 1 and tensor.numel() <= 64:
        return Ints.of((int(v) for v in tensor.reshape(-1).tolist()), scalar=tensor.dim() == 0)
    return tensor


def from_proto(tensor_proto) -> Value:
    from onnx import numpy_helper

    array = numpy_helper.to_array(tensor_proto)
    return to_ints(torch.from_numpy(np.array(array, copy=True)))


def _pairs(pads: Sequence[int]) -> list[tuple[int, int]]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] as (begin, end) per spatial axis."""
    half = len(pads) // 2
    return list(zip(pads[:half], pads[half:]))


def _torch_pad(pairs: Sequence[tuple[int, int]]) -> list[int]:
    """(begin, end) per axis, first axis first, to F.pad's order (last axis first)."""
    return [v for begin_end in reversed(pairs) for v in begin_end]


def _spatial_pads(node: Node, x: torch.Tensor, kernel: Sequence[int], strides: Sequence[int],
                  dilations: Sequence[int]) -> list[tuple[int, int]]:
    """Explicit (begin, end) pads of a pooling or convolution node, auto_pad resolved."""
    auto = node.get("auto_pad", "NOTSET")
    size = [int(s) for s in x.shape[2:]]
    if auto in ("NOTSET", ""):
        pads = node.get("pads") or [0] * (2 * len(kernel))
        return _pairs(pads)
    if auto == "VALID":
        return [(0, 0)] * len(kernel)
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise node.fail(f"auto_pad {auto} is not supported")
    pairs = []
    for s, k, st, d in zip(size, kernel, strides, dilations):
        total = max((math.ceil(s / st) - 1) * st + (k - 1) * d + 1 - s, 0)
        small, large = total // 2, total - total // 2
        pairs.append((small, large) if auto == "SAME_UPPER" else (large, small))
    return pairs


def _window(node: Node, x: torch.Tensor, kernel: Optional[Sequence[int]] = None):
    kernel = list(kernel or node.get("kernel_shape"))
    strides = list(node.get("strides") or [1] * len(kernel))
    dilations = list(node.get("dilations") or [1] * len(kernel))
    return kernel, strides, dilations, _spatial_pads(node, x, kernel, strides, dilations)


def _pool_padding(node: Node, x: torch.Tensor, kernel, strides, dilations, pairs) -> list[tuple[int, int]]:
    """Pads that make a floor-mode pooling give ONNX's output size (ceil_mode adds rows at the
    end; a window that would start in the end padding alone is dropped, as onnxruntime does)."""
    if not node.get("ceil_mode", 0):
        return list(pairs)
    out = []
    for s, k, st, d, (begin, end) in zip([int(v) for v in x.shape[2:]], kernel, strides, dilations, pairs):
        span = (k - 1) * d + 1
        count = math.ceil((s + begin + end - span) / st) + 1
        if (count - 1) * st >= s + begin:
            count -= 1
        out.append((begin, max(end, (count - 1) * st + span - s - begin)))
    return out


# ---- the ops -------------------------------------------------------------------------------

def _conv(node: Node, x, weight, bias=None):
    if x.dim() != 4:
        raise node.fail(f"only 2-D convolutions are supported (input of rank {x.dim()})")
    kernel, strides, dilations, pairs = _window(node, x, weight.shape[2:])
    groups = int(node.get("group", 1))
    if all(b == e for b, e in pairs):
        return F.conv2d(x, weight, bias, strides, [b for b, _ in pairs], dilations, groups)
    return F.conv2d(F.pad(x, _torch_pad(pairs)), weight, bias, strides, 0, dilations, groups)


def _max_pool(node: Node, x):
    if x.dim() != 4:
        raise node.fail(f"only 2-D pooling is supported (input of rank {x.dim()})")
    kernel, strides, dilations, pairs = _window(node, x)
    pairs = _pool_padding(node, x, kernel, strides, dilations, pairs)
    if all(b == e and b <= k // 2 for (b, e), k in zip(pairs, kernel)):
        return F.max_pool2d(x, kernel, strides, [b for b, _ in pairs], dilations)
    x = F.pad(x, _torch_pad(pairs), value=float("-inf"))
    return F.max_pool2d(x, kernel, strides, 0, dilations)


def _average_pool(node: Node, x):
    """Average pooling as the window mean over the padded input (count_include_pad, whose
    backward needs no divisor_override: torch.onnx drops that argument), rescaled by a constant
    where ONNX counts fewer elements (padding without count_include_pad, ceil-mode windows)."""
    if x.dim() != 4:
        raise node.fail(f"only 2-D pooling is supported (input of rank {x.dim()})")
    kernel, strides, dilations, pairs = _window(node, x)
    if dilations != [1] * len(kernel):
        raise node.fail("dilated average pooling is not supported")
    padded = _pool_padding(node, x, kernel, strides, dilations, pairs)
    if all(b == e and b <= k // 2 for (b, e), k in zip(padded, kernel)):
        means = F.avg_pool2d(x, kernel, strides, [b for b, _ in padded], count_include_pad=True)
    else:
        means = F.avg_pool2d(F.pad(x, _torch_pad(padded)), kernel, strides, 0, count_include_pad=True)
    counted = np.ones([int(s) for s in x.shape[2:]])
    counted = np.pad(counted, pairs, constant_values=1.0 if node.get("count_include_pad", 0) else 0.0)
    counted = np.pad(counted, [(0, e2 - e1) for (_, e1), (_, e2) in zip(pairs, padded)])
    windows = np.lib.stride_tricks.sliding_window_view(counted, kernel)[::strides[0], ::strides[1]]
    fraction = windows.sum(axis=(-2, -1)) / float(np.prod(kernel))
    if np.all(fraction == 1.0):
        return means
    return means / torch.from_numpy(fraction.astype(np.float32)).to(x.dtype)


def _batch_norm(node: Node, x, scale, bias, mean, var, *rest):
    if node.get("training_mode", 0):
        raise node.fail("training-mode batch normalization is not supported")
    if not node.get("spatial", 1):
        raise node.fail("spatial=0 is not supported")
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, float(node.get("epsilon", 1e-5)))


def _gemm(node: Node, a, b, c=None):
    if node.get("transA", 0):
        a = a.t()
    b = b.t() if node.get("transB", 0) else b
    alpha, beta = float(node.get("alpha", 1.0)), float(node.get("beta", 1.0))
    out = torch.matmul(a, b)
    out = out if alpha == 1.0 else out * alpha
    return out if c is None else out + (c if beta == 1.0 else c * beta)


def _clip(node: Node, x, low=None, high=None):
    if node.opset < 11:
        low, high = node.get("min"), node.get("max")
    low = None if low is None else float(as_tensor(low))
    high = None if high is None else float(as_tensor(high))
    if low is not None and high is not None:
        return F.hardtanh(x, low, high)
    return torch.clamp(x, low, high)


def _hard_sigmoid(node: Node, x):
    alpha, beta = float(node.get("alpha", 0.2)), float(node.get("beta", 0.5))
    if abs(alpha - 1 / 6) < 1e-6 and beta == 0.5:
        return F.hardsigmoid(x)
    return torch.clamp(x * alpha + beta, 0.0, 1.0)


def _softmax(node: Node, x, log: bool = False):
    fn = torch.log_softmax if log else torch.softmax
    if node.opset >= 13:
        return fn(x, int(node.get("axis", -1)))
    axis = int(node.get("axis", 1)) % x.dim()
    flat = x.reshape(list(x.shape[:axis]) + [-1])
    return fn(flat, axis).reshape(x.shape)


def _lrn(node: Node, x):
    """y = x / (bias + alpha / size * sum of x^2 over a channel window) ** beta; the window
    sum is a 1x1 convolution with a banded 0/1 matrix (its backward is a convolution too)."""
    size = int(node.get("size"))
    channels = int(x.shape[1])
    c = torch.arange(channels)
    offset = c[None, :] - c[:, None]
    band = ((offset >= -((size - 1) // 2)) & (offset <= math.ceil((size - 1) / 2))).to(x.dtype)
    window = F.conv2d(x * x, band[:, :, None, None])
    scale = float(node.get("bias", 1.0)) + float(node.get("alpha", 1e-4)) / size * window
    return x / scale ** float(node.get("beta", 0.75))


def _reduce(fn: str):
    def reduce(node: Node, x, axes=None):
        uses_input = node.opset >= 18 or (fn == "sum" and node.opset >= 13)
        axes = _ints(axes, node) if uses_input else node.get("axes")
        keep = bool(node.get("keepdims", 1))
        if isinstance(x, Ints):
            raise node.fail("reductions of shape values are not supported")
        if not axes:
            if node.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        if fn == "mean":
            return x.mean(dim=axes, keepdim=keep)
        if fn == "sum":
            return x.sum(dim=axes, keepdim=keep)
        out = x
        for axis in sorted((a % x.dim() for a in axes), reverse=True):
            out = (out.amax if fn == "max" else out.amin)(dim=axis, keepdim=keep)
        return out
    return reduce


def _flatten(node: Node, x):
    axis = int(node.get("axis", 1)) % max(x.dim(), 1)
    return x.reshape(list(x.shape[:axis]) + [-1]) if axis else x.reshape(1, -1)


def _transpose(node: Node, x):
    perm = node.get("perm") or list(range(x.dim()))[::-1]
    return x.permute(*perm)


def _pad(node: Node, x, pads=None, value=None, axes=None):
    mode = node.get("mode", "constant")
    if node.opset < 11:
        pads, value = node.get("pads"), node.get("value", 0.0)
    else:
        pads = _ints(pads, node)
        value = 0.0 if value is None else float(as_tensor(value))
    axes = list(range(x.dim())) if axes is None else [a % x.dim() for a in _ints(axes, node)]
    full = [(0, 0)] * x.dim()
    for axis, pair in zip(axes, _pairs(pads)):
        full[axis] = pair
    while full and full[0] == (0, 0):  # F.pad pads the trailing axes
        full = full[1:]
    if not full:
        return x
    modes = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}
    if mode not in modes:
        raise node.fail(f"mode {mode} is not supported")
    if mode == "constant":
        return F.pad(x, _torch_pad(full), value=value)
    if len(full) > 2:
        raise node.fail(f"{mode} padding of the batch or channel axis is not supported")
    return F.pad(x, _torch_pad(full), mode=modes[mode])


def reshape(node: Node, x, shape, fixed_batch: Optional[int] = None):
    """``fixed_batch``: the file's fixed batch size; a target shape that starts with it keeps
    the batch of ``x`` instead (given while running the graph, never while folding)."""
    target = _ints(shape, node)
    if isinstance(x, Ints):
        return Ints.of(x.values, scalar=not target)
    if not node.get("allowzero", 0):
        target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
    if fixed_batch is not None and target and isinstance(target[0], int) and target[0] == fixed_batch \
            and x.dim() > 0:
        target[0] = x.shape[0]
    return x.reshape(target)


def _shape(node: Node, x):
    dims = list(x.shape) if isinstance(x, torch.Tensor) else ([] if x.scalar else [len(x.values)])
    start, end = node.get("start", 0), node.get("end")
    return Ints.of(dims[start:end])


def _gather(node: Node, data, indices):
    axis = int(node.get("axis", 0))
    if isinstance(data, Ints):
        if axis != 0:
            raise node.fail("gather from a shape along an axis other than 0")
        idx = _ints(indices, node)
        picked = [data.values[i] for i in idx]
        scalar = isinstance(indices, Ints) and indices.scalar or (
            isinstance(indices, torch.Tensor) and indices.dim() == 0)
        return Ints.of(picked, scalar=scalar)
    index = as_tensor(indices).to(torch.int64)
    size = data.shape[axis]
    index = torch.where(index < 0, index + size, index)
    picked = torch.index_select(data, axis, index.reshape(-1))
    return picked.reshape(list(data.shape[:axis]) + list(index.shape) + list(data.shape[axis + 1:]))


def _unsqueeze(node: Node, x, axes=None):
    axes = _ints(axes, node) if node.opset >= 13 else node.get("axes")
    if isinstance(x, Ints):
        if x.scalar and axes in ([0], [-1]):
            return Ints.of(x.values)
        raise node.fail("unsqueezing a 1-D shape value is not supported")
    rank = x.dim() + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = x.unsqueeze(axis)
    return x


def _squeeze(node: Node, x, axes=None):
    axes = _ints(axes, node) if node.opset >= 13 else node.get("axes")
    if isinstance(x, Ints):
        if len(x.values) == 1:
            return Ints.of(x.values, scalar=True)
        raise node.fail("squeezing a shape value of length > 1")
    if not axes:
        axes = [i for i, s in enumerate(x.shape) if s == 1]
    for axis in sorted((a % x.dim() for a in axes), reverse=True):
        x = x.squeeze(axis)
    return x


def _concat(node: Node, *parts):
    axis = int(node.get("axis"))
    if all(isinstance(p, Ints) for p in parts):
        return Ints.of(v for p in parts for v in p.values)
    return torch.cat([as_tensor(p) for p in parts], axis)


def _slice(node: Node, x, starts=None, ends=None, axes=None, steps=None):
    if node.opset < 10:
        starts, ends, axes = node.get("starts"), node.get("ends"), node.get("axes")
    else:
        starts, ends, axes, steps = (_ints(v, node) for v in (starts, ends, axes, steps))
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)
    if isinstance(x, Ints):
        if axes != [0] and axes != [-1]:
            raise node.fail("slicing a shape value along an axis other than 0")
        return Ints.of(x.values[_clamped(starts[0], ends[0], steps[0], len(x.values))])
    index = [slice(None)] * x.dim()
    for begin, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        if axis == 0:  # the batch axis: only the whole of it
            if step != 1 or begin != 0 or end < 2 ** 31:
                raise node.fail("slicing the batch axis is not supported")
            continue
        size = int(x.shape[axis])
        if step < 0:  # a reversed slice: flip, then slice forward
            x = x.flip(axis)
            window = _clamped(begin, end, step, size)
            begin, end, step = size - 1 - window.start, size - 1 - window.stop, -step
        window = _clamped(begin, end, step, size)
        index[axis] = slice(window.start, window.stop, window.step)
    return x[tuple(index)]


def _clamped(begin: int, end: int, step: int, size: int) -> slice:
    """ONNX Slice's start and end on an axis of ``size``, clamped as the operator defines."""
    begin = begin + size if begin < 0 else begin
    end = end + size if end < 0 else end
    if step > 0:
        return slice(min(max(begin, 0), size), min(max(end, 0), size), step)
    return slice(min(max(begin, 0), size - 1), min(max(end, -1), size - 1), step)


def _split(node: Node, x, split=None):
    axis = int(node.get("axis", 0))
    if node.opset < 13:
        split = node.get("split")
    else:
        split = _ints(split, node)
    if not split:
        count = len(node.outputs)
        size = int(x.shape[axis])
        chunk = -(-size // count)
        split = [min(chunk, size - i * chunk) for i in range(count)]
    return list(torch.split(x, split, axis))


def _cast(node: Node, x):
    to = int(node.get("to"))
    if isinstance(x, Ints):
        if to in _INT_TYPES:
            return x
        return as_tensor(x).to(_FLOAT_TYPES.get(to, torch.float32))
    dtype = _FLOAT_TYPES.get(to) or _INT_TYPES.get(to) or (torch.bool if to == _BOOL else None)
    if dtype is None:
        raise node.fail(f"cast to ONNX type {to} is not supported")
    return x.to(dtype)


def _constant(node: Node):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in node.attrs:
            value = node.attrs[key]
            if key == "value":
                return from_proto(value)
            if key.startswith("value_int"):
                return Ints.of(value if isinstance(value, list) else [value], scalar=key == "value_int")
            return torch.tensor(value, dtype=torch.float32)
    raise node.fail(f"attributes {sorted(node.attrs)} are not supported")


def _constant_of_shape(node: Node, shape):
    value = node.get("value")
    fill = as_tensor(from_proto(value)) if value is not None else torch.zeros(1)
    return torch.full(_ints(shape, node), fill.reshape(-1)[0].item(), dtype=fill.dtype)


def _expand(node: Node, x, shape):
    target = _ints(shape, node)
    return x.expand(torch.broadcast_shapes(tuple(x.shape), tuple(target)))


def _arith(fn: Callable):
    def arith(node: Node, a, b):
        if isinstance(a, Ints) and isinstance(b, Ints):
            left, right = a.values, b.values
            n = max(len(left), len(right))
            left = left * n if len(left) == 1 else left
            right = right * n if len(right) == 1 else right
            return Ints.of((fn(x, y) for x, y in zip(left, right)), scalar=a.scalar and b.scalar)
        a, b = as_tensor(a), as_tensor(b)
        if fn is _floordiv and not (a.is_floating_point() or b.is_floating_point()):
            return torch.div(a, b, rounding_mode="trunc")
        return fn(a, b)
    return arith


def _floordiv(a, b):
    """ONNX Div: on shape values (Python or symbolic integers) integer division."""
    return a / b if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor) else a // b


def _variadic(fn: Callable):
    def variadic(node: Node, *xs):
        out = xs[0]
        for x in xs[1:]:
            out = fn(out, x)
        return out
    return variadic


def _unary(fn: Callable):
    return lambda node, x: fn(x)


class Quantized:
    """The integer output of a ``QuantizeLinear`` on a computed tensor: ``x`` and its
    quantization, waiting for the ``DequantizeLinear`` that makes the pair one
    :data:`~onnxcam_export.quantization.fake_quantize` (made once, however many read it)."""

    def __init__(self, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int, floor: bool):
        self.x, self.scale, self.zero_point, self.axis = x, scale, zero_point, axis
        self.floor = floor  # the zero point is the integer type's least value: no negative values
        self.pair: Optional[torch.Tensor] = None

    def dequantized(self) -> torch.Tensor:
        if self.pair is None:
            self.pair = fake_quantize(self.x, self.scale, self.zero_point, self.axis, self.floor)
        return self.pair


def _quantization(node: Node, x, scale, zero_point, integer: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Scale, zero point (default: zero of ``integer``) and axis of a Q/DQ node."""
    scale = as_tensor(scale).to(torch.float32)
    if zero_point is None:
        zero_point = torch.zeros((), dtype=integer)
    elif isinstance(zero_point, Ints):
        zero_point = as_tensor(zero_point).to(torch.int32)
    if scale.numel() == 1:
        return scale.reshape(()), zero_point.reshape(()), 1
    if node.opset < 13:
        raise node.fail("per-channel scales need opset 13 or later")
    return scale, zero_point.reshape(-1).expand(scale.shape[0]).contiguous(), \
        int(node.get("axis", 1)) % max(as_tensor(x).dim(), 1)


def quantize_linear(node: Node, x, scale, zero_point=None, constant: bool = False):
    """A constant (weights) quantized now; a computed tensor as :class:`Quantized`."""
    if node.get("block_size", 0):
        raise node.fail("blocked quantization is not supported")
    scale, zero_point, axis = _quantization(node, x, scale, zero_point, torch.uint8)
    if zero_point.dtype not in INTEGER_RANGES or zero_point.dtype == torch.int32:
        raise node.fail(f"quantization to {zero_point.dtype} is not supported (uint8 and int8 are)")
    if not constant:
        if zero_point.dtype == torch.int8:  # the same numbers as uint8 with the zero point 128 up:
            # onnxruntime's x86 kernels fuse uint8 activations, int8 ones only in part
            zero_point = (zero_point.to(torch.int16) + 128).to(torch.uint8)
        return Quantized(x, scale, zero_point, axis, node.attrs["_floor"])
    return quantize(x, scale, zero_point, axis)


def dequantize_linear(node: Node, x, scale, zero_point=None):
    if node.get("block_size", 0):
        raise node.fail("blocked quantization is not supported")
    if isinstance(x, Quantized):  # the pair's parameters match (checked while the module is built)
        return x.dequantized()
    x = as_tensor(x).to(torch.int32) if isinstance(x, Ints) else x
    scale, zero_point, axis = _quantization(node, x, scale, zero_point, x.dtype)
    return dequantize(x, scale, zero_point.to(x.dtype), axis)


def _identity(node: Node, x, *rest):
    return x


def _dropout(node: Node, x, *rest):
    return x


OPS: dict[str, Callable] = {
    "Conv": _conv, "MaxPool": _max_pool, "AveragePool": _average_pool,
    "GlobalAveragePool": lambda node, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda node, x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
    "BatchNormalization": _batch_norm, "Gemm": _gemm,
    "MatMul": lambda node, a, b: torch.matmul(a, b),
    "Relu": _unary(torch.relu), "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh),
    "HardSigmoid": _hard_sigmoid, "HardSwish": _unary(F.hardswish), "Clip": _clip,
    "LeakyRelu": lambda node, x: F.leaky_relu(x, float(node.get("alpha", 0.01))),
    "PRelu": lambda node, x, slope: torch.where(x >= 0, x, x * slope),
    "Elu": lambda node, x: F.elu(x, float(node.get("alpha", 1.0))),
    "Softplus": _unary(F.softplus), "Exp": _unary(torch.exp), "Log": _unary(torch.log),
    "Sqrt": _unary(torch.sqrt), "Neg": _unary(torch.neg), "Abs": _unary(torch.abs),
    "Reciprocal": _unary(torch.reciprocal), "Erf": _unary(torch.erf),
    "Pow": lambda node, a, b: torch.pow(a, as_tensor(b)),
    "Add": _arith(lambda a, b: a + b), "Sub": _arith(lambda a, b: a - b),
    "Mul": _arith(lambda a, b: a * b), "Div": _arith(_floordiv),
    "Sum": _variadic(torch.add), "Max": _variadic(torch.maximum), "Min": _variadic(torch.minimum),
    "Mean": lambda node, *xs: _variadic(torch.add)(node, *xs) / len(xs),
    "Softmax": _softmax, "LogSoftmax": lambda node, x: _softmax(node, x, log=True),
    "LRN": _lrn, "ReduceMean": _reduce("mean"), "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"), "ReduceMin": _reduce("min"),
    "Flatten": _flatten, "Transpose": _transpose, "Pad": _pad, "Shape": _shape,
    "Gather": _gather, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Concat": _concat,
    "Slice": _slice, "Split": _split, "Cast": _cast, "Constant": _constant,
    "ConstantOfShape": _constant_of_shape, "Expand": _expand, "Identity": _identity,
    "Dropout": _dropout, "Reshape": reshape,
    "QuantizeLinear": quantize_linear, "DequantizeLinear": dequantize_linear,
}
# ops the reader knows and refuses, with what to do instead
REFUSED = {
    op: "dynamic quantization (quantize_dynamic) computes its scales while it runs and is not supported; "
        "quantize statically instead (onnxcam export MODEL --int8 --calibration DIR, or "
        "onnxruntime.quantization.quantize_static in QDQ form)"
    for op in ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
               "MatMulIntegerToFloat", "DynamicQuantizeLSTM")
}
NOT_FOLDED = ("DequantizeLinear",)  # kept as nodes: onnxruntime's integer kernels read their inputs
