"""Global pooling applied before the repeat of the first target layer's rows, not after it.

At the first target layer the wrapper repeats each image's activations once per target and
appends ``layer_input``'s rows (``wrapper.ExplainWrapper``): an Unsqueeze, an Expand, a
Reshape and a Concat that copy the whole [N*K + M, C, h, w] map twice. Where the model pools
that map over its positions next (the head of most CNNs, whose default target layer sits
right before it), this rewrite of the translated graph pools each source first and repeats
and appends the pooled [.., C, 1, 1] rows instead: the same values (bit for bit for the
layer's own rows; ``layer_input``'s are pooled by a Reduce, to the rounding of a mean), and two
full copies of the layer's map fewer. A ReduceMean or ReduceMax
that drops the pooled axes (mnasnet's head) pools each source keeping them and drops them once
after the row ops. Only the forward is touched: the pooling's backward reads no values of its
input.
"""
from __future__ import annotations

from typing import Optional

import onnx

from onnxcam_export.passes.onnx.global_pools import covers_map
from onnxcam_export.passes.onnx.graph_edits import Rewriter, attribute, drop_unread

_POOLS = ("AveragePool", "MaxPool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax")
_ROWS = ("Concat", "Unsqueeze", "Expand", "Reshape")  # ops that can act on rows of any width


def _pools_positions(g: Rewriter, node: onnx.NodeProto, rank: int) -> bool:
    """Whether ``node`` reduces each [h, w] map of a rank-``rank`` tensor to one value."""
    if node.op_type in ("GlobalAveragePool", "GlobalMaxPool"):
        return True
    if node.op_type in ("ReduceMean", "ReduceMax"):
        return sorted(g.axes(node, 1, rank) or []) == list(range(2, rank))
    return covers_map(g, node)


class _Pusher(Rewriter):
    """Pushes one pooling node up through the row ops that produce its input."""

    def __init__(self, model: onnx.ModelProto):
        super().__init__(model, "pooled_repeat")
        self.inputs = {value.name for value in self.graph.input}
        self.new: list[onnx.NodeProto] = []
        self.pool: Optional[onnx.NodeProto] = None
        self.rank = 0

    def pooled(self, name: str, reader: onnx.NodeProto) -> Optional[str]:
        """``name`` pooled: the row op producing it applied to its pooled inputs where only
        ``reader`` reads it, else a copy of the pool; None where neither is possible."""
        node = self.producer.get(name)
        if node is None or node.op_type not in _ROWS or self.only_reader(name) is not reader:
            return self._pool(name)
        dims = self.dims.get(name)
        if dims is None or len(dims) < 2 or None in dims[-2:]:
            return None
        rank = len(dims)
        if node.op_type == "Concat":
            if attribute(node, "axis") % rank >= rank - 2:
                return None
            inputs = [self.pooled(piece, node) for piece in node.input]
            if None in inputs:
                return None
            return self._add(node, inputs)
        below = self.dims.get(node.input[0])
        if below is None or below[-2:] != dims[-2:]:
            return None  # the op moves values between positions and rows
        if node.op_type == "Unsqueeze":
            axes = self.axes(node, 1, rank)
            if axes is None or any(axis >= rank - 2 for axis in axes):
                return None
            source = self.pooled(node.input[0], node)
            return None if source is None else self._add(node, [source, *node.input[1:]])
        if node.op_type == "Reshape":
            target = self.values.get(node.input[1])
            if target is None or target.tolist()[-2:] != dims[-2:]:
                return None  # a run-time target, or one that a 0 or -1 makes read the positions
        source = self.pooled(node.input[0], node)
        if source is None:
            return None
        return self._add(node, [source, self.with_tail(node.input[1], [1, 1], self.new)])

    def _pool(self, name: str) -> Optional[str]:
        dims = self.dims.get(name)
        if dims is None or len(dims) != self.rank:
            return None
        if name in self.inputs:  # a graph input (layer_input) as a Reduce: see _reduce
            self.new.append(self._reduce(name))
            return self.new[-1].output[0]
        pool = self.node(self.pool.op_type, [name, *self.pool.input[1:]])
        pool.attribute.extend(self.pool.attribute)
        self.new.append(pool)
        return pool.output[0]

    def _reduce(self, name: str) -> onnx.NodeProto:
        """The pool of ``name`` as a ReduceMean or ReduceMax with keepdims. onnxruntime would run
        a pooling op of a graph input in its blocked layout, reordering the input (for
        ``layer_input`` usually empty) there and back: 13 µs on mobilenet_v3_small at batch 1."""
        return self.reduce("ReduceMax" if "Max" in self.pool.op_type else "ReduceMean", name,
                           list(range(2, self.rank)))

    def _add(self, node: onnx.NodeProto, inputs: list[str]) -> str:
        copy = self.node(node.op_type, inputs)
        copy.attribute.extend(node.attribute)
        self.new.append(copy)
        return copy.output[0]

    def push(self, pool: onnx.NodeProto) -> bool:
        """Replace ``pool`` by its input's row ops applied to pooled sources, in place."""
        dims = self.dims.get(pool.input[0])
        source = self.producer.get(pool.input[0])
        if (dims is None or source is None or source.op_type not in _ROWS
                or self.only_reader(pool.input[0]) is not pool or not _pools_positions(self, pool, len(dims))):
            return False
        self.new, self.pool, self.rank = [], pool, len(dims)
        dropped = attribute(pool, "keepdims", 1) == 0  # a Reduce that drops the pooled axes
        if dropped:  # each source pooled with keepdims, the axes dropped once after the row ops
            self.pool = onnx.NodeProto()
            self.pool.CopyFrom(pool)
            next(a for a in self.pool.attribute if a.name == "keepdims").i = 1
        result = self.pooled(pool.input[0], pool)
        if result is None:
            return False
        if dropped:
            self.new.append(self.squeeze(result, [self.rank - 2, self.rank - 1]))
        self.new[-1].output[0] = pool.output[0]
        self.new[-1].name = pool.output[0]
        index = list(self.graph.node).index(pool)
        self.graph.node.remove(pool)
        for offset, node in enumerate(self.new):
            self.graph.node.insert(index + offset, node)
        return True


def pool_before_repeats(model: onnx.ModelProto) -> int:
    """Rewrite, in place, every pooling over all positions whose input row ops made (repeats
    and concatenations along the rows); return how many."""
    g = _Pusher(model)
    rewritten = sum(g.push(node) for node in [n for n in g.graph.node if n.op_type in _POOLS])
    drop_unread(g.graph, _ROWS + ("Shape", "Constant"))  # and the constants of a push given up
    g.drop_stale_shapes()
    return rewritten
