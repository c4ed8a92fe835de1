"""Identity channel scales dropped where nothing runs in onnxruntime's blocked layout after them.

The backward of average pooling ends in an identity depthwise 1x1 convolution
(``decompositions._blocked``) so that the masks, sums and convolutions of the backward
that follows run in onnxruntime's blocked (NCHWc) layout. At the layer the gradient is
asked for, nothing follows but the slice of the explained rows and the reshape to the
``gradients/<layer>`` output, and the hint costs a convolution and two layout conversions
of the whole gradient (the default target of most zoo models sits right before the global
pooling). This rewrite of the translated graph lets such a convolution's readers read its
input, which is the same tensor bit for bit.
"""
from __future__ import annotations

from collections import defaultdict

import onnx

from onnxcam_export.passes.onnx.graph_edits import channel_scale, drop_unread

# ops that only cut or reshape a tensor: what reads their output decides for the hint
_PASS_THROUGH = ("Slice", "Reshape", "Squeeze", "Unsqueeze", "Identity")
# ops onnxruntime runs in the blocked layout when their input already is
_BLOCKED = ("Conv", "ConvTranspose", "Add", "Sum", "Mul", "Relu", "Clip", "Concat", "MaxPool",
            "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Upsample", "Resize")


def drop_idle_layout_hints(model: onnx.ModelProto) -> int:
    """Bypass, in place, every identity channel scale whose output reaches only graph outputs
    and ops without a blocked kernel (through slices and reshapes); return how many."""
    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)

    def blocked_after(name: str) -> bool:
        for reader in readers[name]:
            if reader.op_type in _BLOCKED:
                return True
            if reader.op_type in _PASS_THROUGH and blocked_after(reader.output[0]):
                return True
        return False

    idle = {node.output[0]: node.input[0] for node in graph.node
            if channel_scale(node, constants) == 1.0 and not blocked_after(node.output[0])}
    outputs = {value.name for value in graph.output}
    idle = {out: source for out, source in idle.items() if out not in outputs}
    for node in graph.node:
        for position, name in enumerate(node.input):
            if name in idle:
                node.input[position] = idle[name]
    drop_unread(graph, ("Conv",))
    return len(idle)
