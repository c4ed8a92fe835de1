"""Maps computed inside the graph (`export(maps=...)`, `onnxcam export --maps`, Grad-CAM's by
default) equal the runtime's own maps from the same file's activations and gradients: the raw
maps, the final heatmaps and their flags, and the targets' probabilities."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from onnxcam import Explainer
from onnxcam.methods.base import InGraphMap
from onnxcam.methods.maps import heatmaps
from onnxcam.methods.registry import get_method
from onnxcam.runtime.artifact import FORMAT_VERSION, heatmap_name, map_name, zero_map_name
from onnxcam.runtime.runner import target_scores
from onnxcam_export.in_graph_maps import IN_GRAPH_METHODS, in_graph_map
from support.cli import one_error_line, run_cli

IN_GRAPH = list(IN_GRAPH_METHODS)


@pytest.mark.parametrize("method", IN_GRAPH)
def test_torch_formulas_equal_the_numpy_methods(method):
    """The torch map of each in-graph method (``in_graph_map``) equals the numpy method of the
    same name (onnxcam.methods.gradient) on random activations and gradients: ReLU-like
    activations with zeros, gradients of both signs with zero runs (Grad-CAM++'s guard), one
    layer at its own resolution, and two layers fused at the input size as
    onnxcam.methods.maps.fuse_layers fuses them (normalized, resized, averaged)."""
    import torch

    rng = np.random.default_rng(4)
    layers = []
    for channels, h, w in ((6, 7, 5), (4, 12, 9)):
        acts = np.maximum(rng.normal(size=(3, channels, h, w)), 0).astype(np.float32)
        grads = (rng.normal(size=(3, 2, channels, h, w)) * 10.0 ** rng.integers(-2, 2, (3, 2, 1, 1, 1))).astype(np.float32)
        grads[0, 0, 0] = 0.0
        layers.append((acts, grads))
    size = (30, 22)  # not a multiple of either layer's
    numpy_method = get_method(method)
    for chosen in (layers[:1], layers):
        expected = numpy_method(chosen, size)
        got = in_graph_map(method, [(torch.from_numpy(a), torch.from_numpy(g)) for a, g in chosen], size).numpy()
        assert got.shape == expected.shape == ((3, 2) + (chosen[0][0].shape[2:] if len(chosen) == 1 else size))
        assert np.ptp(expected) > 0
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


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
    assert isinstance(chosen, InGraphMap)
    assert chosen.fetch(explainer.info) == [map_name(method), heatmap_name(method), zero_map_name(method)]
    images = [skimage.data.chelsea(), skimage.data.coffee()]
    graph = explainer.explain(images, method, top_k=2)
    host = explainer.explain(images, get_method(method), top_k=2)  # an instance: computed here
    np.testing.assert_array_equal(graph.classes, host.classes)
    assert not graph.zero_maps.any()
    assert graph.raw_maps.shape == host.raw_maps.shape == (2, 2, 96, 96)  # two layers: fused at input size
    assert np.abs(graph.raw_maps - host.raw_maps).max() <= 1e-4 * np.abs(host.raw_maps).max()
    for a, b in zip(graph.heatmaps, host.heatmaps):
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 1e-4, method


def test_default_export_computes_gradcam_heatmaps_and_probabilities(tmp_path):
    """A plain export holds Grad-CAM's final heatmaps at the size users run (224 px from a 7x7
    layer) and each target's probability: the same raw maps, heatmaps, flags and
    probabilities as the runtime computes from the file's activations, gradients and logits."""
    import torch
    import torchvision

    from onnxcam_export import export

    torch.manual_seed(0)
    path = tmp_path / "mobilenet.onnx"
    info = export(torchvision.models.mobilenet_v3_small().eval(), path, ["features.12"])
    assert info.maps == ["gradcam"] and info.format_version == FORMAT_VERSION
    explainer = Explainer(path)
    images = [skimage.data.chelsea(), skimage.data.astronaut(), skimage.data.rocket()]
    graph = explainer.explain(images, "gradcam", targets=[[-1, 281]] * 3)
    host = explainer.explain(images, get_method("gradcam"), targets=[[-1, 281]] * 3)
    assert graph.raw_maps.shape == host.raw_maps.shape == (3, 2, 7, 7)
    assert np.abs(graph.raw_maps - host.raw_maps).max() <= 1e-5 * np.abs(host.raw_maps).max()
    np.testing.assert_array_equal(graph.zero_maps, host.zero_maps)
    for a, b in zip(graph.heatmaps, host.heatmaps):
        assert np.abs(a - b).max() <= 1e-4
    expected = target_scores(graph.logits, graph.classes, "softmax")
    assert np.abs(graph.probs - expected).max() <= 1e-6 * expected.max()


def _heatmap_graph(shape: tuple[int, ...], size: tuple[int, int], opset: int):
    """A graph whose ``maps/gradcam`` output is its input, with the heatmap appended."""
    import onnx
    from onnx import TensorProto, helper

    from onnxcam.runtime.artifact import ArtifactInfo
    from onnxcam_export.passes.onnx.append_heatmaps import add_heatmaps

    dims = ["N", "K", *shape[2:]]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["maps"], [map_name("gradcam")])], "maps",
        [helper.make_tensor_value_info("maps", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info(map_name("gradcam"), TensorProto.FLOAT, dims)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    info = ArtifactInfo(layers=["x"], input_size=size, mean=[0.0] * 3, std=[1.0] * 3,
                        num_classes=2, maps=["gradcam"])
    add_heatmaps(model, info)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("shape,size,opset", [((3, 2, 7, 7), (224, 224), 18), ((2, 3, 14, 9), (160, 96), 17),
                                              ((2, 2, 12, 12), (8, 8), 18), ((2, 3, 40, 30), (40, 30), 18)])
def test_graph_heatmaps_equal_the_runtimes(shape, size, opset):
    """The appended heatmap subgraph gives the runtime's ``heatmaps`` (OpenCV resize, then
    min-max) of the same maps, flags included: constant, NaN, infinite, tiny-span, subnormal and
    same-size maps, upsampled, downsampled, at both ReduceMin forms."""
    import onnxruntime

    rng = np.random.default_rng(2)
    raw = (np.abs(rng.normal(size=shape)) * 10.0 ** rng.integers(-3, 4, size=shape[:2] + (1, 1))).astype(np.float32)
    raw[0, 0] = 2.5  # constant
    raw[-1, 0, 1, 2] = np.nan
    raw[-1, -1, 0, 0] = np.inf
    raw[1, -1] = 1000.0 + np.abs(rng.normal(size=shape[2:])) * 1e-5  # a span near float32 rounding
    raw[0, 1, :2] = 0.0  # ReLU's zeros
    subnormal = shape[0] > 2  # room for one more: a span of subnormals (a random-init head's maps)
    if subnormal:
        raw[1, 0] = np.abs(rng.normal(size=shape[2:])) * 1e-44
    session = onnxruntime.InferenceSession(_heatmap_graph(shape, size, opset).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    got, got_zero = session.run([heatmap_name("gradcam"), zero_map_name("gradcam")], {"maps": raw})
    expected, expected_zero = heatmaps(raw, size)
    np.testing.assert_array_equal(got_zero, expected_zero)
    assert expected_zero[0, 0] and expected_zero[-1, 0] and expected_zero[-1, -1] and not expected_zero.all()
    assert expected_zero[1, 0] or not subnormal
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-5
    assert got.min() >= 0.0 and got.max() <= 1.0
    assert not got[expected_zero].any()


def test_methods_not_in_graph_are_computed_on_the_host(two_layer_file):
    explainer = Explainer(two_layer_file)
    assert not isinstance(explainer.method("eigencam"), InGraphMap)
    assert not isinstance(explainer.method("scorecam"), InGraphMap)


def test_cli_exports_without_in_graph_maps(tmp_path):
    path = tmp_path / "r.onnx"
    proc = run_cli("export", "resnet18", "--weights", "none", "--maps", "none", "--input-size", "64", "64",
                   "-o", str(path))
    assert proc.returncode == 0, proc.stderr
    explainer = Explainer(path)
    assert explainer.info.maps == [] and not isinstance(explainer.method("gradcam"), InGraphMap)
    assert not any(name.startswith(("maps/", "heatmaps/")) for name in explainer.runner.outputs)


def test_cli_rejects_unknown_in_graph_method(tmp_path):
    proc = run_cli("export", "resnet18", "--weights", "none", "--maps", "gradcam,eigencam",
                   "-o", str(tmp_path / "r.onnx"))
    one_error_line(proc, "maps", "eigencam")
    assert not (tmp_path / "r.onnx").exists()
