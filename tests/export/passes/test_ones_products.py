"""Global pooling's backward is a product with ones, and a SqueezeNet-style head's a product of
the class channel's map and the class's weights; at the layer the gradient is asked for, the
slice and reshape after it act on the small factors and Grad-CAM's weights are read from the
factors, with the same gradients (torch autograd's) and the same maps as before the rewrite."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from onnxcam.methods.gradient import GradCAM
from onnxcam_export import export
from onnxcam_export.passes.onnx.ones_products import sink_ones_products
from support.graphs import all_outputs, run_model
from support.torch_models import ConvHead, pooled_cnn
from support.torch_reference import autograd_reference, cosine


def _graph(shape_from_pieces: bool = True) -> onnx.ModelProto:
    """g [R, C, 1, 1] times ones [7, 7], the first rows, reshaped to [N, K, C, 7, 7] by a shape
    computed at run time (a Concat of pieces, or the shape of another input), and averaged over
    the positions (as in-graph Grad-CAM does)."""
    shape = [helper.make_tensor_value_info(name, TensorProto.INT64, [1]) for name in ("n", "k")]
    target = ([helper.make_node("Shape", ["x"], ["n"], start=0, end=1),
               helper.make_node("Shape", ["x"], ["k"], start=1, end=2),
               helper.make_node("Concat", ["n", "k", "c", "seven", "seven"], ["target"], axis=0)]
              if shape_from_pieces else [helper.make_node("Shape", ["like"], ["target"])])
    nodes = [
        *target,
        helper.make_node("Mul", ["g", "ones"], ["spread"]),
        helper.make_node("Slice", ["spread", "zero", "rows", "zero"], ["kept"]),
        helper.make_node("Reshape", ["kept", "target"], ["gradients"], allowzero=1),
        helper.make_node("ReduceMean", ["gradients", "spatial"], ["weights"], keepdims=0),
    ]
    constants = {"ones": np.ones((7, 7), np.float32), "zero": np.array([0], np.int64),
                 "c": np.array([5], np.int64), "seven": np.array([7], np.int64),
                 "spatial": np.array([-2, -1], np.int64)}
    inputs = [helper.make_tensor_value_info("g", TensorProto.FLOAT, ["R", 5, 1, 1]),
              helper.make_tensor_value_info("rows", TensorProto.INT64, [1]),
              helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "K"]) if shape_from_pieces
              else helper.make_tensor_value_info("like", TensorProto.FLOAT, ["N", "K", 5, 7, 7])]
    graph = helper.make_graph(
        nodes, "ones", inputs,
        [helper.make_tensor_value_info("gradients", TensorProto.FLOAT, ["N", "K", 5, 7, 7]),
         helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["N", "K", 5])],
        [numpy_helper.from_array(value, name) for name, value in constants.items()
         if shape_from_pieces or name not in ("c", "seven")],
        value_info=[*shape, helper.make_tensor_value_info("spread", TensorProto.FLOAT, ["R", 5, 7, 7]),
                    helper.make_tensor_value_info("kept", TensorProto.FLOAT, ["S", 5, 7, 7])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


@pytest.mark.parametrize("shape_from_pieces", [True, False])
def test_slice_reshape_and_mean_move_onto_the_small_factor(shape_from_pieces):
    model = _graph(shape_from_pieces)
    rng = np.random.default_rng(0)
    feed = {"g": rng.standard_normal((8, 5, 1, 1)).astype(np.float32), "rows": np.array([6], np.int64),
            **({"x": np.zeros((3, 2), np.float32)} if shape_from_pieces else {"like": np.zeros((3, 2, 5, 7, 7), np.float32)})}
    before = run_model(model, feed)
    assert sink_ones_products(model) == 2
    onnx.checker.check_model(model)
    producer = {out: node for node in model.graph.node for out in node.output}
    assert producer["gradients"].op_type == "Mul"  # the product is written once, last
    assert "ones" in producer["gradients"].input
    assert not any(node.op_type in ("Slice", "Reshape") and producer.get(node.input[0], node).op_type == "Mul"
                   for node in model.graph.node)
    assert producer["weights"].op_type == "Squeeze"
    after = run_model(model, feed)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_allclose(after[1], before[1], rtol=1e-6)
    np.testing.assert_array_equal(after[1], feed["g"][:6].reshape(3, 2, 5))


def _two_factor_graph() -> onnx.ModelProto:
    """m [R, 1, 7, 7] times w [R, 5, 1, 1], the first rows, reshaped to [N, K, 5, 7, 7], and
    averaged over the positions."""
    nodes = [helper.make_node("Mul", ["m", "w"], ["spread"]),
             helper.make_node("Slice", ["spread", "zero", "rows", "zero"], ["kept"]),
             helper.make_node("Reshape", ["kept", "target"], ["gradients"], allowzero=1),
             helper.make_node("ReduceMean", ["gradients", "spatial"], ["weights"], keepdims=0)]
    constants = {"zero": np.array([0], np.int64), "target": np.array([3, 2, 5, 7, 7], np.int64),
                 "spatial": np.array([-2, -1], np.int64)}
    graph = helper.make_graph(
        nodes, "factors",
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, ["R", 1, 7, 7]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, ["R", 5, 1, 1]),
         helper.make_tensor_value_info("rows", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("gradients", TensorProto.FLOAT, [3, 2, 5, 7, 7]),
         helper.make_tensor_value_info("weights", TensorProto.FLOAT, [3, 2, 5])],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
        value_info=[helper.make_tensor_value_info("spread", TensorProto.FLOAT, ["R", 5, 7, 7]),
                    helper.make_tensor_value_info("kept", TensorProto.FLOAT, ["S", 5, 7, 7])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def test_a_product_of_two_small_factors_is_sliced_reshaped_and_averaged_through_them():
    model = _two_factor_graph()
    rng = np.random.default_rng(1)
    feed = {"m": rng.random((8, 1, 7, 7)).astype(np.float32), "w": rng.standard_normal((8, 5, 1, 1)).astype(np.float32),
            "rows": np.array([6], np.int64)}
    before = run_model(model, feed)
    assert sink_ones_products(model) == 2
    onnx.checker.check_model(model)
    producer = {out: node for node in model.graph.node for out in node.output}
    assert [producer[name].op_type for name in producer["gradients"].input] == ["Reshape", "Reshape"]
    assert not any(node.op_type == "ReduceMean" and node.input[0] == "gradients" for node in model.graph.node)
    after = run_model(model, feed)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_allclose(after[1], before[1], rtol=1e-5, atol=1e-7)


def test_a_product_read_elsewhere_or_spread_over_other_axes_stays():
    model = _graph()
    model.graph.output.append(helper.make_tensor_value_info("spread", TensorProto.FLOAT, None))
    node = next(n for n in model.graph.node if n.op_type == "ReduceMean")
    node.input[1] = "c"  # the mean over the channels: not an axis the ones spread over
    assert sink_ones_products(model) == 0


def test_exported_gradients_and_gradcam_map_match_autograd(tmp_path):
    model: nn.Module = pooled_cnn()
    path = tmp_path / "model.onnx"
    export(model, path, ["3"], input_size=(32, 32))
    graph = onnx.load(str(path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    assert producer["gradients/3"].op_type == "Mul"  # the rewrite applied to the real export
    assert not any(node.op_type == "ReduceMean" and node.input[0] == "gradients/3" for node in graph.node)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    targets = np.array([[-1, 4], [2, -2], [0, 9]], np.int64)
    outputs = all_outputs(path, x, targets)
    _, _, acts, grads = autograd_reference(model, "3", x, targets)
    assert cosine(outputs["gradients/3"], grads) > 1 - 1e-6
    expected = GradCAM().layer_map(outputs["activations/3"], outputs["gradients/3"])
    np.testing.assert_allclose(outputs["maps/gradcam"], expected, rtol=1e-5, atol=1e-6)


def test_squeezenet_style_head_exports_its_gradient_product_once(tmp_path):
    torch.manual_seed(0)
    model = ConvHead().eval()
    path = tmp_path / "head.onnx"
    export(model, path, ["features"], input_size=(20, 20))
    graph = onnx.load(str(path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    gradient = producer["gradients/features"]
    assert gradient.op_type == "Mul" and [producer[name].op_type for name in gradient.input] == ["Reshape", "Reshape"]
    assert not any(node.op_type == "ReduceMean" and node.input[0] == "gradients/features" for node in graph.node)
    x = np.random.default_rng(0).standard_normal((2, 3, 20, 20)).astype(np.float32)
    outputs = all_outputs(path, x, np.array([[-1, 3], [-2, 7]], np.int64))
    expected = GradCAM().layer_map(outputs["activations/features"], outputs["gradients/features"])
    np.testing.assert_allclose(outputs["maps/gradcam"], expected, rtol=1e-5, atol=1e-6)
