"""`export(precision="float16")` / `onnxcam export --fp16`: half the file, float16 contract,
and gradients that still agree with float32 torch autograd."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import skimage.data

from onnxcam import Explainer
from onnxcam.runtime.session import open_session
from support.torch_reference import autograd_reference, cosine, relative_error


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """resnet18 (random init) at an inner layer with the guided input gradient (whose
    max-pool backward scatter-adds), exported in float32 and in float16."""
    import torch
    import torchvision

    from onnxcam_export import export

    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    folder = tmp_path_factory.mktemp("fp16")
    for precision in ("float32", "float16"):
        export(model, folder / f"{precision}.onnx", ["layer3"], input_size=(64, 64),
               precision=precision, maps=["gradcam"], guided=True)
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is untouched
    return model, folder / "float32.onnx", folder / "float16.onnx"


def test_float16_file_is_half_size_with_float16_contract(pair):
    _, full, half = pair
    graph = onnx.load(str(half))
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    half_bytes = sum(len(t.raw_data) for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    full_bytes = sum(len(t.raw_data) for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    assert full_bytes <= 0.01 * half_bytes  # float32 only in scalars and small constants
    assert 0.45 <= half.stat().st_size / full.stat().st_size <= 0.55
    _, info = open_session(half)
    assert info.precision == "float16"


def test_float16_gradients_match_float32_autograd(pair):
    model, _, half = pair
    session, _ = open_session(half)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    targets = np.array([[-1, 3], [-2, 7]])
    feeds = {"input": x.astype(np.float16), "targets": targets,
             "layer_input": np.zeros((0, 256, 4, 4), np.float16)}
    logits, grads = session.run(["logits", "gradients/layer3"], feeds)
    ref_logits, _, _, ref_grads = autograd_reference(model, "layer3", x, targets)
    assert relative_error(logits.astype(np.float32), ref_logits) <= 1e-2
    for i in range(2):
        for j in range(2):
            assert cosine(grads[i, j].astype(np.float32), ref_grads[i, j]) >= 0.999


def test_explainer_runs_float16_file(pair):
    _, full, half = pair
    image = skimage.data.chelsea()
    a = Explainer(full).explain(image, "gradcam", targets=[5])
    b = Explainer(half).explain(image, "gradcam", targets=[5])
    assert b.raw_maps.dtype == np.float32 and np.isfinite(b.heatmaps[0]).all()
    assert not b.zero_maps.any()
    assert np.corrcoef(a.heatmaps[0].ravel(), b.heatmaps[0].ravel())[0, 1] >= 0.99


def test_float16_guided_gradient_matches_float32_file(pair):
    _, full, half = pair
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    got = {}
    for path, dtype in ((full, np.float32), (half, np.float16)):
        session, _ = open_session(path)
        feeds = {"input": x.astype(dtype), "targets": np.array([[4]]),
                 "layer_input": np.zeros((0, 256, 4, 4), dtype)}
        got[dtype] = session.run(["input_gradients"], feeds)[0].astype(np.float32)
    assert np.abs(got[np.float32]).max() > 0
    assert cosine(got[np.float16], got[np.float32]) >= 0.99
