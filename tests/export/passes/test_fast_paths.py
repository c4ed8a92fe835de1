"""Rewrites that put the explain graph on onnxruntime's fast paths: single-value constants at
their op's rank (``passes.onnx.scalar_constants``), target-layer activations behind an
Identity so that the activation function fuses into its convolution
(``passes.onnx.activation_outputs``), and whole-map pooling windows as global pooling
(``passes.onnx.global_pools``). The outputs stay the same (bit for bit, or to the rounding of a
sum); the fusion is checked in the graph onnxruntime itself optimizes."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from onnxcam_export import export
from onnxcam_export.passes.onnx.global_pools import globalize_pools
from onnxcam_export.passes.onnx.scalar_constants import rank_scalars
from support.graphs import all_outputs, run_model


def _scalar_graph() -> onnx.ModelProto:
    """x [R, C, 1, 1] divided by a scalar, and y [R, C, 3, 3] times the same scalar."""
    nodes = [helper.make_node("Div", ["x", "scale"], ["small"]),
             helper.make_node("Mul", ["y", "scale"], ["large"]),
             helper.make_node("Max", ["x", "floor"], ["clamped"])]
    graph = helper.make_graph(
        nodes, "scalars",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["R", 4, 1, 1]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, ["R", 4, 3, 3])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name, dims in
         (("small", ["R", 4, 1, 1]), ("large", ["R", 4, 3, 3]), ("clamped", ["R", 4, 1, 1]))],
        [numpy_helper.from_array(np.array(49.0, np.float32), "scale"),
         numpy_helper.from_array(np.array([0.0], np.float32), "floor")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def test_a_scalar_meeting_a_tensor_that_ends_in_one_takes_its_rank():
    model = _scalar_graph()
    rng = np.random.default_rng(0)
    feed = {"x": rng.standard_normal((3, 4, 1, 1)).astype(np.float32),
            "y": rng.standard_normal((3, 4, 3, 3)).astype(np.float32)}

    before = run_model(model, feed)
    assert rank_scalars(model) == 2
    onnx.checker.check_model(model)
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    div, mul, top = model.graph.node
    assert shapes[div.input[1]] == [1, 1, 1, 1] and shapes[top.input[1]] == [1, 1, 1, 1]
    assert mul.input[1] == "scale" and shapes["scale"] == []  # its output ends in 3: as it was
    for got, want in zip(run_model(model, feed), before):
        np.testing.assert_array_equal(got, want)


def _optimized(path, tmp_path) -> onnx.GraphProto:
    """The graph as onnxruntime runs it on this machine's CPU."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx.load(options.optimized_model_filepath).graph


def test_the_target_layers_activation_fuses_into_its_convolution(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.Hardswish(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    path = tmp_path / "model.onnx"
    export(model, path, ["4"], input_size=(64, 64))
    graph = onnx.load(str(path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    assert producer["activations/4"].op_type == "Identity"
    assert producer[producer["activations/4"].input[0]].op_type == "HardSwish"
    optimized = _optimized(path, tmp_path)
    # no activation function runs apart: each is part of a convolution kernel
    assert not [node.op_type for node in optimized.node if node.op_type in ("HardSwish", "HardSigmoid", "Relu")]
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    out = all_outputs(path, x, np.array([[-1], [3]], np.int64))
    with torch.no_grad():
        expected = model[:5](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out["activations/4"], expected, rtol=1e-5, atol=1e-5)


def test_a_pooling_window_over_the_whole_map_runs_as_global_pooling():
    windows = {"whole": {"kernel_shape": [5, 4]}, "max": {"kernel_shape": [5, 4]},
               "smaller": {"kernel_shape": [2, 2], "strides": [2, 2]},
               "padded": {"kernel_shape": [5, 4], "pads": [1, 0, 0, 0]}}
    nodes = [helper.make_node("MaxPool" if name == "max" else "AveragePool", ["x"], [name], **attributes)
             for name, attributes in windows.items()]
    graph = helper.make_graph(
        nodes, "pools", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5, 4])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in windows])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    x = {"x": np.random.default_rng(0).standard_normal((2, 3, 5, 4)).astype(np.float32)}

    before = run_model(model, x)
    assert globalize_pools(model) == 2
    assert [node.op_type for node in model.graph.node] == ["GlobalAveragePool", "GlobalMaxPool",
                                                           "AveragePool", "AveragePool"]
    for got, want in zip(run_model(model, x), before):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
