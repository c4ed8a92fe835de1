"""A pooling window that covers the whole map, run as onnxruntime's global pooling.

``adaptive_avg_pool2d`` to 1 x 1 traces (``ContiguousAdaptivePool``) as an AveragePool whose
kernel is the map. onnxruntime runs that as a windowed pool, several times slower than GlobalAveragePool,
and a MobileNetV3's squeeze-and-excitation blocks pay it in every block. This rewrite of the translated graph replaces
such an AveragePool or MaxPool (no padding, no dilation) by GlobalAveragePool or GlobalMaxPool:
the same mean or maximum, to float32 rounding of the sum.
"""
from __future__ import annotations

import onnx
from onnx import helper

from onnxcam_export.passes.onnx.graph_edits import Rewriter, attribute

_GLOBAL = {"AveragePool": "GlobalAveragePool", "MaxPool": "GlobalMaxPool"}


def covers_map(g: Rewriter, node: onnx.NodeProto) -> bool:
    """Whether the AveragePool or MaxPool ``node`` has one window, the whole map of its input."""
    dims = g.dims.get(node.input[0])
    size = None if dims is None else dims[2:]
    return (node.op_type in _GLOBAL and len(node.output) == 1 and size is not None and None not in size
            and attribute(node, "kernel_shape") == size and not any(attribute(node, "pads", []))
            and attribute(node, "auto_pad", b"NOTSET") in (b"NOTSET", b"VALID")
            and all(d == 1 for d in attribute(node, "dilations", [1] * len(size))))


def globalize_pools(model: onnx.ModelProto) -> int:
    """Rewrite, in place, each pooling whose window is its whole input map; return how many."""
    g = Rewriter(model, "global_pool")
    count = 0
    for node in g.graph.node:
        if covers_map(g, node):
            node.CopyFrom(helper.make_node(_GLOBAL[node.op_type], [node.input[0]], list(node.output), name=node.name))
            count += 1
    return count
