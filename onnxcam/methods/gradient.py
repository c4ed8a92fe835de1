"""CAM methods weighted by the target layer's activations and gradients (Grad-CAM, Grad-CAM++,
XGradCAM, HiResCAM, LayerCAM, EigenGradCAM), and those from activations alone (CAM, EigenCAM).
Each gives only its weights (``CAMMethod.weights``) or its layer map.
"""
from __future__ import annotations

import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.methods.base import CAMMethod, principal_projection


def _spatial_sum(x: np.ndarray) -> np.ndarray:
    return x.sum(axis=(-2, -1))


class GradCAM(CAMMethod):
    """Grad-CAM (Selvaraju et al. 2017): channel weight = spatial mean of the gradient."""

    name = "gradcam"

    def weights(self, activations, gradients):
        # the mean as a product with a vector of 1/(h*w): one BLAS call over [N, K, C] rows
        h, w = gradients.shape[-2:]
        rows = gradients.reshape(*gradients.shape[:-2], h * w)
        return rows @ np.full(h * w, 1.0 / (h * w), rows.dtype)


class CAM(CAMMethod):
    """CAM (Zhou et al. 2016): channel weight = the linear head's weight W[c] of the class.

    For a layer feeding global average pooling and a linear layer alone, the gradient of the
    logit at every position is W[c] / (h*w), so its spatial sum is W[c] exactly.
    """

    name = "cam"

    def layers(self, info):
        return [info.cam_layer] if info.cam_layer else []

    def check(self, info):
        if not info.cam_layer:
            raise OnnxcamError("method: cam is undefined for this model: none of its target layers "
                               f"({', '.join(info.layers)}) feeds a global-average-pool -> linear "
                               "head; use gradcam")
        if info.score != "logit":
            raise OnnxcamError(f"method: cam needs a file exported with --score logit "
                               f"(this one differentiates {info.score})")

    def weights(self, activations, gradients):
        return _spatial_sum(gradients)


class GradCAMPlusPlus(CAMMethod):
    """Grad-CAM++ (Chattopadhyay et al. 2018), closed form of the exp(score) argument:
    alpha = g^2 / (2 g^2 + sum_ij(A) g^3), weight = sum_ij alpha ReLU(g)."""

    name = "gradcam++"

    def weights(self, activations, gradients):
        g2 = gradients ** 2
        sum_a = _spatial_sum(activations)[:, None, :, None, None]
        alpha = g2 / (2 * g2 + sum_a * g2 * gradients + 1e-6)
        alpha = np.where(gradients != 0, alpha, 0.0)
        return _spatial_sum(alpha * np.maximum(gradients, 0.0))


class XGradCAM(CAMMethod):
    """XGrad-CAM (Fu et al. 2020): weight = sum_ij(g A) / sum_ij(A)."""

    name = "xgradcam"

    def weights(self, activations, gradients):
        sum_a = _spatial_sum(activations)[:, None]
        return _spatial_sum(gradients * activations[:, None]) / (sum_a + 1e-7)


class HiResCAM(CAMMethod):
    """HiResCAM (Draelos & Carin 2020): the gradient itself as pixelwise weight."""

    name = "hirescam"

    def weights(self, activations, gradients):
        return gradients


class LayerCAM(CAMMethod):
    """LayerCAM (Jiang et al. 2021): ReLU(gradient) as pixelwise weight; meant for several layers."""

    name = "layercam"

    def weights(self, activations, gradients):
        return np.maximum(gradients, 0.0)


class EigenCAM(CAMMethod):
    """EigenCAM (Muhammad & Yeasin 2020): the activations' first principal component; no
    gradients, so the map is the same for every target."""

    name = "eigencam"
    uses_gradients = False

    def layer_map(self, activations, gradients):
        return np.maximum(principal_projection(activations), 0.0)[:, None]


class EigenGradCAM(CAMMethod):
    """EigenGradCAM: the first principal component of gradient x activations, per target."""

    name = "eigengradcam"

    def layer_map(self, activations, gradients):
        n, k = gradients.shape[:2]
        product = (gradients * activations[:, None]).reshape(n * k, *gradients.shape[2:])
        return np.maximum(principal_projection(product), 0.0).reshape(n, k, *gradients.shape[-2:])
