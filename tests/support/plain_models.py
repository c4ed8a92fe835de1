"""Small plain classifier files written with onnx.helper, for the black-box and reader tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_classifier(path: Path, size: int = 24, classes: int = 5, layout: str = "NCHW",
                    softmax: bool = False, batch: int | None = None, seed: int = 0) -> Path:
    """conv 3x3 (3 -> 6) -> ReLU -> conv 3x3 stride 2 -> ReLU -> global average pool -> Gemm
    (-> Softmax); input ``x`` in ``layout``, batch fixed to ``batch`` or dynamic."""
    rng = np.random.default_rng(seed)
    weights = {
        "w1": rng.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.5,
        "b1": rng.standard_normal(6).astype(np.float32) * 0.1,
        "w2": rng.standard_normal((8, 6, 3, 3)).astype(np.float32) * 0.3,
        "w3": rng.standard_normal((classes, 8)).astype(np.float32),
        "b3": rng.standard_normal(classes).astype(np.float32) * 0.1,
    }
    nodes = []
    source = "x"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2]))
        source = "x_nchw"
    nodes += [
        helper.make_node("Conv", [source, "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits" if not softmax else "z"], transB=1),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["logits"], axis=1))
    n = batch if batch else "N"
    shape = [n, 3, size, size] if layout == "NCHW" else [n, size, size, 3]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, classes])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(path))
    return path


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)
