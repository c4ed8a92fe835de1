"""The ONNX operators the reader knows, each as the torch function that computes the same thing.

Every entry of :data:`OPS` takes the :class:`Node` and its inputs (tensors, :class:`Ints` for
small integer tensors, None for absent optional inputs) and returns its output or list of
outputs. An attribute form an op does not implement raises :meth:`Node.fail`; :data:`NOTES`
says which, for the supported-op page (:mod:`onnxcam_export.op_list`). :data:`REFUSED` names the
ops the reader knows and refuses, with what to do instead.
"""
from __future__ import annotations

import math
import operator
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
    """A small integer tensor kept as Python integers (or SymInts while tracing): 0-D, 1-D, or a
    grid of ``shape`` (row-major ``values``), as legacy exports make of F.pad's pads (pairs,
    reversed, transposed); only Reshape, Slice and Transpose keep a grid one."""

    values: tuple
    scalar: bool = False
    shape: Optional[tuple] = None  # a grid's shape (two or more axes)

    @classmethod
    def of(cls, values, scalar: bool = False) -> "Ints":
        return cls(tuple(values), scalar)

    @classmethod
    def of_grid(cls, grid: np.ndarray) -> "Ints":
        return cls(tuple(grid.reshape(-1).tolist()), grid.ndim == 0, tuple(grid.shape) if grid.ndim > 1 else None)

    def list(self) -> list:
        return list(self.values)

    def grid(self) -> np.ndarray:
        """The values as a numpy array of Python objects, shaped as the tensor."""
        grid = np.empty(len(self.values), dtype=object)
        grid[:] = self.values
        return grid.reshape(self.shape or (() if self.scalar else (len(self.values),)))


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
        return data.reshape(value.shape or (() if value.scalar else -1))
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


def _floats(value: Value) -> list[float]:
    """A constant input's values as Python floats, also while make_fx traces the module (whose
    fake mode would turn them into data-dependent symbols)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():
        return as_tensor(value).reshape(-1).tolist()


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
    """A 1-D or 2-D convolution (1-D: the channel attention of ECA blocks)."""
    if x.dim() not in (3, 4):
        raise node.fail(f"only 1-D and 2-D convolutions are supported (input of rank {x.dim()})")
    conv = F.conv1d if x.dim() == 3 else F.conv2d
    kernel, strides, dilations, pairs = _window(node, x, weight.shape[2:])
    groups = int(node.get("group", 1))
    if all(b == e for b, e in pairs):
        return conv(x, weight, bias, strides, [b for b, _ in pairs], dilations, groups)
    return conv(F.pad(x, _torch_pad(pairs)), weight, bias, strides, 0, dilations, groups)


def _conv_transpose(node: Node, x, weight, bias=None):
    """A 2-D transposed convolution as a stride-1 convolution of the input with stride - 1 zeros
    between its pixels, with the kernels flipped and their in/out channels swapped per group (its
    backward is then a forward convolution's)."""
    if x.dim() != 4:
        raise node.fail(f"only 2-D transposed convolutions are supported (input of rank {x.dim()})")
    groups = int(node.get("group", 1))
    c_in, c_group, *kernel = (int(v) for v in weight.shape)
    strides = list(node.get("strides") or [1, 1])
    dilations = list(node.get("dilations") or [1, 1])
    extra = list(node.get("output_padding") or [0, 0])
    size = [int(s) for s in x.shape[2:]]
    auto, shape = node.get("auto_pad", "NOTSET"), node.get("output_shape")
    if shape or auto in ("SAME_UPPER", "SAME_LOWER"):  # pads from the output size, split as onnxruntime does
        target = list(shape)[-2:] if shape else [s * st for s, st in zip(size, strides)]
        total = [max((s - 1) * st + e + (k - 1) * d + 1 - t, 0)
                 for s, st, e, k, d, t in zip(size, strides, extra, kernel, dilations, target)]
        pairs = [(t // 2, t - t // 2) if auto == "SAME_UPPER" else (t - t // 2, t // 2) for t in total]
    elif auto == "VALID":
        pairs = [(0, 0), (0, 0)]
    elif auto in ("NOTSET", ""):
        pairs = _pairs(node.get("pads") or [0] * 4)
    else:
        raise node.fail(f"auto_pad {auto} is not supported")
    if strides != [1, 1]:
        (h, w), (sh, sw) = size, strides
        x = F.pad(x.reshape(-1, c_in, h, 1, w, 1), [0, sw - 1, 0, 0, 0, sh - 1]).reshape(-1, c_in, h * sh, w * sw)
    flipped = (weight.reshape(groups, c_in // groups, c_group, *kernel).transpose(1, 2)
               .reshape(groups * c_group, c_in // groups, *kernel).flip(2, 3))
    # the kernel's reach on either side, less the pads (a negative pad crops), plus output_padding at the
    # end, less the stride - 1 zeros after the last pixel
    pads = [(d * (k - 1) - begin, d * (k - 1) - end + more - (st - 1))
            for d, k, (begin, end), more, st in zip(dilations, kernel, pairs, extra, strides)]
    return F.conv2d(F.pad(x, _torch_pad(pads)), flipped, bias, 1, 0, dilations, groups)


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
    """Inference form, or training form (batch statistics: NF-Nets standardize their weights so;
    only the normalized output is read)."""
    if not node.get("spatial", 1):
        raise node.fail("spatial=0 is not supported")
    training = bool(node.get("training_mode", 0))
    return F.batch_norm(x, None if training else mean, None if training else var, scale, bias, training, 0.0,
                        float(node.get("epsilon", 1e-5)))


def _mod(node: Node, a, b):
    """ONNX Mod: the remainder with the divisor's sign (Python's %), or with ``fmod`` the
    dividend's (C's fmod, the only form for floats)."""
    fmod = bool(node.get("fmod", 0))
    if isinstance(a, Ints) and isinstance(b, Ints):
        return _elementwise(lambda x, y: int(math.fmod(x, y)) if fmod else x % y, a, b)
    return (torch.fmod if fmod else torch.remainder)(as_tensor(a), as_tensor(b))


def _layer_norm(node: Node, x, scale, bias=None):
    axis = int(node.get("axis", -1)) % x.dim()
    shape = x.shape[axis:]
    bias = None if bias is None else bias.broadcast_to(shape)
    return F.layer_norm(x, shape, scale.broadcast_to(shape), bias, float(node.get("epsilon", 1e-5)))


def _group_norm(node: Node, x, scale, bias):
    """GroupNormalization-18 has a scale and bias per group, -21 per channel."""
    groups, channels = int(node.get("num_groups")), int(x.shape[1])
    if scale.numel() != channels:
        scale, bias = (v.repeat_interleave(channels // groups) for v in (scale, bias))
    return F.group_norm(x, groups, scale, bias, float(node.get("epsilon", 1e-5)))


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


def _per_axis(fn: Callable) -> Callable:
    """A reduction that torch computes over one axis at a time."""
    def reduce(x, axes, keep):
        for axis in sorted((a % x.dim() for a in axes), reverse=True):
            x = fn(x, axis, keep)
        return x
    return reduce


_REDUCTIONS: dict[str, Callable] = {  # ReduceX: (x, axes, keepdims) -> tensor
    "Mean": lambda x, axes, keep: x.mean(dim=axes, keepdim=keep),
    "Sum": lambda x, axes, keep: x.sum(dim=axes, keepdim=keep),
    "SumSquare": lambda x, axes, keep: (x * x).sum(dim=axes, keepdim=keep),
    "L1": lambda x, axes, keep: x.abs().sum(dim=axes, keepdim=keep),
    "L2": lambda x, axes, keep: (x * x).sum(dim=axes, keepdim=keep).sqrt(),
    "LogSumExp": lambda x, axes, keep: torch.logsumexp(x, axes, keep),
    "Max": _per_axis(torch.amax), "Min": _per_axis(torch.amin), "Prod": _per_axis(torch.prod),
}


def _reduce(kind: str) -> Callable:
    def reduce(node: Node, x, axes=None):
        uses_input = node.opset >= 18 or (kind == "Sum" and node.opset >= 13)
        axes = _ints(axes, node) if uses_input else node.get("axes")
        if isinstance(x, Ints):
            raise node.fail("reductions of shape values are not supported")
        if not axes:
            if node.get("noop_with_empty_axes", 0):
                return x
            axes = list(range(x.dim()))
        return _REDUCTIONS[kind](x, axes, bool(node.get("keepdims", 1)))
    return reduce


def _cumsum(node: Node, x, axis):
    axis = _ints(axis, node)[0] % x.dim()
    reverse = node.get("reverse", 0)
    x = x.flip(axis) if reverse else x
    out = x.cumsum(axis)
    if node.get("exclusive", 0):  # shifted one along the axis, a zero first
        out = F.pad(out.narrow(axis, 0, x.shape[axis] - 1), [0, 0] * (x.dim() - 1 - axis) + [1, 0])
    return out.flip(axis) if reverse else out


def _flatten(node: Node, x):
    """Always 2-D: [prod(shape[:axis]), prod(shape[axis:])], the leading product (the batch's
    axis) left to reshape so that it stays symbolic."""
    axis = int(node.get("axis", 1))
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(-1, math.prod(x.shape[axis:])) if axis else x.reshape(1, -1)


def _depth_to_space(node: Node, x):
    b = int(node.get("blocksize"))
    _, c, h, w = x.shape
    if node.get("mode", "DCR") == "DCR":
        y = x.reshape(-1, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    else:  # CRD
        y = x.reshape(-1, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(-1, c // (b * b), h * b, w * b)


def _space_to_depth(node: Node, x):
    b = int(node.get("blocksize"))
    _, c, h, w = x.shape
    y = x.reshape(-1, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
    return y.reshape(-1, c * b * b, h // b, w // b)


def _transpose(node: Node, x):
    perm = node.get("perm")  # none: the axes reversed
    if isinstance(x, Ints):
        return Ints.of_grid(x.grid().transpose(perm or None))
    return x.permute(*(perm or range(x.dim() - 1, -1, -1)))


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


# output index -> input coordinate per coordinate_transformation_mode, in onnxruntime's float32
_COORDINATES: dict[str, Callable] = {
    "half_pixel": lambda x, scale, n_in, n_out: (x + 0.5) / scale - 0.5,
    "half_pixel_symmetric": lambda x, scale, n_in, n_out:
        n_in / 2 * (1 - n_out / (scale * n_in)) + (x + 0.5) / scale - 0.5,
    "pytorch_half_pixel": lambda x, scale, n_in, n_out: (x + 0.5) / scale - 0.5 if n_out > 1 else 0 * x,
    "align_corners": lambda x, scale, n_in, n_out: x * (n_in - 1) / (n_out - 1) if n_out > 1 else 0 * x,
    "asymmetric": lambda x, scale, n_in, n_out: x / scale,
    "tf_half_pixel_for_nn": lambda x, scale, n_in, n_out: (x + 0.5) / scale,
}
# input coordinate -> input index per nearest_mode ("simple": onnxruntime's Upsample and Resize-10)
_NEAREST: dict[str, Callable] = {
    "round_prefer_floor": lambda x, down: np.ceil(x - 0.5), "round_prefer_ceil": lambda x, down: np.floor(x + 0.5),
    "floor": lambda x, down: np.floor(x), "ceil": lambda x, down: np.ceil(x),
    "simple": lambda x, down: np.ceil(x) if down else np.floor(x),
}


def _cubic(ratio: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic weights of the taps -1, 0, 1, 2 around each coordinate (``ratio`` past its floor)."""
    d = np.abs(ratio[:, None] - np.array([-1.0, 0.0, 1.0, 2.0]))
    return np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a)


def _interpolation(node: Node, coordinate: str, nearest: str, n_in: int, n_out: int, scale: float) -> np.ndarray:
    """The [n_out, n_in] matrix of one axis' resize: each output's weights on the inputs."""
    mode = node.get("mode", "nearest")
    x = _COORDINATES[coordinate](np.arange(n_out, dtype=np.float32), np.float32(scale), np.float32(n_in),
                                 np.float32(n_out))
    if mode == "nearest":
        taps, weights = _NEAREST[nearest](x, scale < 1)[:, None], np.ones((n_out, 1))
    elif mode == "linear":
        x = np.clip(x, 0, n_in - 1)
        low = np.floor(x)
        taps, weights = low[:, None] + np.array([0, 1]), np.stack([1 - (x - low), x - low], 1)
    elif mode == "cubic":
        low = np.floor(x)
        taps, weights = low[:, None] + np.array([-1, 0, 1, 2]), _cubic(x - low, float(node.get("cubic_coeff_a", -0.75)))
        if node.get("exclude_outside", 0):
            weights = np.where((taps >= 0) & (taps < n_in), weights, 0.0)
            weights = weights / weights.sum(1, keepdims=True)
    else:
        raise node.fail(f"mode {mode} is not supported")
    matrix = np.zeros((n_out, n_in))
    rows = np.broadcast_to(np.arange(n_out)[:, None], taps.shape)
    np.add.at(matrix, (rows, np.clip(taps, 0, n_in - 1).astype(np.int64)), weights)
    return matrix


def _resized(node: Node, x, scales: list, sizes: Optional[Value], coordinate: str, nearest: str):
    """Resize as a product with a constant interpolation matrix per resized axis (the backward:
    its transpose). The batch axis keeps its size (a file fixed at batch 1 says 1 there)."""
    if coordinate not in _COORDINATES:
        raise node.fail(f"coordinate_transformation_mode {coordinate} is not supported")
    sizes = None if scales else _ints(sizes, node)
    for i, axis in enumerate(a % x.dim() for a in node.get("axes", range(x.dim()))):
        if scales[i] == 1 if scales else axis == 0 or sizes[i] == x.shape[axis]:
            continue
        if axis == 0:
            raise node.fail("resizing the batch axis is not supported")
        n_in = int(x.shape[axis])
        n_out = int(np.float32(scales[i]) * np.float32(n_in)) if scales else sizes[i]
        scale = scales[i] if scales else float(np.float32(n_out) / np.float32(n_in))
        matrix = torch.from_numpy(_interpolation(node, coordinate, nearest, n_in, n_out, scale)).to(x.dtype)
        x = torch.matmul(matrix, x.movedim(axis, -2)).movedim(-2, axis)
    return x


def _resize(node: Node, x, roi=None, scales=None, sizes=None):
    if node.opset < 11:  # Resize-10 reads (X, scales) and computes as Upsample
        return _resized(node, x, _floats(roi), None, "asymmetric", "simple")
    for key, plain in (("antialias", 0), ("keep_aspect_ratio_policy", "stretch")):
        if node.get(key, plain) != plain:
            raise node.fail(f"{key}={node.get(key)} is not supported")
    coordinate = node.get("coordinate_transformation_mode", "half_pixel")
    return _resized(node, x, [] if scales is None else _floats(scales), sizes, coordinate,
                    node.get("nearest_mode", "round_prefer_floor"))


def _upsample(node: Node, x, scales=None):
    scales = node.get("scales") if scales is None else _floats(scales)  # an attribute before opset 9
    return _resized(node, x, scales, None, "asymmetric", "simple")


def reshape(node: Node, x, shape, fixed_batch: Optional[int] = None):
    """``fixed_batch``: the file's fixed batch size; a target shape that starts with it keeps
    the batch of ``x`` instead (given while running the graph, never while folding)."""
    target = _ints(shape, node)
    if isinstance(x, Ints) and x.shape is None and len(target) <= 1:
        return Ints.of(x.values, scalar=not target)
    value = x.grid() if isinstance(x, Ints) else x
    if not node.get("allowzero", 0):
        target = [value.shape[i] if v == 0 else v for i, v in enumerate(target)]
    if isinstance(x, Ints):
        return Ints.of_grid(value.reshape(target))
    if fixed_batch is not None and target and isinstance(target[0], int) and target[0] == fixed_batch \
            and x.dim() > 0:
        target[0] = x.shape[0]
    return x.reshape(target)


def _shape(node: Node, x):
    dims = list(x.shape) if isinstance(x, torch.Tensor) else list(x.grid().shape)
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


def _gather_nd(node: Node, data, indices):
    batch = int(node.get("batch_dims", 0))
    index = as_tensor(indices).to(torch.int64)
    depth = int(index.shape[-1])
    bounds = torch.tensor([int(s) for s in data.shape[batch:batch + depth]])
    shape = list(index.shape[:-1]) + list(data.shape[batch + depth:])
    index = torch.where(index < 0, index + bounds, index)
    rows = data.reshape([-1] + list(data.shape[batch:]))  # the batch axes as one
    index = index.reshape(rows.shape[0], -1, depth)
    return rows[(torch.arange(rows.shape[0]).reshape(-1, 1), *index.unbind(-1))].reshape(shape)


def _unsqueeze(node: Node, x, axes=None):
    axes = _ints(axes, node) if node.opset >= 13 else node.get("axes")
    if isinstance(x, Ints):
        if x.scalar and axes in ([0], [-1]):
            return Ints.of(x.values)
        x = as_tensor(x)  # a 1-D index computation made 2-D (the dynamo exporter's batch indices)
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


def slice_(node: Node, x, starts=None, ends=None, axes=None, steps=None, batched: bool = True):
    """Slice; on a tensor that carries the image's batch (``batched``; Swin's attention masks,
    pads as pairs: not) only the whole batch axis."""
    if node.opset < 10:
        starts, ends, axes = node.get("starts"), node.get("ends"), node.get("axes")
    else:
        starts, ends, axes, steps = (_ints(v, node) for v in (starts, ends, axes, steps))
    axes = axes or list(range(len(starts)))
    steps = steps or [1] * len(starts)
    if isinstance(x, Ints):
        grid = x.grid()
        index = [slice(None)] * grid.ndim
        for begin, end, axis, step in zip(starts, ends, axes, steps):
            window = _clamped(begin, end, step, grid.shape[axis])
            index[axis % grid.ndim] = slice(window.start, None if window.stop < 0 else window.stop, window.step)
        return Ints.of_grid(grid[tuple(index)])
    index = [slice(None)] * x.dim()
    for begin, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.dim()
        if axis == 0 and batched:  # the batch axis: only the whole of it
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


def _scatter_nd(node: Node, data, indices, updates):
    """ScatterND: ``updates`` written (reduction none) or added at the index tuples of the last
    axis of ``indices``; the gradient reaches the data not overwritten and the updates."""
    data, updates = as_tensor(data), as_tensor(updates)
    index = as_tensor(indices).to(torch.int64)
    position = tuple(index.unbind(-1))
    reduction = node.get("reduction", "none")
    if reduction == "none":
        return data.index_put(position, updates)
    if reduction == "add":
        return data.index_put(position, updates, accumulate=True)
    raise node.fail(f"reduction {reduction} is not supported")


def _one_hot(node: Node, indices, depth, values):
    """OneHot: ``values`` [off, on] at each index along a new axis of ``depth`` (an index out
    of range: all off); of shape values (legacy exports write it in shape arithmetic) a shape
    value again."""
    size = int(_floats(depth)[0])
    index = as_tensor(indices).to(torch.int64)
    index = torch.where(index < 0, index + size, index)
    off, on = as_tensor(values).reshape(-1).unbind()
    out = torch.where(index.unsqueeze(-1) == torch.arange(size), on, off)
    out = out.movedim(-1, int(node.get("axis", -1)) % out.dim())
    return to_ints(out) if isinstance(indices, Ints) and isinstance(values, Ints) else out


def _split(node: Node, x, split=None):
    axis = int(node.get("axis", 0))
    if node.opset < 13:
        split = node.get("split")
    else:
        split = _ints(split, node)
    if not split:
        count = int(node.get("num_outputs", len(node.outputs)))
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
    """A filled tensor; small integer ones (shape arithmetic: the legacy exporter's
    ``ConstantOfShape -> Mul -> Equal -> Where`` before an ``Expand``) as :class:`Ints`."""
    from onnx import numpy_helper

    value = node.get("value")
    fill = numpy_helper.to_array(value).reshape(-1) if value is not None else np.zeros(1, np.float32)
    dims = _ints(shape, node)
    if fill.dtype.kind in "iu" and len(dims) <= 1 and math.prod(dims) <= 64:
        return Ints.of([int(fill[0])] * math.prod(dims), scalar=not dims)
    return torch.full(dims, fill[0].item(), dtype=torch.from_numpy(fill).dtype)


def _expand(node: Node, x, shape):
    """Broadcast to ``shape``, whose 1s keep the input's size and whose entries may be symbolic."""
    x, target = as_tensor(x), _ints(shape, node)
    rank = max(x.dim(), len(target))
    sizes = [1] * (rank - x.dim()) + list(x.shape)
    target = [1] * (rank - len(target)) + target
    return x.expand([s if isinstance(t, int) and t == 1 else t for s, t in zip(sizes, target)])


def _elementwise(fn: Callable, *values: Ints) -> Ints:
    """``fn`` over Ints, those of length 1 repeated (broadcasting of 0-D and 1-D values)."""
    count = max(len(v.values) for v in values)
    columns = [v.values * count if len(v.values) == 1 else v.values for v in values]
    return Ints.of((fn(*row) for row in zip(*columns)), scalar=all(v.scalar for v in values))


def _arith(fn: Callable):
    def arith(node: Node, a, b):
        if isinstance(a, Ints) and isinstance(b, Ints):
            return _elementwise(fn, a, b)
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


def _where(node: Node, condition, x, y):
    if isinstance(x, Ints) and isinstance(y, Ints):  # shape values: chosen in Python
        if isinstance(condition, torch.Tensor):
            condition = Ints.of((bool(c) for c in condition.reshape(-1).tolist()), scalar=condition.dim() == 0)
        return _elementwise(lambda c, a, b: a if c else b, condition, x, y)
    return torch.where(as_tensor(condition).to(torch.bool), as_tensor(x), as_tensor(y))


def _not(node: Node, x):
    return Ints.of((not v for v in x.values), x.scalar) if isinstance(x, Ints) else torch.logical_not(x)


def _range(node: Node, start, limit, delta):
    """Ints when the three are integers and the range is short; a tensor otherwise."""
    if all(isinstance(v, Ints) for v in (start, limit, delta)):
        ends = [v.values[0] for v in (start, limit, delta)]
        if all(isinstance(v, int) for v in ends) and len(range(*ends)) <= 64:
            return Ints.of(range(*ends))
        return torch.arange(*ends)
    start = as_tensor(start)
    return torch.arange(*(as_tensor(v).item() for v in (start, limit, delta)), dtype=start.dtype)


def _arg(fn: Callable) -> Callable:
    def arg(node: Node, x):
        axis, keep = int(node.get("axis", 0)) % x.dim(), bool(node.get("keepdims", 1))
        if node.get("select_last_index", 0):
            return x.shape[axis] - 1 - fn(x.flip(axis), axis, keep)
        return fn(x, axis, keep)
    return arg


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
    "Conv": _conv, "ConvTranspose": _conv_transpose, "MaxPool": _max_pool, "AveragePool": _average_pool,
    "GlobalAveragePool": lambda node, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True),
    "GlobalMaxPool": lambda node, x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True),
    "BatchNormalization": _batch_norm, "LayerNormalization": _layer_norm, "GroupNormalization": _group_norm,
    "InstanceNormalization": lambda node, x, scale, bias: F.group_norm(
        x, int(x.shape[1]), scale, bias, float(node.get("epsilon", 1e-5))),
    "Gemm": _gemm, "MatMul": lambda node, a, b: torch.matmul(a, b),
    "Einsum": lambda node, *xs: torch.einsum(node.get("equation").replace(" ", ""), *xs),
    "Relu": _unary(torch.relu), "Sigmoid": _unary(torch.sigmoid), "Tanh": _unary(torch.tanh),
    "HardSigmoid": _hard_sigmoid, "HardSwish": _unary(F.hardswish), "Clip": _clip,
    "LeakyRelu": lambda node, x: F.leaky_relu(x, float(node.get("alpha", 0.01))),
    "PRelu": lambda node, x, slope: torch.where(x >= 0, x, x * slope),
    "Elu": lambda node, x: F.elu(x, float(node.get("alpha", 1.0))),
    "Celu": lambda node, x: F.celu(x, float(node.get("alpha", 1.0))),
    "Selu": lambda node, x: float(node.get("gamma", 1.05070102214813232421875)) * F.elu(
        x, float(node.get("alpha", 1.67326319217681884765625))),
    "ThresholdedRelu": lambda node, x: F.threshold(x, float(node.get("alpha", 1.0)), 0.0),
    "Gelu": lambda node, x: F.gelu(x, approximate=node.get("approximate", "none")),
    "Mish": _unary(F.mish), "Softsign": _unary(F.softsign),
    "Softplus": _unary(F.softplus), "Exp": _unary(torch.exp), "Log": _unary(torch.log),
    "Sqrt": _unary(torch.sqrt), "Neg": _unary(torch.neg), "Abs": _unary(torch.abs),
    "Reciprocal": _unary(torch.reciprocal), "Erf": _unary(torch.erf),
    "Sin": _unary(torch.sin), "Cos": _unary(torch.cos), "Floor": _unary(torch.floor),
    "Ceil": _unary(torch.ceil), "Round": _unary(torch.round), "Sign": _unary(torch.sign),
    "Pow": lambda node, a, b: torch.pow(a, as_tensor(b)),
    "Add": _arith(operator.add), "Sub": _arith(operator.sub), "Mul": _arith(operator.mul), "Div": _arith(_floordiv),
    "Mod": _mod,
    "Equal": _arith(operator.eq), "Less": _arith(operator.lt), "Greater": _arith(operator.gt),
    "LessOrEqual": _arith(operator.le), "GreaterOrEqual": _arith(operator.ge),
    "And": _arith(operator.and_), "Or": _arith(operator.or_), "Not": _not, "Where": _where,
    "Sum": _variadic(torch.add), "Max": _variadic(torch.maximum), "Min": _variadic(torch.minimum),
    "Mean": lambda node, *xs: _variadic(torch.add)(node, *xs) / len(xs),
    "Softmax": _softmax, "LogSoftmax": lambda node, x: _softmax(node, x, log=True), "LRN": _lrn,
    **{f"Reduce{kind}": _reduce(kind) for kind in _REDUCTIONS},
    "ArgMax": _arg(torch.argmax), "ArgMin": _arg(torch.argmin), "CumSum": _cumsum,
    "Flatten": _flatten, "Transpose": _transpose, "Pad": _pad, "Shape": _shape,
    "Gather": _gather, "GatherND": _gather_nd, "ScatterND": _scatter_nd, "OneHot": _one_hot,
    "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Concat": _concat,
    "Slice": slice_, "Split": _split, "Tile": lambda node, x, repeats: x.repeat(_ints(repeats, node)),
    "DepthToSpace": _depth_to_space, "SpaceToDepth": _space_to_depth,
    "Resize": _resize, "Upsample": _upsample, "Range": _range, "Cast": _cast, "Constant": _constant,
    "ConstantOfShape": _constant_of_shape, "Expand": _expand, "Identity": _identity,
    "Dropout": _dropout, "Reshape": reshape,
    "QuantizeLinear": quantize_linear, "DequantizeLinear": dequantize_linear,
}
# the forms an op refuses (Node.fail), for the supported-op page (onnxcam_export.op_list)
NOTES = {
    "Conv": "1-D and 2-D", "ConvTranspose": "2-D", "MaxPool": "2-D", "AveragePool": "2-D, no dilations",
    "BatchNormalization": "spatial=1; training_mode=1 normalizes with the batch's statistics",
    "Pad": "modes constant, reflect, edge (reflect and edge on the last two axes)",
    "Slice": "the batch axis whole only (of tensors that carry the batch)", "ScatterND": "reductions none and add",
    "Resize": "modes nearest, linear, cubic; no tf_crop_and_resize, antialias, keep_aspect_ratio_policy "
              "other than stretch, or scale of the batch axis; constant scales",
    "Upsample": "constant scales",
    "Gather": "shape values along axis 0 only", "Squeeze": "shape values of length 1 only",
    "Unsqueeze": "shape values: 0-D only", "Cast": "to float, integer and bool types",
    "Constant": "attributes value, value_float(s), value_int(s)", "Range": "float bounds constant",
    "QuantizeLinear": "uint8 and int8, constant scales, no block_size; read by DequantizeLinear only",
    "DequantizeLinear": "constant scales, no block_size",
}
# ops the reader knows and refuses, with what to do instead
REFUSED = {
    op: "dynamic quantization (quantize_dynamic) computes its scales while it runs and is not supported; "
        "quantize statically instead (onnxcam export MODEL --int8 --calibration DIR, or "
        "onnxruntime.quantization.quantize_static in QDQ form)"
    for op in ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
               "MatMulIntegerToFloat", "DynamicQuantizeLSTM")
}
GRID_OPS = ("Reshape", "Slice", "Transpose", "Shape")  # read a grid of Ints as one; other ops get a tensor
NOT_FOLDED = ("DequantizeLinear",)  # kept as nodes: onnxruntime's integer kernels read their inputs
