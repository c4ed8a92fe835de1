"""The explain-graph against torch autograd on the same weights."""
from __future__ import annotations

import numpy as np
import pytest

from onnxcam import Explainer
from onnxcam.runtime.artifact import activation_name, gradient_name
from support.graphs import feeds
from support.torch_models import digits_cnn
from support.torch_reference import autograd_reference, cosine, gradcam_reference, relative_error

TARGET_SETS = {1: np.array([[-1]]), 3: np.array([[-1, 5, -2]])}


def _inputs(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(n).standard_normal((n, 3, size, size)).astype(np.float32)


def _check(model, path, layer: str, x: np.ndarray, k: int) -> None:
    targets = np.repeat(TARGET_SETS[k], len(x), axis=0)
    logits, classes, acts, grads = autograd_reference(model, layer, x, targets)
    explainer = Explainer(path)
    out = dict(zip(
        ["logits", "classes", "acts", "grads"],
        explainer.session.run(["logits", "target_indices", activation_name(layer), gradient_name(layer)],
                              feeds(explainer.session, x, targets))))
    assert relative_error(out["logits"], logits) <= 1e-4
    assert np.array_equal(out["classes"], classes)
    assert relative_error(out["acts"], acts) <= 1e-4
    assert out["grads"].shape == grads.shape
    for i in range(len(x)):
        for j in range(k):
            assert cosine(out["grads"][i, j], grads[i, j]) >= 0.9999, (i, j)
    result = explainer.explain(x, targets=targets, normalized=True)
    expected = gradcam_reference(acts, grads, x.shape[2:])
    assert np.array_equal(result.classes, classes)
    heat = np.stack(result.heatmaps)
    assert heat.shape == expected.shape
    assert np.abs(heat - expected).max() <= 1e-3
    assert not result.zero_maps.any()


@pytest.mark.parametrize("layer", ["layer3", "layer4"])
@pytest.mark.parametrize("n,k", [(1, 1), (1, 3), (4, 1), (4, 3)])
def test_resnet50(exported, layer, n, k):
    model, path = exported("resnet50", layer, 96)
    _check(model, path, layer, _inputs(n, 96), k)


@pytest.mark.parametrize("n,k", [(1, 1), (4, 3)])
def test_vgg16_last_conv_block(exported, n, k):
    model, path = exported("vgg16", "features.29", 64)
    _check(model, path, "features.29", _inputs(n, 64), k)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    from onnxcam_export import export

    model, x, accuracy = digits_cnn()
    path = tmp_path_factory.mktemp("digits") / "digits.onnx"
    info = export(model, path, ["relu2"], input_size=(8, 8), mean=(0.5,) * 3, std=(0.5,) * 3,
                  labels=[str(i) for i in range(10)])
    return model, path, x, accuracy, info


def test_digits_cnn_learns(digits):
    assert digits[3] > 0.9


@pytest.mark.parametrize("n,k", [(1, 1), (1, 3), (4, 1), (4, 3)])
def test_digits_cnn(digits, n, k):
    model, path, x, _, _ = digits
    _check(model, path, "relu2", x[:n], k)


def test_one_file_serves_all_batch_and_target_sizes(exported):
    """K targets in one run equal K single-target runs (the backbone is not re-traced per K)."""
    model, path = exported("resnet50", "layer3", 96)
    explainer = Explainer(path)
    x = _inputs(4, 96)
    joint = explainer.explain(x, targets=[3, 7, 11], normalized=True)
    for j, cls in enumerate([3, 7, 11]):
        single = explainer.explain(x, targets=cls, normalized=True)
        assert np.abs(np.stack(joint.heatmaps)[:, j] - np.stack(single.heatmaps)[:, 0]).max() <= 1e-5


def test_layer_input_rows_run_the_rest_of_the_network(exported):
    """``layer_input`` rows fed after the first target layer give the model's own logits."""
    import torch

    model, path = exported("resnet50", "layer3", 96)
    x = _inputs(2, 96)
    with torch.no_grad():
        acts = {}
        handle = model.layer3.register_forward_hook(lambda m, a, out: acts.setdefault("a", out))
        logits = model(torch.from_numpy(x)).numpy()
        handle.remove()
    explainer = Explainer(path)
    assert explainer.info.layer_input == "layer3"
    feed = feeds(explainer.session, x[:1], np.array([[-1]]))
    feed["layer_input"] = acts["a"].numpy()
    (layer_logits,) = explainer.session.run(["layer_logits"], feed)
    assert relative_error(layer_logits, logits) <= 1e-4
