"""The ranking that resolves negative targets sorts only as deep as the targets ask."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from onnxcam.runtime.artifact import LAYER_INPUT, TARGET_INDICES
from onnxcam_export import export


def test_ranks_resolve_as_a_full_sort_with_k_from_the_targets(tmp_path):
    torch.manual_seed(0)
    classes = 12
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, classes)).eval()
    path = tmp_path / "ranks.onnx"
    export(model, path, ["1"], input_size=(16, 16))

    graph = onnx.load(str(path)).graph
    (topk,) = [node for node in graph.node if node.op_type == "TopK"]
    assert topk.input[1] not in {init.name for init in graph.initializer}  # K is computed

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(4, 3, 16, 16)).astype(np.float32)
    empty_layer = np.zeros((0, 8, 16, 16), np.float32)
    with torch.no_grad():
        order = np.argsort(-model(torch.from_numpy(x)).numpy(), axis=1, kind="stable")
    for targets in ([[-1]], [[-1, -2, 5]], [[3, 0]], [[-classes, -1]], [[-7, -classes, -3]]):
        rows = np.repeat(np.asarray(targets, np.int64), len(x), axis=0)
        (got,) = session.run([TARGET_INDICES], {"input": x, "targets": rows, LAYER_INPUT: empty_layer})
        ranks = np.clip(-rows - 1, 0, None)
        expected = np.where(rows >= 0, rows, np.take_along_axis(order, ranks, axis=1))
        np.testing.assert_array_equal(got, expected)

    # an empty batch (the layer-input passes of perturbation methods) still runs
    logits, heat, layer_logits = session.run(
        ["logits", "heatmaps/gradcam", "layer_logits"], {"input": np.zeros((0, 3, 16, 16), np.float32),
                                                          "targets": np.zeros((0, 1), np.int64),
                                                          LAYER_INPUT: np.zeros((3, 8, 16, 16), np.float32)})
    assert logits.shape == (0, classes) and heat.shape == (0, 1, 16, 16) and layer_logits.shape == (3, classes)
