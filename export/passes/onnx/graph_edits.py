"""What the checks and rewrites of a translated graph share: a node's attributes, the shapes
the graph records, channel scales, what nothing reads any more and its removal, and the
lookups and node naming of a rewrite (``Rewriter``)."""
from __future__ import annotations

from collections import Counter
from typing import Any, Optional, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

Dims = list  # per dimension an int (static) or None (dynamic or unknown)


def attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of ``node``'s attribute ``name`` (ints as a list), or ``default``."""
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)


def _dims(value: onnx.ValueInfoProto) -> Optional[Dims]:
    if not value.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def shapes(graph: onnx.GraphProto) -> dict[str, Dims]:
    """Every value's dimensions that the graph records (initializers' and constants' too)."""
    found = {v.name: dims for v in [*graph.input, *graph.output, *graph.value_info]
             if (dims := _dims(v)) is not None}
    found.update({init.name: list(init.dims) for init in graph.initializer})
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = list(node.attribute[0].t.dims)
    return found


def channel_scale(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> Optional[float]:
    """The factor of a depthwise 1x1 convolution whose kernel, an initializer of [C, 1, 1, 1],
    holds one value, with no bias, stride, dilation or padding; else None."""
    kernel = constants.get(node.input[1]) if node.op_type == "Conv" and len(node.input) == 2 else None
    if kernel is None or list(kernel.dims[1:]) != [1, 1, 1] or attribute(node, "group", 1) != kernel.dims[0]:
        return None
    if any(attribute(node, "pads", [])) or any(
            attribute(node, name, []) not in ([], [1, 1]) for name in ("strides", "dilations")):
        return None
    values = numpy_helper.to_array(kernel)
    return float(values.flat[0]) if np.all(values == values.flat[0]) else None


def names_read(graph: onnx.GraphProto) -> Counter:
    """How many times each value is read by a node, in subgraphs too, or is a graph output."""
    readers = Counter(out.name for out in graph.output)
    for node in graph.node:
        readers.update(node.input)
        for attribute in node.attribute:
            for body in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                readers.update(names_read(body))
    return readers


def drop_unread(graph: onnx.GraphProto, op_types: Sequence[str]) -> None:
    """Remove the nodes of ``op_types`` whose outputs nothing reads (latest first, so chains
    go too), then the initializers nothing reads (onnxruntime warns of each at load)."""
    readers = names_read(graph)
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if node.op_type in op_types and not any(readers[name] for name in node.output):
            readers.subtract(node.input)
            del graph.node[index]
    for index in reversed(range(len(graph.initializer))):
        if readers[graph.initializer[index].name] <= 0:
            del graph.initializer[index]


_SMALL = 1 << 16  # elements of the largest initializer read as a value


class Rewriter:
    """What the rewrites of a translated graph look up (small constants' values, producers,
    readers, recorded shapes) and how they name the nodes and constants they add."""

    def __init__(self, model: onnx.ModelProto, prefix: str):
        self.graph = model.graph
        self.prefix = prefix
        self.opset = next(e.version for e in model.opset_import if e.domain in ("", "ai.onnx"))
        self.values = {init.name: numpy_helper.to_array(init) for init in self.graph.initializer
                       if int(np.prod(init.dims)) <= _SMALL}  # shapes, axes and ones, not weights
        for node in self.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.producer = {out: node for node in self.graph.node for out in node.output}
        self.readers = names_read(self.graph)
        self.outputs = {value.name for value in self.graph.output}
        self.dims = shapes(self.graph)
        self.count = 0

    def node(self, op: str, inputs: list[str], output: Optional[str] = None, **attributes) -> onnx.NodeProto:
        if output is None:
            output = f"{self.prefix}_{self.count}_{op.lower()}"
            self.count += 1
        return helper.make_node(op, inputs, [output], name=output, **attributes)

    def constant(self, value: np.ndarray) -> str:
        name = f"{self.prefix}_{self.count}_constant"
        self.count += 1
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    def only_reader(self, name: str) -> Optional[onnx.NodeProto]:
        """The one node reading ``name``, when nothing else (nor the graph's outputs) does."""
        if name in self.outputs or self.readers[name] != 1:
            return None
        return next((node for node in self.graph.node if name in node.input), None)

    def axes(self, node: onnx.NodeProto, position: int, rank: int) -> Optional[list[int]]:
        """A node's axes, from its input at ``position`` or its attribute, made non-negative."""
        if len(node.input) > position and node.input[position]:
            value = self.values.get(node.input[position])
            axes = None if value is None else value.tolist()
        else:
            axes = attribute(node, "axes")
        return None if axes is None else [axis % rank for axis in axes]

    def reduce(self, op: str, x: str, axes: list[int], output: Optional[str] = None) -> onnx.NodeProto:
        """``op`` (ReduceMean or ReduceMax) of ``x`` over ``axes``, keeping them: the axes an
        input from opset 18, an attribute before."""
        if self.opset >= 18:
            return self.node(op, [x, self.constant(np.array(axes, np.int64))], output, keepdims=1)
        return self.node(op, [x], output, axes=axes, keepdims=1)

    def squeeze(self, x: str, axes: list[int], output: Optional[str] = None) -> onnx.NodeProto:
        """A Squeeze of ``axes`` of ``x``: the axes an input from opset 13, an attribute before."""
        if self.opset >= 13:
            return self.node("Squeeze", [x, self.constant(np.array(axes, np.int64))], output)
        return self.node("Squeeze", [x], output, axes=axes)

    def with_tail(self, shape: str, tail: list[int], new: list[onnx.NodeProto]) -> str:
        """The 1-D int64 ``shape`` with its last ``len(tail)`` entries replaced by ``tail``:
        a constant, the shape's own Concat of one-element pieces with its tail replaced, or a
        Slice and a Concat at run time; the nodes this needs are appended to ``new``."""
        count, target, pieces = len(tail), self.values.get(shape), self.producer.get(shape)
        if target is not None:
            return self.constant(np.array([*target.tolist()[:-count], *tail], np.int64))
        if (pieces is not None and pieces.op_type == "Concat" and len(pieces.input) >= count
                and all(self.dims.get(piece) == [1] for piece in pieces.input[-count:])):
            new.append(self.node("Concat", [*pieces.input[:-count], self.constant(np.array(tail, np.int64))], axis=0))
        else:
            lead = self.node("Slice", [shape, self.constant(np.array([0], np.int64)),
                                       self.constant(np.array([-count], np.int64))])
            new.extend([lead, self.node("Concat", [lead.output[0], self.constant(np.array(tail, np.int64))], axis=0)])
        return new[-1].output[0]

    def drop_stale_shapes(self) -> None:
        """Forget the recorded shapes of values no node produces any more."""
        produced = {out for node in self.graph.node for out in node.output}
        for value in [v for v in self.graph.value_info if v.name not in produced]:
            self.graph.value_info.remove(value)
