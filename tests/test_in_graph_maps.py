"""Maps computed inside the graph (`export(maps=...)`, `onnxcam export --maps`) equal the
runtime's own maps from the same file's activations and gradients."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from test_cli_export import one_line_error, onnxcam

from onnxcam import Explainer
from onnxcam.artifact import map_name
from onnxcam.methods import InGraphMap
from onnxcam.registry import get_method

IN_GRAPH = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam"]


@pytest.fixture(scope="module")
def two_layer_file(tmp_path_factory):
    """resnet18 (random init) with an inner and the last layer, so fusion is exercised and the
    inner gradient depends on the input."""
    import torch
    import torchvision

    from onnxcam_export import export

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("maps") / "resnet18.onnx"
    info = export(torchvision.models.resnet18().eval(), path, ["layer3", "layer4"],
                  input_size=(96, 96), maps=IN_GRAPH + ["gradcam"])
    assert info.maps == IN_GRAPH  # repeats dropped
    return path


@pytest.mark.parametrize("method", IN_GRAPH)
def test_in_graph_map_matches_runtime(two_layer_file, method):
    explainer = Explainer(two_layer_file)
    chosen = explainer.method(method)
    assert isinstance(chosen, InGraphMap) and chosen.fetch(explainer.info) == [map_name(method)]
    images = [skimage.data.chelsea(), skimage.data.coffee()]
    graph = explainer.explain(images, method, top_k=2)
    host = explainer.explain(images, get_method(method), top_k=2)  # an instance: computed here
    np.testing.assert_array_equal(graph.classes, host.classes)
    assert not graph.zero_maps.any()
    for a, b in zip(graph.heatmaps, host.heatmaps):
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1e-4, method


def test_methods_not_in_graph_are_computed_on_the_host(two_layer_file):
    explainer = Explainer(two_layer_file)
    assert not isinstance(explainer.method("eigencam"), InGraphMap)
    assert not isinstance(explainer.method("scorecam"), InGraphMap)


def test_cli_rejects_unknown_in_graph_method(tmp_path):
    proc = onnxcam("export", "resnet18", "--weights", "none", "--maps", "gradcam,eigencam",
                   "-o", str(tmp_path / "r.onnx"))
    one_line_error(proc, "maps", "eigencam")
    assert not (tmp_path / "r.onnx").exists()
