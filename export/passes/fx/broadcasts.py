"""Broadcasts in the traced explain graph as onnxruntime runs them fastest.

Backward passes broadcast gradients: global average pooling's backward expands [R, C, 1, 1]
to [R, C, h, w] and divides by h*w (``grad.expand(...) / numel``). onnxruntime's Expand is
several times slower than a broadcasting Mul, and the division after it reads the big
tensor again. These rewrites run on the FX graph before ONNX translation and keep every value
bit for bit: the scalar division moves before the expand, an expand of a computed tensor
whose broadcast dimensions are static becomes a product with ones, and the slices and reshapes
that followed it (the backward of the concatenation with ``layer_input``, the [N, K, ...]
view of the gradient output) move before the product, onto the small tensor.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import fx

aten = torch.ops.aten
_SCALAR_OPS = (aten.div.Tensor, aten.mul.Tensor, aten.div.Scalar, aten.mul.Scalar)
_VIEWS = (aten.view.default, aten._unsafe_view.default, aten.reshape.default)


def _computed(x) -> bool:
    """Whether ``x`` is a float tensor computed from the input: it has a symbolic dimension.
    Never a weight, whose expansion the exporter must still see and reject."""
    value = x.meta.get("val") if isinstance(x, fx.Node) else None
    return (isinstance(value, torch.Tensor) and value.is_floating_point()
            and not all(isinstance(d, int) for d in value.shape))


def _ones_shape(node: fx.Node) -> Optional[list[int]]:
    """For ``expand(x, sizes)`` of a computed x: the shape of ones whose product with x is the
    expand, when every broadcast dimension is static."""
    x, sizes = node.args[0], node.args[1]
    if not _computed(x):
        return None
    value = x.meta["val"]
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
    """``op(expand(x), scalar)`` -> ``expand(op(x, scalar))`` for a single-use expand of a
    computed x."""
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target not in _SCALAR_OPS:
            continue
        source, scalar = node.args[0], node.args[1]
        if (not isinstance(source, fx.Node) or source.target is not aten.expand.default
                or len(source.users) != 1 or not isinstance(scalar, (int, float))
                or not _computed(source.args[0])):
            continue
        with graph.inserting_before(node):
            scaled = graph.call_function(node.target, (source.args[0], scalar))
            scaled.meta = dict(source.args[0].meta)
            expanded = graph.call_function(aten.expand.default, (scaled, *source.args[1:]))
            expanded.meta = dict(node.meta)
        node.replace_all_uses_with(expanded)
        graph.erase_node(node)
        graph.erase_node(source)


def _sink(graph: fx.Graph, expand: fx.Node, shape: list[int]) -> tuple[fx.Node, fx.Node, list[int]]:
    """Follow ``expand``'s single-use chain of slices along unbroadcast leading dimensions and
    reshapes that keep the broadcast trailing dimensions; returns (the last node of the chain,
    the same chain applied to the unexpanded tensor, the ones' trailing shape). The product then
    comes last and writes the big tensor once (a slice or reshape after it copied it again)."""
    rank = len(shape)
    trailing = rank - next(i for i, size in enumerate(shape) if size != 1)
    out = list(expand.meta["val"].shape)[-trailing:]
    ones = shape[-trailing:]
    if not all(isinstance(size, int) for size in out):
        return expand, expand.args[0], ones
    current, source = expand, expand.args[0]
    while True:
        for user in list(current.users):  # a leading dimension's size: the same on the source
            if user.target is aten.sym_size.int and user.args[1] % rank < rank - trailing:
                user.replace_input_with(current, source)
        if len(current.users) != 1:
            break
        user = next(iter(current.users))
        if user.target is aten.slice.Tensor and user.args[0] is current:
            dim = user.args[1] if len(user.args) > 1 else 0
            if not 0 <= dim % rank < rank - trailing:
                break
            with graph.inserting_before(user):
                source = graph.call_function(aten.slice.Tensor, (source, *user.args[1:]), dict(user.kwargs))
        elif user.target in _VIEWS and user.args[0] is current and list(user.args[1][-trailing:]) == out:
            kept = [size if one == 1 else 1 for one, size in zip(ones, out)]
            with graph.inserting_before(user):
                source = graph.call_function(aten.reshape.default, (source, [*user.args[1][:-trailing], *kept]))
            rank = len(user.args[1])
        else:
            break
        current = user
    return current, source, ones


def broadcast_expands(module: fx.GraphModule) -> int:
    """Rewrite the graph's gradient broadcasts in place; returns how many expands became products."""
    graph = module.graph
    graph.eliminate_dead_code()  # the unused half of a concatenation's backward
    _divide_first(graph)
    rewritten = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not aten.expand.default:
            continue
        shape = _ones_shape(node)
        if shape is None:
            continue
        last, source, ones_shape = _sink(graph, node, shape)
        with graph.inserting_before(last):
            ones = graph.call_function(aten.ones.default, (ones_shape,), {"dtype": node.args[0].meta["val"].dtype})
            product = graph.call_function(aten.mul.Tensor, (source, ones))
        last.replace_all_uses_with(product)
        while last is not node:  # the chain, from its end back to the expand
            previous = last.args[0]
            graph.erase_node(last)
            last = previous
        graph.erase_node(node)
        rewritten += 1
    graph.lint()
    module.recompile()
    return rewritten
