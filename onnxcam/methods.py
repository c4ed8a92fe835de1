"""CAM methods: the shared base, and the methods computed from activations and gradients.

Every method turns one batch (:class:`onnxcam.runner.Batch`) into an :class:`Explanation`.
A CAM for one layer is ReLU(sum_c W_c * A_c) with activations A [N, C, h, w]; subclasses of
:class:`CAMMethod` only choose W from the activations and the gradients [N, K, C, h, w] of each
target's score: channel weights [N, K, C] or pixelwise weights [N, K, C, h, w]. Methods that
are not a weighted sum (EigenCAM) override ``layer_map``; those that weigh channels by extra
forward passes (onnxcam.perturbation) override ``batch_layer_map``. Input-space methods live in
onnxcam.attributions, and every method is registered by name in onnxcam.registry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from onnxcam.artifact import ArtifactInfo, activation_name, gradient_name, heatmap_name, map_name, zero_map_name
from onnxcam.errors import OnnxcamError
from onnxcam.runner import Batch

RTOL32 = 32 * float(np.finfo(np.float32).eps)  # a float32 map's span this small beside its values is rounding

LayerTensors = tuple[np.ndarray, Optional[np.ndarray]]  # (activations [N,C,h,w], gradients [N,K,C,h,w])


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize maps [..., h, w] to [..., H, W] (cv2.INTER_LINEAR, half-pixel
    centres), in float32; maps already of that size are returned as they are."""
    maps = np.asarray(maps, np.float32)
    height, width = size
    if maps.shape[-2:] == (height, width):
        return maps
    flat = maps.reshape(-1, *maps.shape[-2:])
    out = np.empty((flat.shape[0], height, width), np.float32)
    for small, target in zip(flat, out):  # one call per map: OpenCV's many-channel resize is slower
        _resize_into(small, target)
    return out.reshape(*maps.shape[:-2], height, width)


def _resize_into(small: np.ndarray, target: np.ndarray) -> None:
    """One float32 map [h, w] bilinearly resized into ``target`` [H, W]."""
    cv2.resize(small, (target.shape[1], target.shape[0]), dst=target, interpolation=cv2.INTER_LINEAR)


def normalize_maps(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min-max normalize each map [..., h, w] to [0, 1] in float32; returns (normalized, is_zero).

    A map is flagged ``is_zero`` and left all zero when it is constant: its span
    max - min is at most ``rtol * max(|min|, |max|)``, where rtol is 1e-12, or a few
    float32 ulps for float32 input (so rounding noise is not stretched to [0, 1]), and
    when it holds NaN or infinity. The result never contains NaN.
    """
    maps = np.asarray(maps)
    dtype = maps.dtype if np.issubdtype(maps.dtype, np.floating) else np.float64
    rtol = max(1e-12, 32 * float(np.finfo(dtype).eps))
    values = maps if maps.dtype == np.float32 else maps.astype(np.float64)
    flat = values.reshape(*values.shape[:-2], -1)
    # NaN and infinity reach the extremes, so finite extremes mean a finite map
    low = flat.min(axis=-1, initial=np.inf).astype(np.float64)
    high = flat.max(axis=-1, initial=-np.inf).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        finite = np.isfinite(low) & np.isfinite(high)
        zero = ~finite | (high - low <= rtol * np.maximum(np.abs(low), np.abs(high)))
        span = np.where(zero, 1.0, high - low).astype(values.dtype)[..., None, None]
        out = values - low.astype(values.dtype)[..., None, None]
        out /= span
    out = out.astype(np.float32, copy=False)
    out[zero] = 0.0
    return np.clip(out, 0.0, 1.0, out=out), zero


def heatmaps(maps: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``normalize_maps(resize_maps(maps, size))`` of float32 maps [..., h, w], the same
    numbers in one pass of OpenCV calls per map, in place (a range check of the small map, a
    resize, a min-max scan, a subtraction and a division): what a small model's explain spends
    after its graph run, where every NumPy call over the whole stack costs."""
    maps = np.ascontiguousarray(maps, np.float32)
    height, width = size
    flat = maps.reshape(-1, *maps.shape[-2:])
    out = np.empty((flat.shape[0], height, width), np.float32)
    zero = np.zeros(flat.shape[0], bool)
    same = flat.shape[1:] == (height, width)
    for i, (small, target) in enumerate(zip(flat, out)):
        if cv2.checkRange(small)[0]:  # finite, so finite after the resize (barring overflow)
            if same:
                target[...] = small
            else:
                _resize_into(small, target)
            low, high = cv2.minMaxLoc(target)[:2]
            if math.isfinite(low) and math.isfinite(high) and high - low > RTOL32 * max(abs(low), abs(high)):
                # as normalize_maps: v - low <= high - low in float32, so the quotient is in [0, 1]
                np.subtract(target, np.float32(low), out=target)
                np.divide(target, np.float32(high - low), out=target)
                continue
        zero[i] = True  # constant, or NaN or infinity in it: all zero
        target.fill(0.0)
    return out.reshape(*maps.shape[:-2], height, width), zero.reshape(maps.shape[:-2])


def fuse_layers(maps: Sequence[np.ndarray], size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """One layer's maps [N, K, h, w] as they are; several layers as in pytorch-grad-cam: each
    min-max normalized at its own resolution (their scales are not comparable), resized to
    ``size`` (default: the largest layer's) and averaged."""
    if len(maps) == 1:
        return maps[0]
    size = size or max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
    return np.mean([resize_maps(normalize_maps(m)[0], size) for m in maps], axis=0)


def weighted_sum(weights: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """ReLU(sum_c W_c A_c) [N, K, h, w] for channel [N, K, C] or pixelwise [N, K, C, h, w] weights."""
    weights = np.asarray(weights, np.float32)
    if weights.ndim == 3:  # a batched matrix product [N, K, C] x [N, C, h*w]
        n, c, h, w = activations.shape
        cam = np.matmul(weights, activations.reshape(n, c, h * w)).reshape(n, -1, h, w)
    else:
        cam = (weights * activations[:, None]).sum(axis=2)
    return np.maximum(cam, 0.0)


def principal_projection(matrices: np.ndarray) -> np.ndarray:
    """Each [C, h, w] of a stack [B, C, h, w] projected on its first principal component
    over the h*w positions: [B, h, w]. The SVD's own sign is kept (as pytorch-grad-cam's
    ``get_2d_projection`` keeps it), so a map may come out negative and ReLU to zero."""
    b, c, h, w = matrices.shape
    rows = np.nan_to_num(matrices.astype(np.float32), nan=0.0).reshape(b, c, h * w).transpose(0, 2, 1)
    rows = rows - rows.mean(axis=1, keepdims=True)
    _, _, vt = np.linalg.svd(rows, full_matrices=False)
    return (rows @ vt[:, 0, :, None]).reshape(b, h, w)


@dataclass
class Explanation:
    """A method's output for one batch."""

    maps: np.ndarray  # float32 [N, K, h, w]: unnormalized, at layer (or input) resolution
    attributions: Optional[np.ndarray] = None  # float32 [N, K, 3, H, W]: input-space attribution
    heatmaps: Optional[np.ndarray] = None  # float32 [N, K, H, W]: final maps, when the graph made them
    zero_maps: Optional[np.ndarray] = None  # bool [N, K]: their all-zero flags


class Method:
    """An explanation method: what it needs from the graph, and how it explains a batch."""

    name = ""
    image_output = False  # its result is best shown as an image of ``attributions``

    def fetch(self, info: ArtifactInfo) -> list[str]:
        """Graph outputs the main pass must return."""
        return []

    def requires(self, info: ArtifactInfo) -> list[str]:
        """Graph outputs the file must have (the main pass's and the extra passes')."""
        return self.fetch(info)

    def check(self, info: ArtifactInfo) -> None:
        """Raise OnnxcamError when the file's model cannot be explained this way."""

    def explain(self, batch: Batch) -> Explanation:
        raise NotImplementedError


class CAMMethod(Method):
    """Maps from target-layer activations: ReLU(sum_c W_c A_c); subclasses supply ``weights``."""

    uses_gradients = True

    def layers(self, info: ArtifactInfo) -> list[str]:
        """The target layers this method reads."""
        return list(info.layers)

    def fetch(self, info: ArtifactInfo) -> list[str]:
        names = [activation_name(layer) for layer in self.layers(info)]
        if self.uses_gradients:
            names += [gradient_name(layer) for layer in self.layers(info)]
        return names

    def weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        """Channel weights [N, K, C] or pixelwise weights [N, K, C, h, w]."""
        raise NotImplementedError

    def layer_map(self, activations: np.ndarray, gradients: Optional[np.ndarray]) -> np.ndarray:
        """Raw maps [N, K, h, w] (or [N, 1, h, w] when the same for every target)."""
        return weighted_sum(self.weights(activations, gradients), activations)

    def batch_layer_map(self, batch: Batch, layer: str) -> np.ndarray:
        """``layer_map`` on one layer's tensors from the main pass."""
        gradients = batch.outputs[gradient_name(layer)] if self.uses_gradients else None
        return self.layer_map(batch.outputs[activation_name(layer)], gradients)

    def __call__(self, layers: Sequence[LayerTensors],
                 size: Optional[tuple[int, int]] = None) -> np.ndarray:
        """Raw maps [N, K, h, w] from (activations, gradients) per layer; several layers are
        fused (see ``fuse_layers``)."""
        return fuse_layers([self.layer_map(np.asarray(a, np.float32),
                                           None if g is None else np.asarray(g, np.float32))
                            for a, g in layers], size)

    def explain(self, batch: Batch) -> Explanation:
        shape = batch.classes.shape
        maps = [self.batch_layer_map(batch, layer) for layer in self.layers(batch.info)]
        maps = [m if m.shape[:2] == shape else np.broadcast_to(m, shape + m.shape[2:]).copy() for m in maps]
        return Explanation(np.asarray(fuse_layers(maps, batch.info.input_size), np.float32))


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


class InGraphMap(Method):
    """A CAM method's map as the graph computed it (a file exported with ``maps=``): the
    session returns the raw maps instead of activations and gradients, and from format
    version 3 on the final heatmaps at the input size and their all-zero flags too."""

    def __init__(self, name: str, final: bool):
        self.name = name
        self.final = final  # the file has the heatmaps and flags (format version 3)

    def fetch(self, info: ArtifactInfo) -> list[str]:
        finals = [heatmap_name(self.name), zero_map_name(self.name)] if self.final else []
        return [map_name(self.name), *finals]

    def explain(self, batch: Batch) -> Explanation:
        raw = batch.outputs[map_name(self.name)]  # float32, as the runner returns every float output
        if not self.final:
            return Explanation(raw)
        return Explanation(raw, heatmaps=batch.outputs[heatmap_name(self.name)],
                           zero_maps=batch.outputs[zero_map_name(self.name)])
