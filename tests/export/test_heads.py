"""Heads as users mean them: a one-logit (binary) classifier is explained as the two classes
``[z, -z]`` with sigmoid probabilities; a file ending in a sigmoid is multi-label (per-class
sigmoid); a file ending in a softmax or sigmoid is differentiated at the logits before it.
The numbers are checked against torch autograd of the original model and against the original
file run by onnxruntime; occlusion and RISE see the sigmoid probability, so their maps are real."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from onnxcam.api.explainer import Explainer
from onnxcam.errors import OnnxcamError
from onnxcam.runtime.runner import target_scores
from onnxcam.serve.answers import _predictions
from onnxcam_export import export
from onnxcam_export.exporter import export_plain
from onnxcam_export.onnx_file import export_onnx_file
from support.cli import one_error_line, run_cli
from support.evidence import MEAN, SIZE, STD, evidence_net, photo, square_map
from support.graphs import all_outputs
from support.torch_reference import cosine, relative_error


class Binary(nn.Module):
    """EvidenceNet as a one-logit classifier: z = logit(square) - logit(background), optionally
    followed by its sigmoid (a file whose output is the probability)."""

    def __init__(self, sigmoid: bool = False):
        super().__init__()
        self.net, self.sigmoid = evidence_net(), sigmoid

    def forward(self, x):
        logits = self.net(x)
        z = logits[:, 1:2] - logits[:, 0:1]
        return torch.sigmoid(z) if self.sigmoid else z


class MultiLabel(nn.Module):
    """A small CNN whose output is five independent sigmoids."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return torch.sigmoid(self.fc(self.features(x).mean(dim=(2, 3))))


def _inputs(n: int = 2) -> np.ndarray:
    return np.stack([preprocess_photo(photo(8 + 20 * i, 30 - 10 * i, seed=i)) for i in range(n)])


def preprocess_photo(image: np.ndarray) -> np.ndarray:
    normalized = (image.astype(np.float32) / 255 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return normalized.transpose(2, 0, 1)


def _reference_gradient(model: nn.Module, x: np.ndarray, sign: float) -> np.ndarray:
    """d(sign * z) / d(relu output) by float64 torch autograd."""
    net = model.double()
    captured = {}
    handle = net.net.relu.register_forward_hook(lambda m, a, out: captured.setdefault("relu", out))
    logits = net.net(torch.from_numpy(x).double())
    z = logits[:, 1] - logits[:, 0]
    handle.remove()
    (grad,) = torch.autograd.grad((sign * z).sum(), captured["relu"])
    model.float()
    return grad.numpy()


@pytest.mark.parametrize("sigmoid", [False, True], ids=["logit output", "sigmoid output"])
def test_one_logit_file_is_explained_as_two_classes(tmp_path, sigmoid):
    """The file's z becomes classes [z, -z]: logits equal the file's (or the logit behind its
    sigmoid), target_probs are sigmoid(z) and 1 - sigmoid(z), the gradients of class 0 and 1 are
    +- torch autograd's of z (float64), and the labels name the negation."""
    model = Binary(sigmoid).eval()
    export_plain(model, torch.randn(2, 3, SIZE, SIZE), tmp_path / "binary.onnx")
    info = export_onnx_file(tmp_path / "binary.onnx", tmp_path / "graph.onnx", mean=MEAN, std=STD,
                            labels=["square"])
    assert (info.head, info.num_classes, info.labels) == ("binary", 2, ["square", "not square"])
    assert info.extra["onnx_probabilities"] == ("sigmoid" if sigmoid else None)
    x = _inputs()
    out = all_outputs(tmp_path / "graph.onnx", x, np.array([[0, 1], [0, 1]]))
    file_out = ort.InferenceSession(str(tmp_path / "binary.onnx")).run(None, {"input": x})[0][:, 0]
    z = np.log(file_out / (1 - file_out)) if sigmoid else file_out
    assert relative_error(out["logits"], np.stack([z, -z], axis=1)) <= 1e-4
    p = 1 / (1 + np.exp(-z))
    assert np.allclose(out["target_probs"], np.stack([p, 1 - p], axis=1), atol=1e-5)
    layer = info.layers[0]
    for k, sign in ((0, 1.0), (1, -1.0)):
        reference = _reference_gradient(model, x, sign)
        got = out[f"gradients/{layer}"][:, k]
        assert got.shape == reference.shape and cosine(got, reference) >= 0.9999


def test_binary_occlusion_and_rise_see_the_sigmoid(tmp_path):
    """Occlusion and RISE of a binary graph score the sigmoid probability: the class-0 map is real
    (not flagged) and peaks on the square, the only evidence; the probability is not 1.0."""
    model = Binary().eval()
    export(model, tmp_path / "graph.onnx", ["net.relu"], input_size=(SIZE, SIZE), mean=MEAN, std=STD, labels=["square"])
    explainer = Explainer(tmp_path / "graph.onnx")
    image = photo(8, 36)
    for method in ("occlusion", "rise"):
        result = explainer.explain(image, method=method, targets=[0])
        assert not result.zero_maps[0, 0]
        heat = result.heatmaps[0][0]
        inside = heat[square_map(8, 36) > 0].mean()
        assert inside > 2 * heat[square_map(8, 36) == 0].mean(), method
        assert 0.0 < float(result.probs[0, 0]) < 1.0
        expected = target_scores(result.logits, np.array([[0]]), "sigmoid")
        assert np.allclose(result.probs, expected, atol=1e-5)


def test_binary_from_torch_source_at_224(tmp_path):
    """`resnet18(num_classes=1)` exports from torch (it failed in the head check before) at the size
    users run; the gradient at an inner layer matches float64 autograd, negated for class 1."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1).eval()
    info = export(model, tmp_path / "graph.onnx", ["layer3", "layer4"], maps=())
    assert info.head == "binary" and info.num_classes == 2
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    out = all_outputs(tmp_path / "graph.onnx", x, np.array([[0, 1]]))
    captured = {}
    net = model.double()
    handle = net.layer3.register_forward_hook(lambda m, a, o: captured.setdefault("layer3", o))
    z = net(torch.from_numpy(x).double())[:, 0]
    handle.remove()
    (grad,) = torch.autograd.grad(z.sum(), captured["layer3"])
    assert relative_error(out["logits"][:, 0], z.detach().numpy()) <= 1e-4
    assert cosine(out["gradients/layer3"][:, 0], grad.numpy()) >= 0.9999
    assert cosine(out["gradients/layer3"][:, 1], -grad.numpy()) >= 0.9999


def test_multi_label_file_gives_per_class_sigmoids(tmp_path):
    """A file ending in a sigmoid over five classes: head "sigmoid", logits are the values before
    it, target_probs its own output, --top-k ranks by probability, several classes at once; the
    service's predictions use the same rule."""
    model = MultiLabel().eval()
    export_plain(model, torch.randn(2, 3, 32, 32), tmp_path / "multi.onnx")
    info = export_onnx_file(tmp_path / "multi.onnx", tmp_path / "graph.onnx")
    assert info.head == "sigmoid" and info.num_classes == 5
    x = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    probs = ort.InferenceSession(str(tmp_path / "multi.onnx")).run(None, {"input": x})[0]
    out = all_outputs(tmp_path / "graph.onnx", x, np.array([[-1, -2, -3]] * 2))
    order = np.argsort(-probs, axis=1)[:, :3]
    assert np.array_equal(out["target_indices"], order)
    assert np.allclose(out["target_probs"], np.take_along_axis(probs, order, axis=1), atol=1e-5)
    assert np.allclose(1 / (1 + np.exp(-out["logits"])), probs, atol=1e-5)
    result = Explainer(tmp_path / "graph.onnx").explain((np.random.default_rng(2).random((40, 40, 3)) * 255)
                                                       .astype(np.uint8), method="gradcam", top_k=3)
    assert result.probability == "sigmoid" and result.heatmaps[0].shape[0] == 3
    predictions = _predictions(result.logits[0], None, result.probability)
    assert np.isclose(predictions[0]["prob"], 1 / (1 + np.exp(-result.logits[0].max())), atol=1e-5)
    assert sum(p["prob"] for p in predictions) > 1.0  # independent classes: not a distribution


def test_softmax_score_is_refused_on_a_sigmoid_head(tmp_path):
    model = Binary().eval()
    with pytest.raises(OnnxcamError, match="per-class sigmoids; differentiate the logit"):
        export(model, tmp_path / "graph.onnx", ["net.relu"], input_size=(SIZE, SIZE), score="softmax")
    assert not (tmp_path / "graph.onnx").exists()


def test_cli_head_option_and_report(tmp_path):
    """`--head sigmoid` makes a raw-logit file multi-label; the report names head and output."""
    model = MultiLabel().eval()
    model.forward = lambda x: model.fc(model.features(x).mean(dim=(2, 3)))  # raw logits
    export_plain(model, torch.randn(2, 3, 32, 32), tmp_path / "raw.onnx")
    done = run_cli("export", tmp_path / "raw.onnx", "-o", tmp_path / "graph.onnx", "--head", "sigmoid")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["head"] == "sigmoid" and report["probability_output"] is None
    bad = run_cli("export", tmp_path / "raw.onnx", "-o", tmp_path / "other.onnx", "--head", "sigmoid",
                  "--score", "softmax")
    one_error_line(bad, "differentiate the logit")
    assert not (tmp_path / "other.onnx").exists()
