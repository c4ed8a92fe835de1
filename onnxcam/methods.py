"""CAM methods: a base class that turns (activations, gradients) into maps, and the registry.

A CAM for one layer is ReLU(sum_c W_c * A_c) with activations A [N, C, h, w]. Subclasses only
choose W from the activations and the gradients [N, K, C, h, w] of each target's score:
channel weights of shape [N, K, C, 1, 1] (Grad-CAM) or pixelwise weights [N, K, C, h, w]
(HiResCAM, LayerCAM). Methods that are not a weighted sum (EigenCAM) override ``layer_map``.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from onnxcam.errors import OnnxcamError

LayerTensors = tuple[np.ndarray, np.ndarray]  # (activations [N,C,h,w], gradients [N,K,C,h,w])


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize maps [..., h, w] to [..., H, W] (cv2.INTER_LINEAR, half-pixel centres)."""
    maps = np.asarray(maps, np.float32)
    height, width = size
    if maps.shape[-2:] == (height, width):
        return maps.copy()
    flat = maps.reshape(-1, *maps.shape[-2:])
    out = np.empty((flat.shape[0], height, width), np.float32)
    for i, m in enumerate(flat):
        out[i] = cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR)
    return out.reshape(*maps.shape[:-2], height, width)


def normalize_maps(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min-max normalize each map [..., h, w] to [0, 1]; returns (normalized, is_zero).

    A map is flagged ``is_zero`` and left all zero when it is constant: its span
    max - min is at most ``rtol * max(|min|, |max|)``, where rtol is 1e-12, or a few
    float32 ulps for float32 input (so rounding noise is not stretched to [0, 1]), and
    when it holds NaN or infinity. The result never contains NaN.
    """
    maps = np.asarray(maps)
    dtype = maps.dtype if np.issubdtype(maps.dtype, np.floating) else np.float64
    rtol = max(1e-12, 32 * float(np.finfo(dtype).eps))
    values = maps.astype(np.float64)
    flat = values.reshape(*values.shape[:-2], -1)
    finite = np.isfinite(flat).all(axis=-1)
    with np.errstate(invalid="ignore"):
        low = np.where(finite, flat.min(axis=-1, initial=np.inf), 0.0)
        high = np.where(finite, flat.max(axis=-1, initial=-np.inf), 0.0)
        zero = ~finite | (high - low <= rtol * np.maximum(np.abs(low), np.abs(high)))
        span = np.where(zero, 1.0, high - low)
        out = (values - low[..., None, None]) / span[..., None, None]
    out[zero] = 0.0
    return np.clip(out, 0.0, 1.0).astype(np.float32), zero


class CAMMethod:
    """Computes raw CAMs [N, K, h, w]; subclasses supply ``weights``."""

    name = ""

    def weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        """Weights broadcastable to the gradients: [N, K, C, 1, 1] or pixelwise [N, K, C, h, w]."""
        raise NotImplementedError

    def layer_map(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        """ReLU(sum_c W_c * A_c) for every (image, target): [N, K, h, w]."""
        weights = np.asarray(self.weights(activations, gradients), np.float32)
        if weights.shape[-2:] == (1, 1):
            cam = np.einsum("nkc,nchw->nkhw", weights[..., 0, 0], activations)
        else:
            cam = (weights * activations[:, None]).sum(axis=2)
        return np.maximum(cam, 0.0)

    def __call__(self, layers: Sequence[LayerTensors]) -> np.ndarray:
        """Raw maps [N, K, h, w] for one layer; several layers are each min-max normalized
        (their scales are not comparable), resized to the largest layer's size and max-fused."""
        maps = [self.layer_map(np.asarray(a, np.float32), np.asarray(g, np.float32))
                for a, g in layers]
        if len(maps) == 1:
            return maps[0]
        size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        return np.maximum.reduce([resize_maps(normalize_maps(m)[0], size) for m in maps])


class GradCAM(CAMMethod):
    """Grad-CAM (Selvaraju et al. 2017): channel weight = spatial mean of the gradient."""

    name = "gradcam"

    def weights(self, activations: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        return gradients.mean(axis=(-2, -1), keepdims=True)


METHODS: dict[str, type[CAMMethod]] = {cls.name: cls for cls in (GradCAM,)}


def get_method(name: str) -> CAMMethod:
    """An instance of the CAM method registered as ``name`` (case-insensitive)."""
    cls = METHODS.get(name.strip().lower())
    if cls is None:
        raise OnnxcamError(f"method: unknown CAM method {name!r} (choose from: {', '.join(METHODS)})")
    return cls()
