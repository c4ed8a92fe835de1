"""Target-layer activations as an Identity of the value the graph computes, so that onnxruntime
fuses the activation function that makes them into the convolution before it.

onnxruntime fuses Conv + Relu (HardSwish, Clip, ...) into one kernel only where it may remove
the activation node, which it may not where that node's output is a graph output. A target
layer's output is one (``activations/<layer>``), and at the default layer of most CNNs it is a
convolution's activation: a MobileNetV3 ran its last HardSwish apart, as a HardSigmoid and
a product over the whole map. Behind an Identity the fusion happens, at the cost of one copy of the output.
"""
from __future__ import annotations

from typing import Sequence

import onnx
from onnx import helper

from onnxcam.runtime import artifact

_FUSABLE = frozenset({"Relu", "LeakyRelu", "Clip", "HardSigmoid", "HardSwish", "Sigmoid", "Tanh"})


def fuse_activation_outputs(model: onnx.ModelProto, layers: Sequence[str]) -> int:
    """Rewrite, in place, the activations outputs of ``layers`` that an activation function
    makes; return how many."""
    graph = model.graph
    names = {artifact.activation_name(layer) for layer in layers}
    count = 0
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if node.op_type not in _FUSABLE or node.output[0] not in names:
            continue
        name, inner = node.output[0], f"{node.output[0]}_value"
        node.output[0] = inner
        for reader in graph.node:
            reader.input[:] = [inner if value == name else value for value in reader.input]
        graph.node.insert(index + 1, helper.make_node("Identity", [inner], [name], name=f"{name}_identity"))
        count += 1
    return count
