"""Export checks on the written graph: no constant expanded beyond its own size, and an INT8
file's forward still fused into onnxruntime's integer kernels.

An ``Expand`` (or ``Tile``) whose data derive from initializers and constants alone
materializes copies of a weight at run time: a linear layer traced as a batched product
against its weight expanded per token held one copy of each block's in-projection per
token (gigabytes for a ViT-B). A constant may be broadcast along the dynamic (batch) dimensions, which cost
what any activation does, and a single value may fill a tensor of any shape (a ``full``); a
constant that grows along a fixed dimension is rejected.

onnxruntime runs a QDQ file fast only where it fuses a ``DequantizeLinear -> op ->
QuantizeLinear`` group into one integer kernel (``QLinearConv``, ``QGemm``, ...); an extra
consumer of a group's float tensor keeps the group in float. :func:`check_fusion` counts the
integer kernels of onnxruntime's optimized graph for the file up to the target layers and for the
explain-graph: every one of the first must be in the second. (After the target layers the
backward reads the float values that the clipping masks need: those groups run in float.)
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Sequence, Union

import onnx

from onnxcam.errors import OnnxcamError
from onnxcam_export.passes.onnx.graph_edits import shapes as recorded_shapes

_INTEGER_OPS = ("QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul")

_EXPANDING = ("Expand", "Tile")


def constant_values(graph: onnx.GraphProto) -> set[str]:
    """Names of the values computed from initializers and constants alone."""
    constant = {init.name for init in graph.initializer}
    for node in graph.node:  # nodes are in topological order
        inputs = [name for name in node.input if name]
        if node.op_type == "Constant" or (inputs and all(name in constant for name in inputs)):
            constant.update(node.output)
    return constant


def expanded_constants(model: onnx.ModelProto) -> list[str]:
    """One line per ``Expand``/``Tile`` that grows a constant of more than one element along a
    fixed dimension, naming the node, the constant's shape and the result's."""
    constant = constant_values(model.graph)
    nodes = [n for n in model.graph.node if n.op_type in _EXPANDING and n.input[0] in constant]
    shapes = recorded_shapes(model.graph)
    if any(name not in shapes for n in nodes for name in (n.input[0], n.output[0])):
        try:  # shapes the exporter did not record
            shapes = recorded_shapes(onnx.shape_inference.infer_shapes(model).graph)
        except Exception:  # noqa: BLE001 (a model over 2 GB, an op the inference lacks): judge what is known
            pass
    found = []
    for node in nodes:
        source, result = shapes.get(node.input[0]), shapes.get(node.output[0])
        if source is None or result is None or None in source:
            continue
        size = math.prod(source)
        fixed = math.prod(d for d in result if d is not None)
        if size > 1 and fixed > size:
            shown = ["?" if d is None else d for d in result]
            found.append(f"{node.op_type} {node.name or node.output[0]} expands the constant "
                         f"{node.input[0]} {source} to {shown}")
    return found


def is_integer_kernel(op_type: str) -> bool:
    """Whether ``op_type`` is one of onnxruntime's integer kernels (QLinearConv, QGemm, ...)."""
    return op_type.startswith("QLinear") or op_type in _INTEGER_OPS


def integer_kernels(model: Union[onnx.ModelProto, str, Path]) -> int:
    """The number of integer kernels in onnxruntime's optimized CPU graph of ``model``."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.log_severity_level = 4
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
        ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(options.optimized_model_filepath)
    return sum(is_integer_kernel(node.op_type) for node in optimized.graph.node)


def up_to(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that computes ``tensors`` (its outputs) and nothing after them."""
    needed, stack = set(), list(tensors)
    producer = {name: node for node in model.graph.node for name in node.output}
    while stack:
        name = stack.pop()
        if name not in needed:
            needed.add(name)
            stack.extend(i for i in getattr(producer.get(name), "input", ()) if i)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    kept = [node for node in copy.graph.node if needed.intersection(node.output)]
    del copy.graph.node[:]
    copy.graph.node.extend(kept)
    del copy.graph.output[:]
    copy.graph.output.extend(onnx.ValueInfoProto(name=name) for name in tensors)
    return copy


def check_fusion(plain: onnx.ModelProto, explain: Union[str, Path], layers: Sequence[str],
                 input_gradients: bool = False) -> dict:
    """Integer kernels of the plain file (``plain``, in all and up to ``layers``) and of the
    explain-graph; raises :class:`OnnxcamError` when the explain-graph has fewer than the file
    has before its target layers. With ``input_gradients`` (the plain input gradient, whose
    clipping masks read every pair's float input) nothing is required (the counts are still
    returned)."""
    counts = {"plain": integer_kernels(plain), "before_layers": integer_kernels(up_to(plain, layers)),
              "explain": integer_kernels(explain)}
    if counts["explain"] < counts["before_layers"] and not input_gradients:
        raise OnnxcamError(f"export check failed: onnxruntime fuses {counts['before_layers']} integer kernels "
                           f"of the file before the target layers but {counts['explain']} of the explain-graph")
    return counts
