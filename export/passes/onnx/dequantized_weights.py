"""The backward of an INT8 explain-graph reads float copies of the dequantized weights.

An INT8 file's weights are integer initializers behind a ``DequantizeLinear``. onnxruntime keeps
that node (its integer kernels read the integers), so every other reader of its output, the
backward's transposed or flipped view of the weight, would dequantize the whole weight again on
every run (EfficientNet-Lite0's 1280 x 1000 classifier: 2 ms of a 3 ms forward). Here the first
reader (the forward op, which the exporter writes before the backward) keeps the node; every
later reader reads a float initializer holding the same values, computed once, which onnxruntime
folds with the views of it. So does the first reader when its output is not read by one
``QuantizeLinear`` alone (the clipping mask reads it too): onnxruntime runs it in float anyway.
The values computed are the same.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxcam_export.passes.onnx.graph_edits import attribute, drop_unread, names_read

_INTEGERS = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT32)
_PRODUCTS = ("Conv", "MatMul", "Gemm")  # forward readers of weights that onnxruntime fuses with their pairs


def _dequantized(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> np.ndarray:
    """The float32 values of a DequantizeLinear of constants."""
    q = numpy_helper.to_array(constants[node.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(constants[node.input[1]]).astype(np.float32)
    zero = (numpy_helper.to_array(constants[node.input[2]]).astype(np.float32)
            if len(node.input) > 2 and node.input[2] else np.zeros_like(scale))
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * q.ndim
        shape[attribute(node, "axis", 1) % q.ndim] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q - zero) * scale).astype(np.float32)


def float_backward_weights(model: onnx.ModelProto) -> int:
    """Point every reader but the first of a constant DequantizeLinear's output at a float copy;
    returns how many weights got one."""
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    # scales and zero points may come from Constant nodes
    constants.update({node.output[0]: node.attribute[0].t for node in graph.node
                      if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value"})
    sources = {node.output[0]: node for node in graph.node if node.op_type == "DequantizeLinear"
               and node.input[0] in constants and constants[node.input[0]].data_type in _INTEGERS
               and all(name in constants for name in node.input[1:] if name)}
    readers = names_read(graph)
    quantizers = {node.input[0] for node in graph.node if node.op_type == "QuantizeLinear"}
    seen: set[str] = set()
    copies: dict[str, str] = {}
    for node in graph.node:
        fused = len(node.output) == 1 and readers[node.output[0]] == 1 and node.output[0] in quantizers
        for position, name in enumerate(node.input):
            if name not in sources:
                continue
            if name not in seen and (fused or node.op_type not in _PRODUCTS):
                seen.add(name)
                continue
            seen.add(name)
            if name not in copies:
                copies[name] = f"{name}/float"
                graph.initializer.append(numpy_helper.from_array(_dequantized(sources[name], constants), copies[name]))
            node.input[position] = copies[name]
    drop_unread(graph, ("DequantizeLinear",))
    return len(copies)
