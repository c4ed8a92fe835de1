"""The classifier-head shortcut: the input gradient of a linear or 1x1-convolution classifier
is the class's row of weights times the class channel's gradient, found only where nothing
after the classifier mixes classes, and equal to torch autograd."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from onnxcam.runtime.session import open_session
from onnxcam_export import export, passes
from onnxcam_export.layers import channelwise_head
from support.graphs import feeds
from support.torch_models import CLASSES, ConvHead
from support.torch_reference import autograd_reference, cosine


def _linear_head() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, CLASSES))


def test_head_found_only_where_no_op_after_it_mixes_classes():
    torch.manual_seed(0)
    probe = torch.randn(2, 3, 20, 20)
    assert channelwise_head(ConvHead().eval(), ["features"], probe) == "classifier.0"
    assert channelwise_head(_linear_head().eval(), ["0"], probe) == "6"
    assert channelwise_head(ConvHead(mixing=True).eval(), ["features"], probe) is None
    # a target layer after the classifier: no shortcut
    assert channelwise_head(ConvHead().eval(), ["classifier"], probe) is None


@pytest.mark.parametrize("layer", ["features", "features.1"])
def test_conv_head_gradients_match_autograd_without_a_backward_over_the_classes(layer, tmp_path):
    torch.manual_seed(0)
    model = ConvHead().eval()
    path = tmp_path / "head.onnx"
    export(model, path, [layer], input_size=(20, 20))
    graph = onnx.load(str(path)).graph
    weights = {init.name: list(init.dims) for init in graph.initializer}
    # no convolution reads the classifier's weights backwards (input channels = classes)
    assert not [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose") and
                weights.get(n.input[1], [0, 0])[1] == CLASSES]
    # nor does the ReLU mask run over every class's map: the class channel is gathered first
    assert not [n for n in graph.node if n.op_type == "Conv" and weights.get(n.input[1]) == [CLASSES, 1, 1, 1]]
    session, _ = open_session(path)
    x = np.random.default_rng(0).standard_normal((2, 3, 20, 20)).astype(np.float32)
    targets = np.array([[-1, 3], [-2, 7]])
    (got,) = session.run([f"gradients/{layer}"], feeds(session, x, targets))
    _, _, _, expected = autograd_reference(model.double(), layer, x.astype(np.float64), targets)
    for i in range(2):
        for j in range(2):
            assert cosine(got[i, j], expected[i, j]) >= 0.9999, (i, j)


def test_class_channel_gathered_first_changes_no_gradient(tmp_path, monkeypatch):
    """Gathering the class channel before the ReLU mask and pooling's backward gives the
    gradients of the graph that gathers it after them, bit for bit."""
    torch.manual_seed(0)
    model = ConvHead().eval()
    first, after = tmp_path / "first.onnx", tmp_path / "after.onnx"
    export(model, first, ["features.1"], input_size=(20, 20))
    assert "class_channel" in [step.name for step in passes.ONNX_PASSES]
    monkeypatch.setattr(passes, "ONNX_PASSES", tuple(step for step in passes.ONNX_PASSES if step.name != "class_channel"))
    export(model, after, ["features.1"], input_size=(20, 20))
    x = np.random.default_rng(1).standard_normal((3, 3, 20, 20)).astype(np.float32)
    targets = np.array([[-1, 3], [-2, 7], [0, -3]])
    results = []
    for path in (first, after):
        session, _ = open_session(path)
        results.append(session.run(["gradients/features.1", "heatmaps/gradcam"], feeds(session, x, targets)))
    for got, expected in zip(*results):
        np.testing.assert_array_equal(got, expected)
