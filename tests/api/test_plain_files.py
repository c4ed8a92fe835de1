"""The explainer of plain classifier files (`onnxcam.api.plain_files`): the preprocessing a
file takes from its caller, checked in one line, and the same black-box maps as an
explain-graph of the same model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from onnxcam.api.explainer import Explainer
from onnxcam.api.plain_files import PlainExplainer, open_explainer
from onnxcam.errors import OnnxcamError
from onnxcam.images.plain_input import Preprocessing
from onnxcam.methods.gradient_free import RISE
from support.plain_models import tiny_classifier
from support.torch_models import digits_cnn

SIZE = 24


def test_black_box_on_an_explain_graph_uses_its_logits(tmp_path):
    """RISE runs on an explain-graph too (its forward passes give the logits)."""
    from onnxcam_export import export

    model, x, _ = digits_cnn()
    graph = tmp_path / "digits.onnx"
    export(model, graph, ["conv2"], input_size=(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3)
    plain = tmp_path / "digits_plain.onnx"
    torch.onnx.export(model, (torch.from_numpy(x[:1]),), str(plain), input_names=["x"], output_names=["y"],
                      dynamo=True, dynamic_shapes=({0: torch.export.Dim("N")},))
    method = RISE(samples=50, cells=3)
    a = Explainer(graph).explain(x[:2], method=method, normalized=True, top_k=1)
    b = PlainExplainer(plain, Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3)).explain(
        x[:2], method=method, normalized=True, top_k=1)
    np.testing.assert_array_equal(a.classes, b.classes)
    np.testing.assert_allclose(a.raw_maps, b.raw_maps, rtol=1e-4, atol=1e-6)
    assert isinstance(open_explainer(graph), Explainer) and isinstance(open_explainer(plain), PlainExplainer)
    with pytest.raises(OnnxcamError, match="carries its own preprocessing"):
        open_explainer(graph, Preprocessing(scale=255))


def test_bad_preprocessing_is_one_error(tmp_path):
    path = tiny_classifier(tmp_path / "tiny.onnx", SIZE)
    with pytest.raises(OnnxcamError, match="mean, std"):
        PlainExplainer(path, Preprocessing(std=(1.0, 0.0, 1.0)))
    with pytest.raises(OnnxcamError, match="--input-size.*24x24"):
        PlainExplainer(path, Preprocessing(input_size=(32, 32)))
    with pytest.raises(OnnxcamError, match="--output-name.*logits"):
        PlainExplainer(path, Preprocessing(output="probs"))
    with pytest.raises(OnnxcamError, match="gradcam needs an explain-graph"):
        PlainExplainer(path).method("gradcam")
