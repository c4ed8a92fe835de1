"""Views of weights read in place, so onnxruntime holds each weight once.

A linear layer's backward multiplies by its weight the other way round. torch.onnx stores the
forward's transposed weight as an initializer and translates the backward's product against
``Transpose`` of it; onnxruntime folds that ``Transpose`` into a second initializer at load,
and the two orientations stay resident beside each other (a large fully-connected head
then costs its size twice over in memory). This rewrite of the translated graph reads
the weight itself in every product: a ``Gemm`` flips its ``transB``, a ``MatMul`` of a matrix
becomes a ``Gemm`` with ``transB=1``, and an even number of transposes is none. Likewise
a ``Reshape`` of a weight to its own shape (the backward's [C, -1] view of the classifier
before it gathers the target rows) is replaced by the weight. The values
computed are the same; the nodes left unused are removed.
"""
from __future__ import annotations

from typing import Optional

import onnx
from onnx import helper, numpy_helper

from onnxcam_export.passes.onnx.graph_edits import attribute, drop_unread, shapes


def _is_matrix_transpose(node: onnx.NodeProto) -> bool:
    return node.op_type == "Transpose" and attribute(node, "perm", [1, 0]) == [1, 0]


def _weight_behind(name: str, producer: dict[str, onnx.NodeProto],
                   matrices: set[str]) -> Optional[tuple[str, int]]:
    """For ``name`` = Transpose^t(W) of a 2-D initializer W with t >= 1: (W, t); else None."""
    flips = 0
    while name in producer and _is_matrix_transpose(producer[name]):
        name, flips = producer[name].input[0], flips + 1
    return (name, flips) if flips and name in matrices else None


def _constant_shape(name: str, constants: dict[str, onnx.TensorProto]) -> Optional[list[int]]:
    return numpy_helper.to_array(constants[name]).tolist() if name in constants else None


def _same_shape(dims: list[int], shape: list[int], allowzero: int) -> bool:
    """Whether Reshape to ``shape`` leaves a tensor of ``dims`` as it is."""
    if len(shape) != len(dims):
        return False
    resolved = [dim if (size == 0 and not allowzero) else size for size, dim in zip(shape, dims)]
    known = [size for size in resolved if size != -1]
    return all(size in (-1, dim) for size, dim in zip(resolved, dims)) and len(known) >= len(dims) - 1


def _bypass_reshapes(graph: onnx.GraphProto, constants: dict[str, onnx.TensorProto]) -> int:
    """Let the readers of a Reshape of a weight to its own shape read the weight."""
    aliases = {}
    for node in graph.node:
        weight = constants.get(node.input[0]) if node.op_type == "Reshape" else None
        shape = _constant_shape(node.input[1], constants) if weight is not None else None
        if shape is not None and len(weight.dims) >= 2 and _same_shape(list(weight.dims), shape,
                                                                       attribute(node, "allowzero", 0)):
            aliases[node.output[0]] = node.input[0]
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in aliases:
                node.input[position] = aliases[name]
    return len(aliases)


def read_weights_in_place(model: onnx.ModelProto) -> int:
    """Rewrite, in place, every Gemm or matrix MatMul whose second input is a transposed 2-D
    initializer to read the initializer, and every reader of a weight reshaped to its own
    shape to read the weight; return how many nodes now read a weight directly."""
    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    rewritten = _bypass_reshapes(graph, constants)
    matrices = {name for name, init in constants.items() if len(init.dims) == 2}
    producer = {out: node for node in graph.node for out in node.output}
    recorded = shapes(graph)
    for index, node in enumerate(graph.node):
        if node.op_type not in ("Gemm", "MatMul") or len(node.input) < 2:
            continue
        found = _weight_behind(node.input[1], producer, matrices)
        if found is None:
            continue
        weight, flips = found
        if node.op_type == "Gemm":
            flipped = (attribute(node, "transB", 0) + flips) % 2
            kept = [a for a in node.attribute if a.name != "transB"]
            del node.attribute[:]
            node.attribute.extend([*kept, helper.make_attribute("transB", flipped)])
            node.input[1] = weight
        elif flips % 2 == 0:
            node.input[1] = weight
        elif len(recorded.get(node.input[0]) or []) == 2:  # Gemm takes matrices only
            graph.node[index].CopyFrom(helper.make_node("Gemm", [node.input[0], weight], list(node.output),
                                                        name=node.name, transB=1))
        else:
            continue
        rewritten += 1
    drop_unread(graph, ("Transpose", "Reshape"))
    return rewritten
