"""Single-value constants of broadcasting ops at the rank of the op's output.

onnxruntime's CPU kernels (1.32) take an element-by-element path for a binary op between a
rank-0 constant and a tensor whose last dimension is 1, many times slower than the same
op against a constant of the tensor's rank. Global pooling's
backward makes exactly such tensors ([R, C, 1, 1] divided by h*w). This rewrite of the translated graph gives each single-value constant read by
a broadcasting op whose output ends in a dimension of 1 the rank of that output (all ones):
the same values, bit for bit.
"""
from __future__ import annotations

import onnx

from onnxcam_export.passes.onnx.graph_edits import Rewriter, drop_unread

_BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mod", "Where", "Equal",
                           "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor"})


def rank_scalars(model: onnx.ModelProto) -> int:
    """Rewrite, in place, the inputs concerned to ranked constants; return how many."""
    g = Rewriter(model, "ranked")
    ranked: dict[tuple[str, int], str] = {}
    count = 0
    for node in g.graph.node:
        dims = g.dims.get(node.output[0]) if node.op_type in _BROADCASTING else None
        if not dims or dims[-1] != 1:
            continue
        for position, name in enumerate(node.input):
            value = g.values.get(name)
            if value is None or value.size != 1 or value.ndim >= len(dims):
                continue
            key = (name, len(dims))
            if key not in ranked:
                ranked[key] = g.constant(value.reshape([1] * len(dims)))
            node.input[position] = ranked[key]
            count += 1
    drop_unread(g.graph, ("Constant",))
    return count
