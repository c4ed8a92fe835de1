"""Average pooling's backward hints onnxruntime's blocked layout with an identity channel scale;
at the layer the gradient is asked for, where nothing blocked follows, the hint is dropped
and the gradient is still torch autograd's."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import nn

from onnxcam_export import export
from test_parity import feeds
from torch_reference import autograd_reference, cosine


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(32, 10)).eval()


def _identity_scales(path) -> int:
    """Depthwise 1x1 convolutions of a kernel of ones in the graph."""
    graph = onnx.load(str(path)).graph
    kernels = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    return sum(1 for node in graph.node if node.op_type == "Conv" and node.input[1] in kernels
               and kernels[node.input[1]].shape[1:] == (1, 1, 1) and np.all(kernels[node.input[1]] == 1))


def test_hint_dropped_at_the_asked_layer_and_kept_before_a_deeper_backward(tmp_path):
    model = _model()
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    targets = np.array([[-1, 4], [2, -2]], np.int64)
    last, both = tmp_path / "last.onnx", tmp_path / "both.onnx"
    export(model, last, ["3"], input_size=(32, 32))
    export(model, both, ["3", "1"], input_size=(32, 32))
    # pooling's backward ends at layer 3: no hint there; the backward on to layer 1 keeps it
    assert _identity_scales(last) == 0
    assert _identity_scales(both) == 1
    session = ort.InferenceSession(str(both), providers=["CPUExecutionProvider"])
    outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds(session, x, targets))))
    for layer in ("3", "1"):
        _, _, _, expected = autograd_reference(model, layer, x, targets)
        assert cosine(outputs[f"gradients/{layer}"], expected) > 1 - 1e-6
    session = ort.InferenceSession(str(last), providers=["CPUExecutionProvider"])
    (gradient,) = session.run(["gradients/3"], feeds(session, x, targets))
    np.testing.assert_array_equal(gradient, outputs["gradients/3"])
