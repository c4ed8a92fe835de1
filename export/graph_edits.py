"""What the checks and rewrites of a translated graph share: a node's attributes, the shapes
the graph records, channel scales, what nothing reads any more, and its removal."""
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
