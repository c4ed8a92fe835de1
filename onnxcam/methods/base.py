"""CAM methods: the shared base, and the methods computed from activations and gradients.

Every method turns one batch (:class:`onnxcam.runtime.runner.Batch`) into an :class:`Explanation`.
A CAM for one layer is ReLU(sum_c W_c * A_c) with activations A [N, C, h, w]; subclasses of
:class:`CAMMethod` only choose W from the activations and the gradients [N, K, C, h, w] of each
target's score: channel weights [N, K, C] or pixelwise weights [N, K, C, h, w]. Methods that
are not a weighted sum (EigenCAM) override ``layer_map``; those that weigh channels by extra
forward passes (onnxcam.methods.perturbation) override ``batch_layer_map``. Input-space methods live in
onnxcam.methods.input_gradients, and every method is registered by name in onnxcam.methods.registry.

"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from onnxcam.methods.maps import fuse_layers
from onnxcam.runtime.artifact import (
    ArtifactInfo,
    activation_name,
    gradient_name,
    heatmap_name,
    map_name,
    zero_map_name,
)
from onnxcam.runtime.runner import Batch

LayerTensors = tuple[np.ndarray, Optional[np.ndarray]]  # (activations [N,C,h,w], gradients [N,K,C,h,w])


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
