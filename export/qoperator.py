"""Rewrite a QOperator INT8 file (``QLinearConv``, ``com.microsoft`` ``QGemm``, ``QLinearAdd``,
...) as the equivalent QDQ file, which :mod:`onnxcam_export.onnx_reader` reads.

Each integer op becomes its float op between ``DequantizeLinear`` nodes on its inputs and a
``QuantizeLinear`` on its output with the op's own scales and zero points; an op that only moves
integers (``MaxPool``, ``Flatten``, ``Reshape``, ...) becomes the float op between a pair of the
input's parameters. onnxruntime fuses the result back into the same integer kernels (the checks
of the export count them), so the rewrite changes the file's form, not what runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxcam.errors import OnnxcamError


@dataclass(frozen=True)
class _Spec:
    """An integer op: its float op, the (value, scale, zero point) input triples, where the
    output's scale and zero point are (None: a float output), and extra inputs."""

    op: str
    triples: tuple
    output: Optional[tuple]
    bias: Optional[int] = None  # position of an int32 bias quantized at the product of the first two scales


_SPECS = {
    "QLinearConv": _Spec("Conv", ((0, 1, 2), (3, 4, 5)), (6, 7), bias=8),
    "QLinearMatMul": _Spec("MatMul", ((0, 1, 2), (3, 4, 5)), (6, 7)),
    "QGemm": _Spec("Gemm", ((0, 1, 2), (3, 4, 5)), (7, 8), bias=6),
    "QLinearAdd": _Spec("Add", ((0, 1, 2), (3, 4, 5)), (6, 7)),
    "QLinearMul": _Spec("Mul", ((0, 1, 2), (3, 4, 5)), (6, 7)),
    "QLinearGlobalAveragePool": _Spec("GlobalAveragePool", ((0, 1, 2),), (3, 4)),
    "QLinearAveragePool": _Spec("AveragePool", ((0, 1, 2),), (3, 4)),
    "QLinearSigmoid": _Spec("Sigmoid", ((0, 1, 2),), (3, 4)),
    "QLinearLeakyRelu": _Spec("LeakyRelu", ((0, 1, 2),), (3, 4)),
    "QLinearSoftmax": _Spec("Softmax", ((0, 1, 2),), (3, 4)),
    "QLinearReduceMean": _Spec("ReduceMean", ((0, 1, 2),), (3, 4)),
}
# ops that move integers without arithmetic: their input's scale and zero point carry over
_MOVES = ("MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Slice",
          "Gather", "Resize", "Pad", "DepthToSpace", "SpaceToDepth", "Split")
_DROPPED_ATTRIBUTES = {"channels_last", "opset"}  # of the integer ops, not of their float ops


def is_qoperator(model: onnx.ModelProto) -> bool:
    """Whether ``model`` holds integer ops of the QOperator form."""
    return any(node.op_type in _SPECS or node.op_type == "QLinearConcat" for node in model.graph.node)


def to_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """The QDQ equivalent of the QOperator file ``model`` (a new model; ``model`` is unchanged)."""
    return _Rewrite(model).model


class _Rewrite:
    def __init__(self, source: onnx.ModelProto):
        self.model = onnx.ModelProto()
        self.model.CopyFrom(source)
        graph = self.model.graph
        self.opset = next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.constants = {t.name: t for t in graph.initializer}
        self.quantized: dict[str, tuple[str, str]] = {}  # integer tensor -> its scale and zero point
        self.dequantized: dict[str, str] = {}  # integer tensor -> its DequantizeLinear output
        self.nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            self._node(node)
        del graph.node[:]
        graph.node.extend(self.nodes)

    def _node(self, node: onnx.NodeProto) -> None:
        op = node.op_type
        if op == "QuantizeLinear":
            self.quantized[node.output[0]] = (node.input[1], node.input[2] if len(node.input) > 2 else "")
        if op in _SPECS:
            self._integer_op(node, _SPECS[op])
        elif op == "QLinearConcat":
            triples = [(i, i + 1, i + 2) for i in range(2, len(node.input), 3)]
            self._integer_op(node, _Spec("Concat", tuple(triples), (0, 1)))
        elif op in _MOVES and node.input and node.input[0] in self.quantized:
            scale, zero_point = self.quantized[node.input[0]]
            floats = [f"{name}/float" for name in node.output]
            self.nodes.append(helper.make_node(op, [self._dequantize(node.input[0]), *node.input[1:]], floats,
                                               name=f"{node.name}/float", domain=node.domain or "",
                                               **_attributes(node)))
            for out, value in zip(node.output, floats):
                self._quantize(value, scale, zero_point, out)
        else:
            self.nodes.append(node)

    def _integer_op(self, node: onnx.NodeProto, spec: _Spec) -> None:
        name = node.name or node.output[0]
        if any(a.name == "channels_last" and a.i for a in node.attribute):
            raise OnnxcamError(f"ONNX op {node.op_type} (node {name!r}): channels_last=1 is not supported")
        inputs = list(node.input)

        def at(position: int) -> str:
            return inputs[position] if position < len(inputs) else ""

        floats = [self._dequantize(at(v), at(s), at(z)) for v, s, z in spec.triples]
        if spec.bias is not None and at(spec.bias):
            alpha = next((a.f for a in node.attribute if a.name == "alpha"), 1.0)
            floats.append(self._bias(node, at(spec.bias), at(spec.triples[0][1]), at(spec.triples[1][1]), alpha))
        if spec.op == "ReduceMean" and self.opset >= 18:
            axes = next((list(a.ints) for a in node.attribute if a.name == "axes"), None)
            if axes is not None:
                floats.append(self._constant(f"{name}/axes", np.array(axes, np.int64)))
        attributes = {key: value for key, value in _attributes(node).items()
                      if key not in _DROPPED_ATTRIBUTES and not (spec.op == "ReduceMean" and key == "axes"
                                                                and self.opset >= 18)}
        quantized_output = spec.output is not None and at(spec.output[0])
        result = f"{node.output[0]}/float" if quantized_output else node.output[0]
        self.nodes.append(helper.make_node(spec.op, floats, [result], name=f"{name}/float", **attributes))
        if quantized_output:
            self._quantize(result, at(spec.output[0]), at(spec.output[1]), node.output[0])

    def _dequantize(self, value: str, scale: str = "", zero_point: str = "") -> str:
        if value in self.dequantized:
            return self.dequantized[value]
        if not scale:
            scale, zero_point = self.quantized.get(value, ("", ""))
            if not scale:
                return value  # a float tensor (a float input of a mixed op)
        out = f"{value}/dequantized"
        self.nodes.append(helper.make_node("DequantizeLinear", [value, scale, zero_point] if zero_point else
                                           [value, scale], [out], name=out, **self._axis(value, scale)))
        self.dequantized[value] = out
        return out

    def _quantize(self, value: str, scale: str, zero_point: str, out: str) -> None:
        self.nodes.append(helper.make_node("QuantizeLinear", [value, scale, zero_point] if zero_point else
                                           [value, scale], [out], name=out, **self._axis(value, scale)))
        self.quantized[out] = (scale, zero_point)

    def _axis(self, value: str, scale: str) -> dict:
        """A per-channel scale's axis (the output channels of a weight: 0)."""
        tensor = self.constants.get(scale)
        return {"axis": 0} if tensor is not None and int(np.prod(tensor.dims)) > 1 else {}

    def _bias(self, node: onnx.NodeProto, bias: str, x_scale: str, w_scale: str, alpha: float) -> str:
        """An int32 bias dequantized at ``alpha * x_scale * w_scale`` (a new constant)."""
        try:
            scale = alpha * _array(self.constants[x_scale]).astype(np.float32) \
                * _array(self.constants[w_scale]).astype(np.float32)
        except KeyError as exc:
            raise OnnxcamError(f"ONNX op {node.op_type} (node {node.name or node.output[0]!r}): its scales are "
                               "computed while the graph runs; only constant scales are supported") from exc
        name = node.name or node.output[0]  # a bias may be shared by ops of different scales
        scale_name = self._constant(f"{name}/bias_scale", scale.astype(np.float32))
        out = f"{name}/bias"
        self.nodes.append(helper.make_node("DequantizeLinear", [bias, scale_name], [out], name=out,
                                           **({"axis": 0} if scale.size > 1 else {})))
        return out

    def _constant(self, name: str, value: np.ndarray) -> str:
        tensor = numpy_helper.from_array(value, name)
        self.model.graph.initializer.append(tensor)
        self.constants[name] = tensor
        return name


def _array(tensor: onnx.TensorProto) -> np.ndarray:
    return numpy_helper.to_array(tensor)


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}
