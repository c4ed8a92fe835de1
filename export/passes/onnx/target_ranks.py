"""The class ranking that resolves negative targets, bounded by the deepest rank asked for.

``wrapper.resolve_targets`` sorts every class (``topk(logits, C)``) because the rank a target asks for
(-r: the r-th highest logit) is only known at run time. A full sort of a thousand logits
costs more than the rest of a small model's explain tail. ONNX's
TopK takes its K as a tensor, so this rewrite of the translated graph computes
K = clip(max(-targets), 1, C) from the ``targets`` input: the common top-1 sorts nothing.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxcam.runtime import artifact


def _ranking_topk(graph: onnx.GraphProto) -> Optional[onnx.NodeProto]:
    """The TopK whose indices, gathered at the ranks, become ``target_indices``; None when the
    graph has none (a model with no such path)."""
    producer = {out: node for node in graph.node for out in node.output}
    select = producer.get(artifact.TARGET_INDICES)
    if select is None or select.op_type != "Where":
        return None
    gather = producer.get(select.input[2])
    if gather is None or gather.op_type != "GatherElements":
        return None
    topk = producer.get(gather.input[0])
    return topk if topk is not None and topk.op_type == "TopK" and topk.output[1] == gather.input[0] else None


def bound_target_ranks(model: onnx.ModelProto) -> bool:
    """Give the ranking TopK the deepest rank ``targets`` asks for as its K, in place;
    False when the graph has no ranking TopK."""
    graph = model.graph
    topk = _ranking_topk(graph)
    constants = {init.name: init for init in graph.initializer}
    if topk is None or topk.input[1] not in constants:
        return False
    classes = int(numpy_helper.to_array(constants[topk.input[1]]).reshape(-1)[0])
    prefix = "bound_ranks_"
    graph.initializer.extend([
        numpy_helper.from_array(np.array([1], np.int64), prefix + "shape"),
        numpy_helper.from_array(np.array(1, np.int64), prefix + "one"),
        numpy_helper.from_array(np.array(classes, np.int64), prefix + "classes"),
    ])
    nodes = [
        helper.make_node("Neg", [artifact.TARGETS], [prefix + "neg"]),
        # over an empty batch the maximum is the least int64, which the clip raises to 1
        helper.make_node("ReduceMax", [prefix + "neg"], [prefix + "deepest"], keepdims=1),
        helper.make_node("Reshape", [prefix + "deepest", prefix + "shape"], [prefix + "flat"]),
        helper.make_node("Clip", [prefix + "flat", prefix + "one", prefix + "classes"], [prefix + "k"]),
    ]
    position = list(graph.node).index(topk)
    for offset, node in enumerate(nodes):
        graph.node.insert(position + offset, node)
    full, topk.input[1] = topk.input[1], prefix + "k"
    if not any(full in node.input for node in graph.node):
        graph.initializer.remove(constants[full])
    stale = set(topk.output)  # their recorded [N, C] shapes no longer hold
    kept = [value for value in graph.value_info if value.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    return True

