"""What the rewrites of a translated graph share: a node's attributes, what nothing reads any
more, and its removal."""
from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import onnx
from onnx import helper


def attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of ``node``'s attribute ``name`` (ints as a list), or ``default``."""
    found = next((a for a in node.attribute if a.name == name), None)
    return default if found is None else helper.get_attribute_value(found)


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
