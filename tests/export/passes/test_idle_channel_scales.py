"""Average pooling's backward hints onnxruntime's blocked layout with an identity channel scale;
at the layer the gradient is asked for, where nothing blocked follows, the hint is dropped
and the gradient is still torch autograd's."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxcam_export import export
from support.graphs import all_outputs
from support.torch_models import pooled_cnn
from support.torch_reference import autograd_reference, cosine


def _identity_scales(path) -> int:
    """Depthwise 1x1 convolutions of a kernel of ones in the graph."""
    graph = onnx.load(str(path)).graph
    kernels = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    return sum(1 for node in graph.node if node.op_type == "Conv" and node.input[1] in kernels
               and kernels[node.input[1]].shape[1:] == (1, 1, 1) and np.all(kernels[node.input[1]] == 1))


def test_hint_dropped_at_the_asked_layer_and_kept_before_a_deeper_backward(tmp_path):
    model = pooled_cnn()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    targets = np.array([[-1, 4], [2, -2]], np.int64)
    last, both = tmp_path / "last.onnx", tmp_path / "both.onnx"
    export(model, last, ["3"], input_size=(32, 32))
    export(model, both, ["3", "1"], input_size=(32, 32))
    # pooling's backward ends at layer 3: no hint there; the backward on to layer 1 keeps it
    assert _identity_scales(last) == 0
    assert _identity_scales(both) == 1
    outputs = all_outputs(both, x, targets)
    for layer in ("3", "1"):
        _, _, _, expected = autograd_reference(model, layer, x, targets)
        assert cosine(outputs[f"gradients/{layer}"], expected) > 1 - 1e-6
    np.testing.assert_array_equal(all_outputs(last, x, targets)["gradients/3"], outputs["gradients/3"])
