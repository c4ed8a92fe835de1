"""The CAM family and the input attributions against their reference implementations on the
same weights: pytorch-grad-cam (``grad-cam``) for the CAMs, Captum for the attributions.

Where a reference differs from onnxcam by design, the test says so and aligns it:

* pytorch-grad-cam min-max normalizes each map at layer resolution, resizes it with
  cv2.INTER_LINEAR, then normalizes again; onnxcam resizes, then normalizes. cv2's bilinear
  weights sum to one, so the resize commutes with the affine min-max step and both orders give
  the same map (up to the reference's 1e-7 epsilon): ``test_normalization_order_is_equivalent``.
  The maps are therefore compared as they come.
* Captum's GuidedGradCam upsamples the Grad-CAM map with ``nearest`` by default; onnxcam
  upsamples bilinearly as the Grad-CAM paper does, so the reference is run with
  ``interpolate_mode="bilinear"``.
* Captum's Saliency returns |gradient| by default; onnxcam keeps the signed gradient in
  ``attributions`` (its heatmap is the magnitude), so both forms are compared.
"""
from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest
import skimage.data

from onnxcam import Explainer, OnnxcamError
from onnxcam.methods.maps import normalize_maps
from support.torch_reference import cosine, reference_cam

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
GRADIENT_CAMS = ["gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam",
                 "eigengradcam"]
PERTURBATION_CAMS = ["scorecam", "ablationcam"]  # one forward pass per channel: slow here
MODELS = {"vgg16": ("features.29", 64), "resnet50": ("layer3", 96)}


def chelsea(size: int) -> np.ndarray:
    """skimage's cat photo as a normalized [1, 3, size, size] ImageNet input."""
    image = cv2.resize(skimage.data.chelsea(), (size, size), interpolation=cv2.INTER_AREA)
    return ((image / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32)


@pytest.fixture(scope="module")
def explainers(exported):
    """Factory: (torch model, Explainer) of MODELS[name], one session per file (vgg16's
    takes seconds to load)."""
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            layer, size = MODELS[name]
            model, path = exported(name, layer, size)
            cache[name] = model, Explainer(path)
        return cache[name]

    return get


def _check_cam(explainers, model_name: str, method: str) -> None:
    layer, size = MODELS[model_name]
    model, explainer = explainers(model_name)
    x = chelsea(size)
    result = explainer.explain(x, method=method, normalized=True)
    cls = int(result.classes[0, 0])
    expected = reference_cam(method, model, dict(model.named_modules())[layer], x, cls)
    assert not result.zero_maps[0, 0]
    assert np.abs(result.heatmaps[0][0] - expected).max() <= 1e-3


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("method", GRADIENT_CAMS)
def test_gradient_cams_match_pytorch_grad_cam(explainers, model_name, method):
    _check_cam(explainers, model_name, method)


@pytest.mark.slow
@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("method", PERTURBATION_CAMS)
def test_perturbation_cams_match_pytorch_grad_cam(explainers, model_name, method):
    """512 (vgg16) or 1024 (resnet50) extra passes each, here and in the reference; the same
    code runs on the digits CNN in the fast suite (tests/methods/test_digits.py)."""
    _check_cam(explainers, model_name, method)


def test_cam_is_undefined_for_vgg(explainers):
    with pytest.raises(OnnxcamError, match="method: cam is undefined for this model.*features.29"):
        explainers("vgg16")[1].explain(chelsea(64), method="cam", normalized=True)


# ---------------------------------------------------------------- Captum

ATTRIBUTION_MODELS = [pytest.param(("resnet18", "layer3", 64), id="resnet18"),
                      pytest.param(("resnet50", "layer3", 96), id="resnet50", marks=pytest.mark.slow),
                      pytest.param(("vgg16", "features.29", 64), id="vgg16", marks=pytest.mark.slow)]


@pytest.fixture(scope="module")
def attributors(exported):
    """Factory: (torch model, its target layer module, Explainer) for a file exported with both
    input gradients. The torch ReLUs are made out-of-place so Captum's ReLU hooks can rewrite
    their gradients (the same function)."""
    from torch import nn

    cache: dict = {}

    def get(name: str, layer: str, size: int):
        if name not in cache:
            model, path = exported(name, layer, size, guided=True, plain_input_gradient=True)
            for module in model.modules():
                if isinstance(module, nn.ReLU):
                    module.inplace = False
            cache[name] = model, dict(model.named_modules())[layer], Explainer(path)
        return cache[name]

    return get


@pytest.mark.parametrize("case", ATTRIBUTION_MODELS)
@pytest.mark.parametrize("method", ["guided-backprop", "guided-gradcam", "saliency",
                                    "integrated-gradients"])
def test_attributions_match_captum(attributors, case, method):
    import torch
    from captum import attr

    model, layer, explainer = attributors(*case)
    size = case[2]
    array = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    result = explainer.explain(array, method=method, normalized=True)
    cls, x = int(result.classes[0, 0]), torch.from_numpy(array)
    reference = {
        "guided-backprop": lambda: attr.GuidedBackprop(model).attribute(x, target=cls),
        "guided-gradcam": lambda: attr.GuidedGradCam(model, layer).attribute(
            x, target=cls, interpolate_mode="bilinear"),
        "saliency": lambda: attr.Saliency(model).attribute(x, target=cls, abs=False),
        "integrated-gradients": lambda: attr.IntegratedGradients(model).attribute(x, target=cls),
    }[method]().detach().numpy()[0]
    ours = result.attributions[0, 0]
    assert ours.shape == (3, size, size)
    assert cosine(ours, reference) >= 0.999
    if method == "saliency":  # Captum's default takes the magnitude
        default = attr.Saliency(model).attribute(x, target=cls).detach().numpy()[0]
        assert cosine(np.abs(ours), default) >= 0.999
    heat = result.heatmaps[0][0]  # the per-pixel magnitude, normalized
    assert np.abs(heat - normalize_maps(np.abs(ours).sum(axis=0))[0]).max() <= 1e-6


def test_guided_backprop_of_relu6_matches_captum_on_its_two_relus(exported):
    """ReLU6 is a rectifier too: guided backprop drops negative gradients at it. Captum's rule
    hooks nn.ReLU only, so the reference writes ReLU6(x) as ReLU(x) - ReLU(x - 6), the same
    function, whose guided gradient is relu(g) on 0 < x < 6."""
    import torch
    from captum import attr
    from torch import nn

    class TwoReLUs(nn.Module):
        def __init__(self):
            super().__init__()
            self.low, self.high = nn.ReLU(), nn.ReLU()

        def forward(self, x):
            return self.low(x) - self.high(x - 6.0)

    model, path = exported("mobilenet_v2", None, 64, guided=True, plain_input_gradient=True)
    reference_model = copy.deepcopy(model)
    for module in list(reference_model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU6):
                setattr(module, name, TwoReLUs())
    array = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)
    guided, plain = Explainer(path).explain_methods(array, ["guided-backprop", "saliency"], normalized=True)
    cls = int(guided.classes[0, 0])
    reference = attr.GuidedBackprop(reference_model).attribute(torch.from_numpy(array), target=cls)
    ours = guided.attributions[0, 0]
    assert cosine(ours, reference.detach().numpy()[0]) >= 0.999
    assert cosine(ours, plain.attributions[0, 0]) < 0.95  # not the plain gradient


def test_input_gradient_methods_need_their_export_option(explainers):
    explainer = explainers("vgg16")[1]
    for method, option in [("guided-backprop", "--guided"), ("guided-gradcam", "--guided"),
                           ("saliency", "--input-gradient"), ("smoothgrad", "--input-gradient"),
                           ("integrated-gradients", "--input-gradient")]:
        with pytest.raises(OnnxcamError, match=f"method: {method} needs .*export the model with {option}"):
            explainer.explain(chelsea(64), method=method, normalized=True)
