"""Broadcast products moved after the slices and reshapes that follow them, and spatial means
of such products read from their unbroadcast factors.

The FX rewrite (``passes.fx.broadcasts``) writes global pooling's backward as ``g * ones[h, w]`` and
moves the slice of the explained rows and the [N, K, ...] reshape of the gradient output onto
``g``, but stops at the layout hint after the product. Where ``idle_channel_scales`` then drops
that hint (at the layer the gradient is asked for: most zoo models' default), the product is
followed by a slice and a reshape that each copy the whole gradient, and Grad-CAM's in-graph
map averages the copy over the positions it was broadcast to. A SqueezeNet-style head's
backward (``class_channel``) ends the same way with a product of two computed factors, the
class channel's map [R, 1, h, w] times the class's weights [R, C, 1, 1]. This rewrite of the
translated graph slices and reshapes the small factors instead, writes the product once, as the
gradient output, and takes the channel weights from the factors: several passes over the whole
gradient fewer. Checked on a synthetic graph and on real exports, outputs unchanged to the
rounding of a mean (tests/export).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx

from onnxcam_export.passes.onnx.graph_edits import (
    Dims,
    Rewriter,
    attribute,
    drop_unread,
)


class _Products(Rewriter):
    """The graph's lookups, its initializers of ones, and the products they rewrite."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__(model, "ones_product")
        self.ones = {name for name, value in self.values.items()
                     if value.dtype.kind == "f" and value.size > 1 and np.all(value == 1)}

    def factors(self, node: onnx.NodeProto) -> Optional[tuple[list[str], int]]:
        """(the computed factors, how many trailing axes the product keeps them unbroadcast on)
        of a product with an initializer of ones, or of two computed tensors of its rank, each
        of size 1 wherever the other spreads and each smaller than the product; else None."""
        if node.op_type != "Mul":
            return None
        a, b = node.input
        for factor, ones in ((a, b), (b, a)):
            if ones in self.ones:
                return [factor], self.values[ones].ndim
        dims, a_dims, b_dims = self.dims.get(node.output[0]), self.dims.get(a), self.dims.get(b)
        if dims is None or a_dims is None or b_dims is None or not len(a_dims) == len(b_dims) == len(dims):
            return None
        tail, a_tail, b_tail = dims[1:], a_dims[1:], b_dims[1:]
        if None in tail + a_tail + b_tail or a_tail == tail or b_tail == tail:
            return None
        return ([a, b], len(tail)) if all(1 in pair for pair in zip(a_tail, b_tail)) else None


def _trailing(dims: Dims, count: int) -> Optional[list[int]]:
    tail = dims[len(dims) - count:]
    return tail if len(tail) == count and all(isinstance(d, int) for d in tail) else None


def _sink(g: _Products, product: onnx.NodeProto, factors: list[str],
          count: int) -> Optional[tuple[list[onnx.NodeProto], list[onnx.NodeProto]]]:
    """(the slices and reshapes after ``product``, the nodes that replace it and them), or None;
    ``factors`` and ``count`` as ``_Products.factors`` finds them."""
    dims = g.dims.get(product.output[0])
    smalls = {factor: _trailing(g.dims.get(factor) or [], count) for factor in factors}
    if dims is None or any(small is None or len(g.dims[factor]) != len(dims) for factor, small in smalls.items()):
        return None
    chain, current, new, sources = [], product.output[0], [], {factor: factor for factor in factors}
    while (user := g.only_reader(current)) is not None and user.input[0] == current:
        rank = len(dims)
        if user.op_type == "Slice":
            axes = g.axes(user, 3, rank) if len(user.input) > 3 else list(range(len(g.values.get(user.input[1], []))))
            if not axes or any(axis >= rank - count for axis in axes):
                break
            steps = [g.node("Slice", [source, *user.input[1:]]) for source in sources.values()]
        elif user.op_type == "Reshape":
            out = g.dims.get(user.output[0])
            if out is None or _trailing(out, count) is None or _trailing(out, count) != _trailing(dims, count):
                break
            target = g.values.get(user.input[1])
            allowzero = attribute(user, "allowzero", 0)
            if not allowzero and (target is None or 0 in target.tolist()[:-count]):
                break  # a 0 copies an input size, which the factor may not share
            steps = [g.node("Reshape", [source, g.with_tail(user.input[1], smalls[factor], new)],
                            **({"allowzero": allowzero} if g.opset >= 14 else {}))
                     for factor, source in sources.items()]
            dims = out
        else:
            break
        new.extend(steps)
        sources = {factor: step.output[0] for factor, step in zip(sources, steps)}
        chain.append(user)
        current = user.output[0]
    if not chain:
        return None
    for factor, source in sources.items():
        g.dims[source] = [*dims[:len(dims) - count], *smalls[factor]]
    return chain, [*new, g.node("Mul", [sources.get(name, name) for name in product.input], current)]


def _mean(g: _Products, node: onnx.NodeProto) -> Optional[list[onnx.NodeProto]]:
    """The nodes that compute ``node`` (a ReduceMean) from the factors of the product it
    averages, or None: the factor itself where the other is ones spread over exactly the
    averaged axes, else the mean of the one factor that varies over them times the other."""
    product = g.producer.get(node.input[0])
    dims = g.dims.get(node.input[0])
    if product is None or product.op_type != "Mul" or dims is None:
        return None
    rank = len(dims)
    axes = g.axes(node, 1, rank)
    shapes = {name: ([1] * (rank - g.values[name].ndim) + list(g.values[name].shape) if name in g.ones
                     else g.dims.get(name)) for name in product.input}
    if axes is None or any(shape is None or len(shape) != rank for shape in shapes.values()):
        return None
    spreading = [name for name, shape in shapes.items() if any(shape[i] != 1 for i in axes)]  # None too
    if len(spreading) != 1:
        return None
    (spread,) = spreading
    other = product.input[1] if product.input[0] == spread else product.input[0]
    if spread in g.ones and any((i in axes) != (shapes[spread][i] > 1) for i in range(rank)):
        return None  # the ones spread over other axes too

    def squeezed(source: str) -> onnx.NodeProto:
        if attribute(node, "keepdims", 1):
            return g.node("Identity", [source], node.output[0])
        return g.squeeze(source, axes, node.output[0])

    if spread in g.ones:
        return [squeezed(other)]
    mean = g.reduce("ReduceMean", spread, axes)
    weighted = g.node("Mul", [mean.output[0], other])
    return [mean, weighted, squeezed(weighted.output[0])]


def sink_ones_products(model: onnx.ModelProto) -> int:
    """Rewrite, in place, the broadcast products followed by slices and reshapes, and the
    means of such products over their broadcast axes; return how many were rewritten."""
    g = _Products(model)
    rewritten = 0
    for product, found in [(node, found) for node in g.graph.node if (found := g.factors(node)) is not None]:
        sunk = _sink(g, product, *found)
        if sunk is None:
            continue
        chain, replacement = sunk
        for node in [product, *chain[:-1]]:
            g.graph.node.remove(node)
        index = list(g.graph.node).index(chain[-1])
        g.graph.node.remove(chain[-1])
        for offset, new in enumerate(replacement):
            g.graph.node.insert(index + offset, new)
        rewritten += 1
    g.producer = {out: node for node in g.graph.node for out in node.output}
    for node in [node for node in g.graph.node if node.op_type == "ReduceMean"]:
        if (mean := _mean(g, node)) is not None:
            index = list(g.graph.node).index(node)
            g.graph.node.remove(node)
            for offset, replacement in enumerate(mean):
                g.graph.node.insert(index + offset, replacement)
            rewritten += 1
    g.drop_stale_shapes()
    drop_unread(g.graph, ("Mul", "Slice", "Reshape", "Concat", "Shape", "Constant"))
    return rewritten
