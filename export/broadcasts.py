"""Broadcasts in the traced explain graph as onnxruntime runs them fastest.

Backward passes broadcast gradients: global average pooling's backward expands [R, C, 1, 1]
to [R, C, h, w] and divides by h*w (``grad.expand(...) / numel``). onnxruntime's Expand is
several times slower than a broadcasting Mul (1.16 against 0.39 ms for [8, 1280, 1, 1] to
[8, 1280, 7, 7] with the division, 2 threads), and the division after it reads the big
tensor again. These rewrites run on the FX graph before ONNX translation and keep every value
bit for bit: the scalar division moves before the expand, and an expand of a computed tensor
whose broadcast dimensions are static becomes a product with ones.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import fx

aten = torch.ops.aten
_SCALAR_OPS = (aten.div.Tensor, aten.mul.Tensor, aten.div.Scalar, aten.mul.Scalar)


def _ones_shape(node: fx.Node) -> Optional[list[int]]:
    """For ``expand(x, sizes)``: the shape of ones whose product with x is the expand, when
    every broadcast dimension is static and x is computed from the input (it has a symbolic
    dimension: never a weight, whose expansion the exporter must still see and reject)."""
    x, sizes = node.args[0], node.args[1]
    value = x.meta.get("val") if isinstance(x, fx.Node) else None
    if value is None or not value.is_floating_point() or all(isinstance(d, int) for d in value.shape):
        return None
    lead = len(sizes) - value.dim()
    shape = []
    for i, size in enumerate(sizes):
        current = value.shape[i - lead] if i >= lead else 1
        if size == -1 or (not isinstance(size, int) and not isinstance(current, int)):
            shape.append(1)  # kept, or symbolic to the same symbol (a symbolic size is never 1)
        elif isinstance(size, int) and isinstance(current, int) and current in (1, size):
            shape.append(size if current == 1 else 1)
        else:  # a broadcast to a symbolic size
            return None
    return shape if any(s != 1 for s in shape) else None


def _divide_first(graph: fx.Graph) -> None:
    """``op(expand(x), scalar)`` -> ``expand(op(x, scalar))`` for a single-use expand."""
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _SCALAR_OPS:
            continue
        source, scalar = node.args[0], node.args[1]
        if (not isinstance(source, fx.Node) or source.target is not aten.expand.default
                or len(source.users) != 1 or not isinstance(scalar, (int, float))):
            continue
        with graph.inserting_before(node):
            scaled = graph.call_function(node.target, (source.args[0], scalar))
            scaled.meta = dict(source.args[0].meta)
            expanded = graph.call_function(aten.expand.default, (scaled, *source.args[1:]))
            expanded.meta = dict(node.meta)
        node.replace_all_uses_with(expanded)
        graph.erase_node(node)
        graph.erase_node(source)


def broadcast_expands(module: fx.GraphModule) -> int:
    """Rewrite the graph's gradient broadcasts in place; returns how many expands became products."""
    graph = module.graph
    _divide_first(graph)
    rewritten = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not aten.expand.default:
            continue
        shape = _ones_shape(node)
        if shape is None:
            continue
        x = node.args[0]
        dtype = x.meta["val"].dtype
        with graph.inserting_before(node):
            ones = graph.call_function(aten.ones.default, (shape,), {"dtype": dtype})
            product = graph.call_function(aten.mul.Tensor, (x, ones))
            product.meta = dict(node.meta)
        node.replace_all_uses_with(product)
        graph.erase_node(node)
        rewritten += 1
    graph.lint()
    module.recompile()
    return rewritten
