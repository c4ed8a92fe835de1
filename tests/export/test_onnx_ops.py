"""Every op of the ONNX reader (``onnxcam_export.onnx_ops.OPS``), one small graph per form: the
module the reader builds computes what onnxruntime computes on the same file (float32, relative
L2 <= 1e-5), and its autograd gradient of a random linear functional sum(w * y) matches central
finite differences of the file run by onnxruntime (float64 where onnxruntime has a double kernel
for the op, float32 otherwise), compared by cosine. The supported-op page must equal what
``python -m onnxcam_export.op_list`` writes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidGraph as OrtInvalidGraph
from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented
from torch.fx.experimental.proxy_tensor import make_fx

from onnxcam_export.exporter import _batch_symbolic
from onnxcam_export.onnx_ops import OPS
from onnxcam_export.onnx_reader import OnnxClassifier
from onnxcam_export.op_list import markdown
from support.paths import ROOT

N = helper.make_node
F32, F64 = TensorProto.FLOAT, TensorProto.DOUBLE
COVERED_ELSEWHERE = {"QuantizeLinear", "DequantizeLinear"}  # tests/export/test_int8.py


@dataclass
class Case:
    """One graph: input ``x``, output ``y``; float initializers take the graph's float type."""

    op: str
    form: str
    nodes: list
    opset: int = 17
    inits: dict = field(default_factory=dict)
    shape: tuple = (2, 3, 4, 5)
    grad: str = "fd"  # "fd": against finite differences; "zero": a step function; "none": no gradient
    kinks: tuple = ()  # input values where the op is not differentiable, kept away from
    positive: bool = False  # inputs in [0.5, 2]
    float_types: tuple = (F64, F32)  # the gradient's graph: the first that onnxruntime runs
    input_type: Optional[int] = None  # default: the graph's float type
    output_type: Optional[int] = None

    @property
    def id(self) -> str:
        return f"{self.op}: {self.form}"


def ints(*values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def floats(*values) -> np.ndarray:
    """A float constant in the graph's float type."""
    return np.array(values, dtype=np.float64)


def float32s(*values) -> np.ndarray:
    """A float constant that stays float32 (Resize's scales and roi)."""
    return np.array(values, dtype=np.float32)


def normal(*shape) -> np.ndarray:
    return np.random.default_rng(sum(shape) + len(shape)).standard_normal(shape)


def unary(op: str, form: str = "default", opset: int = 17, **attrs) -> Case:
    return Case(op, form, [N(op, ["x"], ["y"], **attrs)], opset)


def reduce(op: str, form: str, opset: int, axes, keepdims: int = 1, **options) -> Case:
    if opset >= 18 or (op == "ReduceSum" and opset >= 13):
        return Case(op, form, [N(op, ["x", "axes"], ["y"], keepdims=keepdims)], opset, {"axes": ints(*axes)},
                    **options)
    return Case(op, form, [N(op, ["x"], ["y"], axes=list(axes), keepdims=keepdims)], opset, **options)


def resize(form: str, opset: int, scales=None, sizes=None, shape=(1, 2, 4, 5), **attrs) -> Case:
    inits = {"roi": float32s(), "scales": float32s(*(scales or []))}
    if sizes is not None:
        inits["sizes"] = ints(*sizes)
    inputs = ["x", "scales"] if opset < 11 else ["x", "roi", "scales", "sizes" if sizes is not None else ""]
    if opset >= 13 and sizes is not None:
        inputs[1:3] = ["", ""]
    return Case("Resize", form, [N("Resize", inputs, ["y"], **attrs)], opset, inits, shape)


def conv_transpose(form: str, weight_shape, shape=(1, 3, 4, 5), **attrs) -> Case:
    return Case("ConvTranspose", form, [N("ConvTranspose", ["x", "w", "b"], ["y"], **attrs)], 13,
                {"w": normal(*weight_shape), "b": normal(weight_shape[1] * attrs.get("group", 1))}, shape)


def compare(op: str) -> list[Case]:
    """A comparison forward (a bool output), and through a Where for the gradient."""
    return [Case(op, "bool output", [N(op, ["x", "c"], ["y"])], 13, {"c": normal(5)}, grad="none",
                 output_type=TensorProto.BOOL),
            Case(op, "as a Where's condition", [N(op, ["x", "c"], ["m"]), N("Where", ["m", "x", "c"], ["y"])], 16,
                 {"c": normal(5)})]


CASES: list[Case] = [
    # ---- convolutions and pooling
    Case("Conv", "3x3, pads 1, bias", [N("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], 13,
         {"w": normal(4, 3, 3, 3), "b": normal(4)}),
    Case("Conv", "stride 2, SAME_UPPER", [N("Conv", ["x", "w"], ["y"], strides=[2, 2], auto_pad="SAME_UPPER")], 11,
         {"w": normal(2, 3, 3, 3)}),
    Case("Conv", "groups, dilation, asymmetric pads", [N("Conv", ["x", "w"], ["y"], group=3, dilations=[2, 1],
                                                         pads=[0, 1, 2, 1])], 13, {"w": normal(6, 1, 3, 3)},
         shape=(1, 3, 5, 5)),
    Case("Conv", "1-D, pads 2, bias (ECA's channel attention)", [N("Conv", ["x", "w", "b"], ["y"], pads=[2, 2])], 13,
         {"w": normal(1, 1, 5), "b": normal(1)}, shape=(2, 1, 16)),
    conv_transpose("3x3, pads 1", (3, 2, 3, 3), pads=[1, 1, 1, 1]),
    conv_transpose("stride 2, output_padding 1, asymmetric pads", (3, 2, 3, 3), strides=[2, 2],
                   output_padding=[1, 1], pads=[1, 0, 0, 1]),
    conv_transpose("groups 3, dilation 2, stride (2, 1)", (3, 1, 2, 3), group=3, dilations=[2, 2], strides=[2, 1]),
    conv_transpose("SAME_UPPER, stride 2", (3, 2, 4, 3), auto_pad="SAME_UPPER", strides=[2, 2]),
    conv_transpose("SAME_LOWER, stride 2", (3, 2, 4, 3), auto_pad="SAME_LOWER", strides=[2, 2]),
    conv_transpose("output_shape", (3, 2, 3, 3), strides=[2, 2], output_shape=[8, 9]),
    conv_transpose("pads past the kernel's reach", (3, 2, 2, 2), pads=[2, 0, 1, 2]),
    Case("MaxPool", "3x3, stride 2, pads 1", [N("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                                pads=[1, 1, 1, 1])], 13, shape=(1, 3, 5, 5)),
    Case("MaxPool", "ceil_mode, dilation", [N("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2],
                                              dilations=[1, 2], ceil_mode=1)], 13, shape=(1, 2, 5, 6)),
    Case("AveragePool", "pads, count_include_pad 0", [N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                                                        pads=[1, 1, 1, 1])], 13),
    Case("AveragePool", "ceil_mode, count_include_pad 1", [N("AveragePool", ["x"], ["y"], kernel_shape=[2, 3],
                                                             strides=[2, 2], ceil_mode=1, count_include_pad=1,
                                                             pads=[0, 1, 0, 1])], 13, shape=(1, 2, 5, 5)),
    unary("GlobalAveragePool"), unary("GlobalMaxPool"),
    # ---- normalizations
    Case("BatchNormalization", "inference", [N("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"],
                                                epsilon=1e-3)], 15,
         {"s": normal(3), "b": normal(3, 1)[:, 0], "m": normal(3, 2)[:, 0] * 0.3, "v": floats(0.5, 1.0, 2.0)}),
    Case("BatchNormalization", "training mode (batch statistics)", [N("BatchNormalization", ["x", "s", "b", "m", "v"],
                                                                       ["y", "mean", "var"], training_mode=1)], 15,
         {"s": normal(3), "b": normal(3, 1)[:, 0], "m": normal(3, 2)[:, 0], "v": floats(0.5, 1.0, 2.0)}),
    Case("LayerNormalization", "axis -1, bias", [N("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1)], 17,
         {"s": normal(5), "b": normal(5, 1)[:, 0]}),
    Case("LayerNormalization", "axis 1 over [C, H, W], no bias, epsilon",
         [N("LayerNormalization", ["x", "s"], ["y"], axis=1, epsilon=1e-3)], 17, {"s": normal(3, 4, 5)}),
    Case("GroupNormalization", "opset 18: scale per group", [N("GroupNormalization", ["x", "s", "b"], ["y"],
                                                                num_groups=3, epsilon=1e-3)], 18,
         {"s": normal(3), "b": normal(3, 1)[:, 0]}, shape=(2, 6, 3, 4)),
    Case("GroupNormalization", "opset 21: scale per channel", [N("GroupNormalization", ["x", "s", "b"], ["y"],
                                                                  num_groups=2)], 21,
         {"s": normal(6), "b": normal(6, 1)[:, 0]}, shape=(2, 6, 3, 4), float_types=(F32,)),  # float32 inside
    Case("InstanceNormalization", "default", [N("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-4)], 13,
         {"s": normal(3), "b": normal(3, 1)[:, 0]}),
    Case("LRN", "size 3", [N("LRN", ["x"], ["y"], size=3, alpha=0.1, beta=0.75, bias=2.0)], 13),
    # ---- matrix products
    Case("Gemm", "transB, alpha, beta (a Linear)", [N("Gemm", ["x", "w", "c"], ["y"], transB=1, alpha=0.5, beta=2.0)],
         13, {"w": normal(4, 6), "c": normal(4)}, shape=(2, 6), float_types=(F32,)),  # its Linear is float32
    Case("Gemm", "transA", [N("Gemm", ["x", "w"], ["y"], transA=1)], 13, {"w": normal(2, 4)}, shape=(2, 6)),
    Case("MatMul", "batched", [N("MatMul", ["x", "w"], ["y"])], 13, {"w": normal(5, 3)}),
    Case("Einsum", "bij,jk->bik", [N("Einsum", ["x", "w"], ["y"], equation="bij, jk -> bik")], 12,
         {"w": normal(5, 3)}, shape=(2, 4, 5)),
    Case("Einsum", "x twice, ellipsis", [N("Einsum", ["x", "x"], ["y"], equation="...hw,...hw->...h")], 12),
    Case("Einsum", "implicit output", [N("Einsum", ["x", "w"], ["y"], equation="nchw,wk")], 12, {"w": normal(5, 2)}),
    # ---- activations
    Case("Relu", "default", [N("Relu", ["x"], ["y"])], 14, kinks=(0.0,)),
    unary("Sigmoid"), unary("Tanh"),
    Case("HardSigmoid", "alpha, beta", [N("HardSigmoid", ["x"], ["y"], alpha=0.3, beta=0.4)], 6, kinks=(-4 / 3, 2.0)),
    Case("HardSwish", "default", [N("HardSwish", ["x"], ["y"])], 14, kinks=(-3.0, 3.0), shape=(1, 3, 4, 5)),
    Case("Clip", "attributes (opset 9)", [N("Clip", ["x"], ["y"], min=-0.5, max=0.7)], 9, kinks=(-0.5, 0.7)),
    Case("Clip", "inputs (opset 13)", [N("Clip", ["x", "lo", "hi"], ["y"])], 13,
         {"lo": floats(-0.6), "hi": floats(0.4)}, kinks=(-0.6, 0.4)),
    Case("Clip", "min only", [N("Clip", ["x", "lo"], ["y"])], 13, {"lo": floats(0.1)}, kinks=(0.1,)),
    Case("LeakyRelu", "alpha", [N("LeakyRelu", ["x"], ["y"], alpha=0.2)], 16, kinks=(0.0,)),
    Case("PRelu", "per channel", [N("PRelu", ["x", "slope"], ["y"])], 16,
         {"slope": floats(0.1, -0.2, 0.3)[:, None, None]}, kinks=(0.0,)),
    Case("Elu", "alpha", [N("Elu", ["x"], ["y"], alpha=0.7)], 6, kinks=(0.0,)),
    unary("Celu", "alpha", 12, alpha=0.5),
    Case("Selu", "default", [N("Selu", ["x"], ["y"])], 6, kinks=(0.0,)),
    Case("Selu", "alpha, gamma", [N("Selu", ["x"], ["y"], alpha=1.2, gamma=0.9)], 6, kinks=(0.0,)),
    Case("ThresholdedRelu", "alpha", [N("ThresholdedRelu", ["x"], ["y"], alpha=0.3)], 10, kinks=(0.3,)),
    unary("Gelu", "exact", 20), unary("Gelu", "tanh", 20, approximate="tanh"),
    unary("Mish", opset=18), unary("Softsign"), unary("Softplus"), unary("Erf"), unary("Sin"), unary("Cos"),
    unary("Exp"), unary("Neg"),
    Case("Abs", "default", [N("Abs", ["x"], ["y"])], 13, kinks=(0.0,)),
    Case("Log", "default", [N("Log", ["x"], ["y"])], 13, positive=True),
    Case("Sqrt", "default", [N("Sqrt", ["x"], ["y"])], 13, positive=True),
    Case("Reciprocal", "default", [N("Reciprocal", ["x"], ["y"])], 13, positive=True),
    *(Case(op, "a step", [N(op, ["x"], ["y"])], 13, grad="zero") for op in ("Floor", "Ceil", "Round", "Sign")),
    Case("Pow", "x ** 2", [N("Pow", ["x", "e"], ["y"])], 15, {"e": floats(2.0)}),
    Case("Pow", "x ** 0.5", [N("Pow", ["x", "e"], ["y"])], 15, {"e": floats(0.5)}, positive=True),
    Case("Pow", "c ** x", [N("Pow", ["c", "x"], ["y"])], 15, {"c": floats(1.5, 0.7, 2.0, 1.1, 0.9)}),
    # ---- elementwise arithmetic and logic
    Case("Add", "broadcast", [N("Add", ["x", "c"], ["y"])], 14, {"c": normal(3, 1, 5)}),
    Case("Sub", "constant first", [N("Sub", ["c", "x"], ["y"])], 14, {"c": normal(5)}),
    Case("Mul", "x twice", [N("Mul", ["x", "x"], ["y"])], 14),
    Case("Div", "by a constant", [N("Div", ["x", "c"], ["y"])], 14, {"c": floats(0.5, 2.0, -1.5)[:, None, None]}),
    Case("Div", "a constant by x", [N("Div", ["c", "x"], ["y"])], 14, {"c": normal(5)}, positive=True),
    Case("Mod", "fmod of floats", [N("Mod", ["x", "c"], ["y"], fmod=1)], 13, {"c": floats(0.7)},
         kinks=(-2.1, -1.4, -0.7, 0.0, 0.7, 1.4, 2.1)),
    Case("Mod", "of shape values", [N("Shape", ["x"], ["s"]), N("Mod", ["s", "seven"], ["t"]),
                                    N("Expand", ["x", "t"], ["y"])], 13, {"seven": ints(7)}),
    *compare("Equal")[:1],
    Case("Equal", "of shape values, as a Where's condition", [
        N("Shape", ["x"], ["s"]), N("Equal", ["s", "one"], ["m"]), N("Where", ["m", "four", "s"], ["t"]),
        N("Expand", ["x", "t"], ["y"])], 16, {"four": ints(4), "one": ints(1)}, shape=(2, 3, 1, 5)),
    *compare("Less"), *compare("Greater"), *compare("LessOrEqual"), *compare("GreaterOrEqual"),
    Case("Not", "of a comparison", [N("Less", ["x", "c"], ["m"]), N("Not", ["m"], ["y"])], 13, {"c": normal(5)},
         grad="none", output_type=TensorProto.BOOL),
    Case("And", "of comparisons", [N("Less", ["x", "c"], ["a"]), N("Greater", ["x", "d"], ["b"]),
                                   N("And", ["a", "b"], ["m"]), N("Where", ["m", "x", "d"], ["y"])], 16,
         {"c": floats(0.8), "d": floats(-0.5)}, kinks=(0.8, -0.5)),
    Case("Or", "of comparisons", [N("Less", ["x", "c"], ["a"]), N("Greater", ["x", "d"], ["b"]),
                                  N("Or", ["a", "b"], ["y"])], 13, {"c": floats(-0.8), "d": floats(0.5)},
         grad="none", output_type=TensorProto.BOOL),
    Case("Where", "constant condition, broadcast", [N("Where", ["m", "x", "c"], ["y"])], 16,
         {"m": np.array([True, False, True, True, False]), "c": normal(3, 1, 1)}),
    Case("Sum", "three inputs", [N("Sum", ["x", "c", "x"], ["y"])], 13, {"c": normal(5)}),
    Case("Max", "with a constant", [N("Max", ["x", "c"], ["y"])], 13, {"c": normal(4, 5)}),
    Case("Min", "with a constant", [N("Min", ["x", "c"], ["y"])], 13, {"c": normal(4, 5)}),
    Case("Mean", "with a constant", [N("Mean", ["x", "c"], ["y"])], 13, {"c": normal(4, 5)}),
    # ---- softmax and reductions
    Case("Softmax", "coerced 2-D (opset 11)", [N("Softmax", ["x"], ["y"], axis=1)], 11),
    Case("Softmax", "axis 1 (opset 13)", [N("Softmax", ["x"], ["y"], axis=1)], 13),
    Case("LogSoftmax", "axis -1", [N("LogSoftmax", ["x"], ["y"], axis=-1)], 13),
    reduce("ReduceMean", "axes attribute (opset 13)", 13, [2, 3]),
    reduce("ReduceMean", "axes input (opset 18), keepdims 0", 18, [-1], 0),
    reduce("ReduceSum", "axes input (opset 13)", 13, [1], 0),
    Case("ReduceSum", "all axes", [N("ReduceSum", ["x"], ["y"], keepdims=0)], 13),
    reduce("ReduceMax", "axes (opset 13)", 13, [1, 3]), reduce("ReduceMax", "axes input (opset 18)", 18, [2], 0),
    reduce("ReduceMin", "axes (opset 13)", 13, [2, 3]), reduce("ReduceMin", "axes input (opset 18)", 18, [1], 0),
    reduce("ReduceProd", "axes (opset 13)", 13, [1]), reduce("ReduceProd", "axes input (opset 18)", 18, [2, 3], 0),
    reduce("ReduceL1", "axes (opset 13)", 13, [3], kinks=(0.0,)), reduce("ReduceL1", "opset 18", 18, [1, 2], 0,
                                                                         kinks=(0.0,)),
    reduce("ReduceL2", "axes (opset 13)", 13, [2]), reduce("ReduceL2", "opset 18", 18, [1, 3], 0),
    reduce("ReduceSumSquare", "axes (opset 13)", 13, [1]), reduce("ReduceSumSquare", "opset 18", 18, [2, 3]),
    reduce("ReduceLogSumExp", "axes (opset 13)", 13, [1]), reduce("ReduceLogSumExp", "opset 18", 18, [2, 3], 0),
    Case("ArgMax", "axis 1", [N("ArgMax", ["x"], ["y"], axis=1)], 13, grad="none", output_type=TensorProto.INT64),
    Case("ArgMax", "select_last_index, keepdims 0", [N("ArgMax", ["x"], ["y"], axis=3, keepdims=0,
                                                       select_last_index=1)], 13, grad="none",
         output_type=TensorProto.INT64),
    Case("ArgMin", "axis -1", [N("ArgMin", ["x"], ["y"], axis=-1)], 13, grad="none", output_type=TensorProto.INT64),
    Case("CumSum", "axis 2", [N("CumSum", ["x", "a"], ["y"])], 14, {"a": np.array(2, dtype=np.int64)}),
    Case("CumSum", "exclusive", [N("CumSum", ["x", "a"], ["y"], exclusive=1)], 14, {"a": ints(3)}),
    Case("CumSum", "reverse", [N("CumSum", ["x", "a"], ["y"], reverse=1)], 14, {"a": ints(-1)}),
    Case("CumSum", "exclusive, reverse", [N("CumSum", ["x", "a"], ["y"], exclusive=1, reverse=1)], 14,
         {"a": np.array(1, dtype=np.int64)}),
    # ---- shapes and layout
    *(Case("Flatten", f"axis {axis}", [N("Flatten", ["x"], ["y"], axis=axis)], 13) for axis in (0, 1, 2, 3, 4, -1)),
    Case("Transpose", "perm", [N("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1])], 13),
    Case("Transpose", "no perm: the axes reversed", [N("Transpose", ["x"], ["y"])], 13),
    unary("Transpose", "reversed", 13),
    Case("Pad", "reflect (opset 9)", [N("Pad", ["x"], ["y"], mode="reflect", pads=[0, 0, 1, 2, 0, 0, 2, 1])], 9),
    Case("Pad", "edge", [N("Pad", ["x", "p"], ["y"], mode="edge")], 13, {"p": ints(0, 0, 2, 1, 0, 0, 1, 2)}),
    Case("Pad", "constant value", [N("Pad", ["x", "p", "v"], ["y"])], 13, {"p": ints(0, 1, 1, 0, 0, 0, 2, 3),
                                                                          "v": floats(0.5)}),
    Case("Pad", "axes input (opset 18)", [N("Pad", ["x", "p", "", "a"], ["y"])], 18, {"p": ints(1, 0, 2, 1),
                                                                                     "a": ints(1, -1)}),
    Case("Pad", "pads worked out in float from the input's shape (TF 'same')", [
        N("Shape", ["x"], ["s"], start=2), N("Cast", ["s"], ["f"], to=F32), N("Div", ["f", "three"], ["d"]),
        N("Ceil", ["d"], ["c"]), N("Cast", ["c"], ["n"], to=TensorProto.INT64),
        N("Concat", ["z6", "n"], ["pads"], axis=0), N("Pad", ["x", "pads"], ["y"])], 15,
        {"three": np.array(3.0, np.float32), "z6": ints(0, 0, 0, 0, 0, 0)}, float_types=(F32,)),
    Case("Shape", "start/end (opset 15), cast", [N("Shape", ["x"], ["s"], start=1, end=-1),
                                                 N("Cast", ["s"], ["y"], to=F32)], 15, grad="none",
         output_type=F32),
    Case("Gather", "axis 1", [N("Gather", ["x", "i"], ["y"], axis=1)], 13, {"i": ints(2, 0, 2)}),
    Case("Gather", "scalar negative index", [N("Gather", ["x", "i"], ["y"], axis=3)], 13,
         {"i": np.array(-2, dtype=np.int64)}),
    Case("Gather", "2-D indices", [N("Gather", ["x", "i"], ["y"], axis=2)], 13,
         {"i": ints(0, 3, 1, 1, 2, 0).reshape(2, 3)}),
    Case("GatherND", "batch_dims 0", [N("GatherND", ["x", "i"], ["y"])], 13,
         {"i": np.array([[0, 1], [1, -1], [1, 0]], dtype=np.int64)}),
    Case("GatherND", "batch_dims 1", [N("GatherND", ["x", "i"], ["y"], batch_dims=1)], 13,
         {"i": np.array([[[2, 1], [0, 3]], [[1, 1], [2, -2]]], dtype=np.int64)}),
    Case("GatherND", "batch_dims 2, whole rows", [N("GatherND", ["x", "i"], ["y"], batch_dims=2)], 13,
         {"i": np.array([[[1], [0], [3]], [[2], [2], [0]]], dtype=np.int64)}),
    Case("Unsqueeze", "axes attribute (opset 11)", [N("Unsqueeze", ["x"], ["y"], axes=[0, 3])], 11),
    Case("Unsqueeze", "axes input (opset 13)", [N("Unsqueeze", ["x", "a"], ["y"])], 13, {"a": ints(2, -1)}),
    Case("Unsqueeze", "of a 1-D shape value (dynamo's batch indices)", [
        N("Shape", ["x"], ["s"]), N("Unsqueeze", ["s", "a"], ["u"]), N("Squeeze", ["u", "a"], ["t"]),
        N("Expand", ["x", "t"], ["y"])], 13, {"a": ints(0)}),
    Case("Squeeze", "axes attribute (opset 11)", [N("Squeeze", ["x"], ["y"], axes=[1])], 11, shape=(2, 1, 4, 1)),
    Case("Squeeze", "axes input (opset 13)", [N("Squeeze", ["x", "a"], ["y"])], 13, {"a": ints(-1)},
         shape=(2, 1, 4, 1)),
    Case("Squeeze", "no axes (opset 13)", [N("Squeeze", ["x"], ["y"])], 13, shape=(2, 1, 4, 1)),
    Case("Concat", "with a constant", [N("Concat", ["x", "c"], ["y"], axis=1)], 13, {"c": normal(2, 2, 4, 5)}),
    Case("Concat", "x twice", [N("Concat", ["x", "x"], ["y"], axis=-1)], 13),
    Case("Slice", "attributes (opset 9)", [N("Slice", ["x"], ["y"], starts=[1, 2], ends=[3, 100], axes=[1, 3])], 9),
    Case("Slice", "inputs, negative steps", [N("Slice", ["x", "s", "e", "a", "t"], ["y"])], 13,
         {"s": ints(-1, 4), "e": ints(-100, 0), "a": ints(1, 3), "t": ints(-1, -2)}),
    Case("Slice", "axis 0 of a constant (Swin's masks, folded)", [
        N("Slice", ["m", "s", "e", "a", "t"], ["r"]), N("Mul", ["x", "r"], ["y"])], 13,
        {"m": normal(6, 4, 5), "s": ints(5), "e": ints(-100), "a": ints(0), "t": ints(-2)}),
    Case("Slice", "axis 0 of a tensor made from the input's shape", [
        N("Shape", ["x"], ["s"], start=1), N("ConstantOfShape", ["s"], ["z"]), N("Add", ["z", "one"], ["o"]),
        N("CumSum", ["o", "zero"], ["c"]), N("Slice", ["c", "e", "b", "zero", "t"], ["r"]),
        N("Mul", ["x", "r"], ["y"])], 15,
        {"one": np.array(1.0, np.float32), "zero": ints(0), "e": ints(-1), "b": ints(-100), "t": ints(-1)},
        float_types=(F32,)),
    Case("OneHot", "axis 0, negative and out-of-range indices", [
        N("OneHot", ["i", "d", "v"], ["h"], axis=0), N("Mul", ["x", "h"], ["y"])], 11,
        {"i": np.array([[0, 1, 2, -1, 3]] * 4, dtype=np.int64), "d": np.array(3, np.int64), "v": floats(0.5, 2.0)}),
    Case("ScatterND", "into the input", [N("ScatterND", ["x", "i", "u"], ["y"])], 13,
         {"i": np.array([[0, 1], [1, -1]], dtype=np.int64), "u": normal(2, 4, 5)}),
    Case("ScatterND", "reduction add (opset 16)", [N("ScatterND", ["x", "i", "u"], ["y"], reduction="add")], 16,
         {"i": np.array([[[1, 2, 3]], [[0, 0, 1]]], dtype=np.int64), "u": normal(2, 1, 5)}),
    Case("ScatterND", "updates from the input", [
        N("Gather", ["x", "k"], ["u"], axis=1), N("ScatterND", ["x", "i", "u"], ["y"])], 13,
        {"k": np.array(0, dtype=np.int64), "i": np.array([[0, 1], [1, 2]], dtype=np.int64)}),
    Case("Split", "split attribute (opset 11)", [N("Split", ["x"], ["a", "y"], axis=3, split=[2, 3])], 11),
    Case("Split", "split input (opset 13)", [N("Split", ["x", "sp"], ["a", "y", "b"], axis=1)], 13,
         {"sp": ints(1, 1, 1)}),
    Case("Split", "num_outputs, uneven (opset 18)", [N("Split", ["x"], ["a", "y"], axis=3, num_outputs=2)], 18),
    Case("Split", "equal, no split (opset 13)", [N("Split", ["x"], ["a", "y"], axis=2)], 13),
    Case("Tile", "repeats", [N("Tile", ["x", "r"], ["y"])], 13, {"r": ints(1, 2, 1, 3)}, shape=(2, 3, 2, 2)),
    Case("DepthToSpace", "DCR", [N("DepthToSpace", ["x"], ["y"], blocksize=2)], 13, shape=(2, 8, 2, 3)),
    Case("DepthToSpace", "CRD", [N("DepthToSpace", ["x"], ["y"], blocksize=2, mode="CRD")], 13, shape=(2, 8, 2, 3)),
    Case("SpaceToDepth", "blocksize 2", [N("SpaceToDepth", ["x"], ["y"], blocksize=2)], 13, shape=(2, 3, 4, 6)),
    Case("Reshape", "0 and -1", [N("Reshape", ["x", "s"], ["y"])], 13, {"s": ints(0, 0, -1)}),
    Case("Reshape", "shape values as pairs (legacy F.pad)", [
        N("Shape", ["x"], ["s"], start=2), N("Mod", ["s", "three"], ["m"]), N("Concat", ["m", "z6"], ["c"], axis=0),
        N("Reshape", ["c", "pairs"], ["p"]), N("Slice", ["p", "e", "b", "zero", "t"], ["r"]),
        N("Transpose", ["r"], ["q"], perm=[1, 0]), N("Reshape", ["q", "flat"], ["pads"]),
        N("Pad", ["x", "pads"], ["y"])], 15,
        {"three": ints(3), "z6": ints(0, 0, 0, 0, 0, 0), "pairs": ints(-1, 2), "flat": ints(-1), "e": ints(-1),
         "b": ints(-100), "zero": ints(0), "t": ints(-1)}),
    Case("Reshape", "allowzero (opset 14)", [N("Reshape", ["x", "s"], ["y"], allowzero=1)], 14,
         {"s": ints(-1, 5, 4)}),
    Case("Expand", "1s where the input is bigger", [N("Expand", ["x", "s"], ["y"])], 13, {"s": ints(1, 1, 4, 1)},
         shape=(2, 3, 1, 5)),
    Case("Expand", "to a higher rank", [N("Expand", ["x", "s"], ["y"])], 13, {"s": ints(2, 1, 1, 3, 1)},
         shape=(3, 1, 5)),
    Case("Expand", "a computed shape", [
        N("Shape", ["x"], ["s"]), N("Slice", ["s", "zero", "one"], ["n"]),
        N("Concat", ["n", "rest"], ["t"], axis=0), N("Expand", ["x", "t"], ["y"])], 13,
        {"zero": ints(0), "one": ints(1), "rest": ints(3, 4, 1)}, shape=(2, 1, 1, 5)),
    Case("Identity", "default", [N("Identity", ["x"], ["y"])], 13),
    Case("Dropout", "inference (opset 12)", [N("Dropout", ["x"], ["y"])], 12),
    Case("Dropout", "ratio attribute (opset 9)", [N("Dropout", ["x"], ["y"], ratio=0.3)], 9),
    # ---- resizing
    resize("nearest, scales (opset 10)", 10, [1, 1, 2, 1.5]),
    resize("nearest, downsampling (opset 10)", 10, [1, 1, 0.5, 0.6]),
    resize("linear (opset 10)", 10, [1, 1, 2, 3], mode="linear"),
    resize("linear, align_corners, sizes (opset 11)", 11, sizes=[1, 2, 7, 3], mode="linear",
           coordinate_transformation_mode="align_corners"),
    resize("nearest, half_pixel, round_prefer_floor", 13, [1, 1, 2, 2.5]),
    resize("nearest, asymmetric, floor", 13, [1, 1, 1.5, 2], coordinate_transformation_mode="asymmetric",
           nearest_mode="floor"),
    resize("nearest, align_corners, ceil", 13, sizes=[1, 2, 7, 9], coordinate_transformation_mode="align_corners",
           nearest_mode="ceil"),
    resize("nearest, tf_half_pixel_for_nn, round_prefer_ceil", 11, [1, 1, 2, 0.6],
           coordinate_transformation_mode="tf_half_pixel_for_nn", nearest_mode="round_prefer_ceil"),
    resize("linear, half_pixel, up and down", 13, [1, 1, 1.75, 0.6], mode="linear"),
    resize("linear, pytorch_half_pixel, to size 1", 13, sizes=[1, 2, 1, 8], mode="linear",
           coordinate_transformation_mode="pytorch_half_pixel"),
    resize("linear, asymmetric", 13, [1, 1, 2, 2], mode="linear", coordinate_transformation_mode="asymmetric"),
    resize("cubic, half_pixel", 13, [1, 1, 2, 1.5], mode="cubic"),
    resize("cubic, exclude_outside, cubic_coeff_a", 13, [1, 1, 0.75, 2], mode="cubic", exclude_outside=1,
           cubic_coeff_a=-0.5),
    Case("Resize", "axes (opset 18)", [N("Resize", ["x", "", "sc"], ["y"], axes=[3, 2], mode="linear")], 18,
         {"sc": float32s(2, 1.5)}, shape=(1, 2, 4, 5)),
    Case("Resize", "half_pixel_symmetric (opset 19)", [N("Resize", ["x", "", "sc"], ["y"], mode="linear",
                                                         coordinate_transformation_mode="half_pixel_symmetric")],
         19, {"sc": float32s(1, 1, 1.7, 0.7)}, shape=(1, 2, 4, 5)),
    Case("Upsample", "nearest (opset 9)", [N("Upsample", ["x", "sc"], ["y"])], 9, {"sc": float32s(1, 1, 2, 3)},
         shape=(1, 2, 3, 4)),
    Case("Upsample", "linear (opset 9)", [N("Upsample", ["x", "sc"], ["y"], mode="linear")], 9,
         {"sc": float32s(1, 1, 2, 1.5)}, shape=(1, 2, 3, 4)),
    Case("Upsample", "scales attribute (opset 7)", [N("Upsample", ["x"], ["y"], scales=[1.0, 1.0, 2.0, 2.0])], 7,
         shape=(1, 2, 3, 4)),
    # ---- constants, ranges, casts
    Case("Range", "of shape values", [
        N("Shape", ["x"], ["s"]), N("Gather", ["s", "three"], ["w"]), N("Range", ["zero", "w", "one"], ["r"]),
        N("Cast", ["r"], ["f"], to=F32), N("Mul", ["x", "f"], ["y"])], 13,
        {"three": np.array(3, dtype=np.int64), "zero": np.array(0, dtype=np.int64),
         "one": np.array(1, dtype=np.int64)}, float_types=(F32,)),
    Case("Range", "floats", [N("Range", ["a", "b", "c"], ["r"]), N("Mul", ["x", "r"], ["y"])], 13,
         {"a": np.array(0.5), "b": np.array(1.8), "c": np.array(0.3)}),
    Case("Constant", "a float tensor", [
        N("Constant", [], ["c"], value=numpy_helper.from_array(normal(5).astype(np.float32))),
        N("Add", ["x", "c"], ["y"])], 13, float_types=(F32,)),
    Case("Constant", "value_floats", [N("Constant", [], ["c"], value_floats=[0.5, -1.0, 2.0, 3.0, 1.5]),
                                      N("Mul", ["x", "c"], ["y"])], 13, float_types=(F32,)),
    Case("ConstantOfShape", "of a shape", [
        N("Shape", ["x"], ["s"]), N("ConstantOfShape", ["s"], ["k"], value=helper.make_tensor("v", F32, [1], [0.25])),
        N("Add", ["x", "k"], ["y"])], 13, float_types=(F32,)),
    Case("Cast", "float16 to float", [N("Cast", ["x"], ["y"], to=F32)], 13, grad="none",
         input_type=TensorProto.FLOAT16, output_type=F32),
    Case("Cast", "float to double", [N("Cast", ["x"], ["y"], to=F64)], 13, input_type=F32, output_type=F64,
         float_types=(F32,)),
    Case("Cast", "double to float", [N("Cast", ["x"], ["y"], to=F32)], 13, input_type=F64, output_type=F32,
         float_types=(F64,)),
    Case("Cast", "through bfloat16", [N("Cast", ["x"], ["b"], to=TensorProto.BFLOAT16),
                                      N("Cast", ["b"], ["y"], to=F32)], 13, grad="none", input_type=F32,
         output_type=F32),
    Case("Cast", "through float16", [N("Cast", ["x"], ["b"], to=TensorProto.FLOAT16),
                                     N("Cast", ["b"], ["y"], to=F32)], 13, grad="none", input_type=F32,
         output_type=F32),
]


def make_model(case: Case, float_type: int):
    dtype = helper.tensor_dtype_to_np_dtype(float_type)
    inits = [numpy_helper.from_array(v.astype(dtype) if v.dtype == np.float64 else v, name)
             for name, v in case.inits.items()]
    shape = ["N", *case.shape[1:]]
    graph = helper.make_graph(case.nodes, "g",
                              [helper.make_tensor_value_info("x", case.input_type or float_type, shape)],
                              [helper.make_tensor_value_info("y", case.output_type or float_type, None)], inits)
    ir_version = 8 if case.opset <= 18 else 9 if case.opset <= 20 else 10
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)], ir_version=ir_version)


def session(proto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def inputs(case: Case, batch: Optional[int] = None) -> np.ndarray:
    """Standard normal inputs (in [0.5, 2] for ``positive``), at least 0.05 from each kink."""
    rng = np.random.default_rng(7)
    shape = case.shape if batch is None else (batch, *case.shape[1:])
    x = rng.uniform(0.5, 2.0, shape) if case.positive else rng.standard_normal(shape)
    for kink in case.kinks:
        x = np.where(np.abs(x - kink) < 0.05, x + 0.1, x)
    return x


def reader(proto, x: np.ndarray, grad: bool = False):
    module = OnnxClassifier(proto, "x", "y")
    tensor = torch.tensor(x, requires_grad=grad)
    return tensor, module(tensor)


def relative_l2(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(got - expected) / max(np.linalg.norm(expected), 1e-30))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_forward_matches_onnxruntime(case):
    proto = make_model(case, F32)
    type_ = helper.tensor_dtype_to_np_dtype(case.input_type or F32)
    x = inputs(case).astype(type_)
    expected = session(proto).run(None, {"x": x})[0]
    got = reader(proto, x)[1].detach().numpy()
    if expected.ndim > 2 and sum(s > 1 for s in expected.shape[1:]) <= 1:  # the reader's logits: [N, C]
        expected = expected.reshape(expected.shape[0], -1)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    if expected.dtype.kind in "biu":
        np.testing.assert_array_equal(got, expected)
    else:
        assert relative_l2(got, expected) <= 1e-5


def finite_differences(run, x: np.ndarray, w: np.ndarray, step: float) -> np.ndarray:
    """The gradient of sum(w * run(x)), one central difference per input element."""
    grad = np.zeros(x.size)
    for i in range(x.size):
        shift = np.zeros(x.size)
        shift[i] = step
        shift = shift.reshape(x.shape).astype(x.dtype)
        grad[i] = (np.sum(w * run(x + shift)) - np.sum(w * run(x - shift))) / (2 * step)
    return grad.reshape(x.shape)


def gradient_graph(case: Case):
    """The case's graph in its first float type that onnxruntime has kernels for."""
    for float_type in case.float_types:
        proto = make_model(case, float_type)
        try:
            return proto, float_type, session(proto)
        except (OrtNotImplemented, OrtInvalidGraph):  # no kernel, or the op's type constraints
            continue
    raise AssertionError(f"onnxruntime runs {case.id} in none of {case.float_types}")


GRADIENTS = [case for case in CASES if case.grad != "none"]


@pytest.mark.parametrize("case", GRADIENTS, ids=[case.id for case in GRADIENTS])
def test_gradient_matches_finite_differences(case):
    proto, float_type, ort_session = gradient_graph(case)
    dtype = helper.tensor_dtype_to_np_dtype(case.input_type or float_type)
    x = inputs(case).astype(dtype)

    def run(value):
        return ort_session.run(None, {"x": value})[0].astype(np.float64)

    w = np.random.default_rng(3).standard_normal(run(x).shape)
    tensor, y = reader(proto, x, grad=True)
    (y.reshape(w.shape).to(torch.float64) * torch.from_numpy(w)).sum().backward()
    got = tensor.grad.numpy().astype(np.float64)
    double = dtype == np.float64 and case.output_type in (None, F64)
    expected = finite_differences(run, x, w, 1e-6 if double else 3e-3)
    if case.grad == "zero":
        assert not got.any() and not expected.any()
    else:
        assert cosine(got, expected) >= (0.9999 if double else 0.999)
        assert relative_l2(got, expected) <= (1e-4 if double else 3e-2)


# the ops whose shapes depend on the input's: traced as the exporter does (cases whose constants
# fix the batch, or whose output moves it off axis 0, are not)
TRACED = [case for case in GRADIENTS if case.op in (
    "Flatten", "Expand", "Equal", "Range", "Resize", "Upsample", "ConvTranspose", "DepthToSpace", "SpaceToDepth",
    "GroupNormalization", "LayerNormalization", "InstanceNormalization", "Split", "Tile", "CumSum", "Reshape",
    "Squeeze", "Where") and case.id != "Expand: to a higher rank"
    or case.id in ("Slice: axis 0 of a tensor made from the input's shape",
                   "Pad: pads worked out in float from the input's shape (TF 'same')")]


@pytest.mark.parametrize("case", TRACED, ids=[case.id for case in TRACED])
def test_traces_with_a_symbolic_batch(case):
    """make_fx of the forward and backward with only the batch symbolic (as the exporter traces):
    the graph then runs at another batch size."""
    module = OnnxClassifier(make_model(case, F32), "x", "y")
    module.settle_shape_values(case.shape[2:])  # as onnx_file.classifier does

    def forward_backward(x):
        x = x.requires_grad_(True)
        y = module(x)
        return y, torch.autograd.grad((y * y).sum(), x)[0]

    example = torch.from_numpy(inputs(case, batch=11).astype(np.float32))
    graph = make_fx(forward_backward, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*_batch_symbolic([example]))
    x = torch.from_numpy(inputs(case, batch=13).astype(np.float32))
    for got, expected in zip(graph(x), forward_backward(x)):
        torch.testing.assert_close(got, expected)


def test_every_op_has_a_case():
    """A new op in OPS without a case here fails (the Q/DQ ops: tests/export/test_int8.py)."""
    covered = {case.op for case in CASES}
    assert set(OPS) - COVERED_ELSEWHERE - covered == set()
    assert covered <= set(OPS)


def test_the_supported_op_page_is_generated():
    """docs/reference/onnx-ops.md is ``python -m onnxcam_export.op_list``'s output."""
    page = (ROOT / "docs" / "reference" / "onnx-ops.md").read_text()
    assert page == markdown(), "regenerate: python -m onnxcam_export.op_list > docs/reference/onnx-ops.md"
