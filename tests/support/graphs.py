"""Synthetic explain-graphs built with onnx.helper, and an independent numpy reference.

The model: Conv(3x3, stride 2, pad 1) + Relu = activations "feat" -> GlobalAveragePool ->
Flatten -> Gemm = logits. For this GAP -> linear head the gradient of logit t with respect
to the activations is exactly W[t] / (h * w) at every position, which the graph emits
as ``gradients/feat`` with ONNX ops. Negative targets (-r = r-th ranked class) are resolved
in the graph with TopK / GatherElements / Where, as the real exporter does.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxcam.runtime.artifact import ArtifactInfo

LAYER = "feat"


@dataclass
class SyntheticModel:
    """Weights and metadata of a synthetic explain-graph."""

    path: Path
    info: ArtifactInfo
    conv_w: np.ndarray  # [Ck, 3, 3, 3]
    conv_b: np.ndarray  # [Ck]
    fc_w: np.ndarray  # [C, Ck]
    fc_b: np.ndarray  # [C]

    def activations(self, x: np.ndarray) -> np.ndarray:
        """Relu(Conv(x)) in numpy, x: [N, 3, H, W] -> [N, Ck, h, w]."""
        n, _, height, width = x.shape
        h, w = (height - 1) // 2 + 1, (width - 1) // 2 + 1
        padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
        out = np.zeros((n, len(self.conv_b), h, w)) + self.conv_b[None, :, None, None]
        for dy in range(3):
            for dx in range(3):
                window = padded[:, :, dy:dy + 2 * h:2, dx:dx + 2 * w:2]
                out += np.einsum("oc,nchw->nohw", self.conv_w[:, :, dy, dx], window)
        return np.maximum(out, 0.0)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self.activations(x).mean(axis=(2, 3)) @ self.fc_w.T + self.fc_b

    def gradcam(self, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Reference Grad-CAM [N, K, h, w] straight from the definition."""
        acts = self.activations(x)
        h, w = acts.shape[2:]
        grads = self.fc_w[classes][..., None, None] / (h * w) * np.ones((1, 1, 1, h, w))
        weights = grads.mean(axis=(3, 4))  # [N, K, Ck]
        return np.maximum(np.einsum("nkc,nchw->nkhw", weights, acts), 0.0)


def feeds(session, x: np.ndarray, targets: np.ndarray) -> dict[str, np.ndarray]:
    """An explain-graph's inputs for ``x`` and ``targets``, with an empty ``layer_input``
    batch when the file has that input."""
    feed = {"input": x, "targets": targets}
    for spec in session.get_inputs():
        if spec.name == "layer_input":
            feed[spec.name] = np.zeros([0] + list(spec.shape[1:]), np.float32)
    return feed


def cpu_session(model) -> ort.InferenceSession:
    """An onnxruntime session on the CPU of a ModelProto or of a file."""
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def run_model(model, feed: dict) -> list[np.ndarray]:
    """Every output of ``model`` (a ModelProto or a file) for ``feed``, on the CPU."""
    return cpu_session(model).run(None, feed)


def all_outputs(path, x: np.ndarray, targets: np.ndarray, **inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the explain-graph at ``path`` by name, for ``x`` and ``targets`` (see
    ``feeds``), with ``inputs`` fed instead of the defaults."""
    session = cpu_session(path)
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, {**feeds(session, x, targets), **inputs})))


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def _save(graph: onnx.GraphProto, path: Path, metadata: Optional[str]) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    if metadata is not None:
        helper.set_model_props(model, {"onnxcam": metadata})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_explain_graph(path: Path, *, num_classes: int = 5, channels: int = 6,
                       input_size: tuple[int, int] = (24, 32), resize: str = "stretch",
                       resize_size: Optional[int] = None, labels: bool = True,
                       negative_class: Optional[int] = None, format_version: int = 1,
                       metadata: Optional[str] = None, seed: int = 0) -> SyntheticModel:
    """Write a synthetic explain-graph; ``negative_class`` gets all-negative head weights,
    so its Grad-CAM map is identically zero; ``metadata`` replaces the "onnxcam" JSON."""
    rng = np.random.default_rng(seed)
    conv_w = rng.normal(0, 0.5, (channels, 3, 3, 3)).astype(np.float32)
    conv_b = rng.normal(0, 0.1, channels).astype(np.float32)
    fc_w = rng.normal(0, 1.0, (num_classes, channels)).astype(np.float32)
    fc_w -= fc_w.mean(axis=1, keepdims=True)  # no class is favoured by the mean activation
    fc_b = rng.normal(0, 0.1, num_classes).astype(np.float32)
    if negative_class is not None:
        fc_w[negative_class] = -np.abs(fc_w[negative_class]) - 0.1
    height, width = input_size
    h, w = (height - 1) // 2 + 1, (width - 1) // 2 + 1
    info = ArtifactInfo(
        layers=[LAYER], input_size=(height, width), mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225], num_classes=num_classes,
        labels=[f"class_{c}" for c in range(num_classes)] if labels else None,
        resize=resize, resize_size=resize_size, source="tests/support/graphs.py", cam_layer=LAYER,
        format_version=format_version)
    acts, grads = f"activations/{LAYER}", f"gradients/{LAYER}"
    nodes = [
        _const("conv_w", conv_w), _const("conv_b", conv_b),
        _const("fc_w", fc_w), _const("fc_b", fc_b),
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"],
                         kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], [acts]),
        helper.make_node("GlobalAveragePool", [acts], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
        # targets: -r -> the r-th ranked class
        _const("num_classes", np.array([num_classes], np.int64)),
        _const("zero", np.array(0, np.int64)), _const("one", np.array(1, np.int64)),
        helper.make_node("TopK", ["logits", "num_classes"], ["ranked_values", "ranked"], axis=1),
        helper.make_node("Less", ["targets", "zero"], ["is_rank"]),
        helper.make_node("Neg", ["targets"], ["negated"]),
        helper.make_node("Sub", ["negated", "one"], ["rank"]),
        helper.make_node("Where", ["is_rank", "rank", "zero"], ["safe_rank"]),
        helper.make_node("GatherElements", ["ranked", "safe_rank"], ["by_rank"], axis=1),
        helper.make_node("Where", ["is_rank", "by_rank", "targets"], ["target_indices"]),
        # d logit_t / d activations = fc_w[t] / (h * w), broadcast to [N, K, Ck, h, w]
        _const("area", np.array(h * w, np.float32)),
        _const("spatial_axes", np.array([3, 4], np.int64)),
        _const("tail_shape", np.array([channels, h, w], np.int64)),
        helper.make_node("Gather", ["fc_w", "target_indices"], ["picked"], axis=0),
        helper.make_node("Div", ["picked", "area"], ["per_pixel"]),
        helper.make_node("Unsqueeze", ["per_pixel", "spatial_axes"], ["per_pixel_5d"]),
        helper.make_node("Shape", ["target_indices"], ["nk"]),
        helper.make_node("Concat", ["nk", "tail_shape"], ["grad_shape"], axis=0),
        helper.make_node("Expand", ["per_pixel_5d", "grad_shape"], [grads]),
    ]
    graph = helper.make_graph(
        nodes, "synthetic_explain_graph",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, height, width]),
                helper.make_tensor_value_info("targets", TensorProto.INT64, ["N", "K"])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", num_classes]),
                 helper.make_tensor_value_info("target_indices", TensorProto.INT64, ["N", "K"]),
                 helper.make_tensor_value_info(acts, TensorProto.FLOAT, ["N", channels, h, w]),
                 helper.make_tensor_value_info(grads, TensorProto.FLOAT, ["N", "K", channels, h, w])])
    _save(graph, path, info.to_json() if metadata is None else metadata)
    return SyntheticModel(Path(path), info, conv_w.astype(np.float64), conv_b.astype(np.float64),
                          fc_w.astype(np.float64), fc_b.astype(np.float64))


def make_plain_model(path: Path) -> None:
    """A valid ONNX model without onnxcam metadata."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "plain",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    _save(graph, path, None)


def op_counts(path, optimized: bool = False) -> Counter:
    """Op counts of the graph at ``path``, as written or after onnxruntime's optimization."""
    if optimized:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(path) + ".optimized.onnx"
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        path = options.optimized_model_filepath
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def store_box_rules(path: Path, rules: dict[str, str]) -> Path:
    """Give the explain-graph at ``path`` the box rules ``rules`` in its metadata, as
    ``onnxcam evaluate --calibrate-boxes`` stores them."""
    from onnxcam.runtime.metadata import write_info
    from onnxcam.runtime.session import open_session

    _, info = open_session(path, providers=["cpu"])
    info.box_rules = dict(rules)
    write_info(path, info)
    return path
