"""The class channel gathered before a classifier head's per-channel backward, not after it.

A head like SqueezeNet's (a 1x1 convolution to the classes, ReLU, global average pooling)
passes back the one-hot of each row's class through the pooling and the ReLU mask over every
class's map, then gathers the class channel for the head shortcut (``wrapper._through_head``):
at batch 8 four passes over [8, 1000, 13, 13] and their layout conversions, about a tenth of
SqueezeNet's plain inference. Products, quotients, clips, ReLUs and uniform depthwise scales
act on each channel alone, so this rewrite of the translated graph gathers the channel from
their operands instead and applies them to [R, 1, h, w]: the same values, bit for bit. It
stops at a tensor something else reads too (the forward's own maps), which are computed anyway.
A linear head's [R, C] logits are gathered the same way (an INT8 file's clipping mask of its
logits' pair is such a per-class product).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxcam_export.passes.onnx.graph_edits import (
    attribute,
    channel_scale,
    drop_unread,
    names_read,
    shapes,
)

_ELEMENTWISE = ("Mul", "Div", "Add", "Sub")
_UNARY = ("Relu", "Clip")  # Clip's bounds are scalars, its other inputs


class _Sinker:
    """Rewrites ``GatherElements(f(a, b, ...), index, axis=1)`` as ``f(gather(a), gather(b), ...)``."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.readers = names_read(graph)
        self.constants = {init.name: init for init in graph.initializer}
        self.dims = shapes(graph)
        self.nodes: list[onnx.NodeProto] = []
        self.rank = 4  # of the gathered tensor: [R, C, h, w] maps, or [R, C] logits (a linear head's)

    def _emit(self, op: str, inputs: list[str], hint: str, **attributes) -> str:
        output = f"class_channel_{len(self.nodes)}_{hint}"
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def gathered(self, name: str, index: str, small_index: Optional[str]) -> Optional[str]:
        """A value equal to ``GatherElements(name, index, axis=1)``, or None if ``name``'s
        shape does not allow it."""
        dims = self.dims.get(name)
        node = self.producer.get(name)
        channel = None if dims is None else len(dims) - (self.rank - 1)  # the channel axis, aligned from the last
        if dims is not None and (channel < 0 or dims[channel] == 1):
            return name  # broadcast over the channels: the same for every class
        if dims is not None and len(dims) != self.rank:
            return None
        if node is not None and self.readers[name] == 1:
            sunk = self._through(node, index, small_index)
            if sunk is not None:
                return sunk
        if dims is None:
            return None
        if self.rank == 4 and all(d == 1 for d in dims[2:]):  # [R, C, 1, 1]: the index without its spatial expansion
            return None if small_index is None else self._emit("GatherElements", [name, small_index], "small", axis=1)
        return self._emit("GatherElements", [name, index], "map", axis=1)

    def _through(self, node: onnx.NodeProto, index: str, small_index: Optional[str]) -> Optional[str]:
        """``node`` applied to its operands' class channels, if it acts on each channel alone."""
        if node.op_type in _ELEMENTWISE or node.op_type in _UNARY:
            operands = node.input[:1] if node.op_type in _UNARY else node.input
            sunk = [self.gathered(operand, index, small_index) for operand in operands]
            if any(s is None for s in sunk):
                return None
            return self._emit(node.op_type, [*sunk, *node.input[len(operands):]], node.op_type.lower())
        factor = channel_scale(node, self.constants)
        if factor is None:
            return None
        source = self.gathered(node.input[0], index, small_index)
        if source is None or factor == 1.0:
            return source
        scale = f"class_channel_{len(self.nodes)}_factor"
        self.graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), scale))
        return self._emit("Mul", [source, scale], "scaled")


def gather_class_channel_first(model: onnx.ModelProto) -> int:
    """Rewrite, in place, each channel ``GatherElements`` of a per-channel computation to
    gather from its operands; return how many were rewritten."""
    graph = model.graph
    sinker = _Sinker(graph)
    rewritten = 0
    for node in list(graph.node):
        if node.op_type != "GatherElements" or attribute(node, "axis", 0) != 1:
            continue
        data, index = node.input
        expand = sinker.producer.get(index)
        small = expand.input[0] if expand is not None and expand.op_type == "Expand" else None
        if small is not None and sinker.dims.get(small, [None])[1:] != [1, 1, 1]:
            small = None
        producer = sinker.producer.get(data)
        if producer is None or sinker.readers[data] != 1 or len(sinker.dims.get(data) or [0] * 4) not in (2, 4):
            continue
        sinker.rank = len(sinker.dims.get(data) or [0] * 4)
        start = len(sinker.nodes)
        sunk = sinker._through(producer, index, small)
        if sunk is None:
            del sinker.nodes[start:]
            continue
        position = list(graph.node).index(node)
        for offset, new in enumerate(sinker.nodes[start:]):
            graph.node.insert(position + offset, new)
        identity = helper.make_node("Identity", [sunk], list(node.output), name=node.name)
        graph.node.remove(node)
        graph.node.insert(position + len(sinker.nodes) - start, identity)
        rewritten += 1
    if rewritten:
        drop_unread(graph, ("Mul", "Div", "Add", "Sub", "Relu", "Clip", "Conv"))
    return rewritten
