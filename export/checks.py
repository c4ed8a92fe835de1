"""The export check that no constant of an explain-graph is expanded beyond its own size.

An ``Expand`` (or ``Tile``) whose data derive from initializers and constants alone
materializes copies of a weight at run time: a linear layer traced as a batched product
against its weight expanded per token held one copy of each block's in-projection per
token (gigabytes for a ViT-B). A constant may be broadcast along the dynamic (batch) dimensions, which cost
what any activation does, and a single value may fill a tensor of any shape (a ``full``); a
constant that grows along a fixed dimension is rejected.
"""
from __future__ import annotations

import math

import onnx

from onnxcam_export.passes.onnx.graph_edits import shapes as recorded_shapes

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
