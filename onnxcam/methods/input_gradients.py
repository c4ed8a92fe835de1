"""Input-space attributions from the graph's input gradients.

Each method's ``attributions`` are signed, [N, K, 3, H, W] at the network input; its map is
the per-pixel magnitude, the sum over colour channels of their absolute values.
"""
from __future__ import annotations

import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.methods.base import Explanation, Method
from onnxcam.methods.gradient import GradCAM
from onnxcam.methods.maps import resize_maps
from onnxcam.runtime.artifact import (
    INPUT_GRADIENTS,
    PLAIN_INPUT_GRADIENTS,
    ArtifactInfo,
)
from onnxcam.runtime.runner import Batch

_EXPORT_OPTION = {INPUT_GRADIENTS: "--guided (guided=True)",
                  PLAIN_INPUT_GRADIENTS: "--input-gradient (plain_input_gradient=True)"}


class AttributionMethod(Method):
    """A method whose result is an input-space attribution; ``gradient`` names the graph
    output it is built from."""

    gradient = PLAIN_INPUT_GRADIENTS

    def requires(self, info: ArtifactInfo) -> list[str]:
        return list(dict.fromkeys(self.fetch(info) + [self.gradient]))

    def check(self, info: ArtifactInfo) -> None:
        has = info.guided if self.gradient == INPUT_GRADIENTS else info.plain_input_gradient
        if not has:
            raise OnnxcamError(f"method: {self.name} needs the '{self.gradient}' output: export the "
                               f"model with {_EXPORT_OPTION[self.gradient]}")

    def attribute(self, batch: Batch) -> np.ndarray:
        raise NotImplementedError

    def explain(self, batch: Batch) -> Explanation:
        attributions = self.attribute(batch).astype(np.float32)
        return Explanation(np.abs(attributions).sum(axis=2), attributions)


class GuidedBackprop(AttributionMethod):
    """Guided backpropagation (Springenberg et al. 2015): the input gradient with every ReLU
    passing back only positive gradients."""

    name = "guided-backprop"
    image_output = True
    gradient = INPUT_GRADIENTS

    def fetch(self, info):
        return [INPUT_GRADIENTS]

    def attribute(self, batch):
        return batch.outputs[INPUT_GRADIENTS]


class GuidedGradCAM(GuidedBackprop):
    """Guided Grad-CAM (Selvaraju et al. 2017): the guided-backprop gradient times the
    (unnormalized) Grad-CAM map, bilinearly upsampled to the input."""

    name = "guided-gradcam"

    def fetch(self, info):
        return [INPUT_GRADIENTS] + GradCAM().fetch(info)

    def attribute(self, batch):
        cam = resize_maps(GradCAM().explain(batch).maps, batch.info.input_size)
        return batch.outputs[INPUT_GRADIENTS] * cam[:, :, None]


class Saliency(AttributionMethod):
    """Saliency (Simonyan et al. 2014): the plain gradient of the score with respect to the input."""

    name = "saliency"

    def fetch(self, info):
        return [PLAIN_INPUT_GRADIENTS]

    def attribute(self, batch):
        return batch.outputs[PLAIN_INPUT_GRADIENTS]


class SampledAttribution(AttributionMethod):
    """Attributions averaged over ``samples`` inputs per image, run through the graph in batches."""

    def __init__(self, samples: int = 50):
        if samples < 1:
            raise OnnxcamError(f"samples: must be at least 1, got {samples}")
        self.samples = samples

    def sample(self, images: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Sample ``index[m]`` of image ``images[m]``, for every row m: [M, 3, H, W]."""
        raise NotImplementedError

    def weight(self, index: np.ndarray) -> np.ndarray:
        """Weight of each sample's gradient in the average."""
        return np.full(len(index), 1.0 / self.samples)

    def gradient_sum(self, batch: Batch) -> np.ndarray:
        """sum_s weight(s) * gradient at sample s, per image and target: [N, K, 3, H, W].

        Rows are image-major: row j is sample j % samples of image j // samples.
        """
        n, s = len(batch.inputs), self.samples

        def rows(start: int, stop: int) -> np.ndarray:
            index = np.arange(start, stop)
            return self.sample(batch.inputs[index // s], index % s)

        def targets(start: int, stop: int) -> np.ndarray:
            return batch.classes[np.arange(start, stop) // s]

        total = np.zeros(batch.classes.shape + batch.inputs.shape[1:])
        passes = batch.passes(self.name, n * s, PLAIN_INPUT_GRADIENTS, rows, targets)
        for start, stop, grads in passes:
            index = np.arange(start, stop)
            weighted = self.weight(index % s)[:, None, None, None, None] * grads
            for i in np.unique(index // s):
                total[i] += weighted[index // s == i].sum(axis=0)
        return total


class SmoothGrad(SampledAttribution):
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over ``samples`` copies of the
    input with Gaussian noise of std ``noise`` * (max - min of the input). The noise is drawn
    from ``seed`` and is the same for every image, so results do not depend on batching."""

    name = "smoothgrad"

    def __init__(self, samples: int = 50, noise: float = 0.15, seed: int = 0):
        super().__init__(samples)
        if not noise >= 0:
            raise OnnxcamError(f"noise: must be at least 0, got {noise}")
        self.noise, self.seed = noise, seed
        self._draws: dict[tuple[int, ...], np.ndarray] = {}

    def _standard_noise(self, shape: tuple[int, ...]) -> np.ndarray:
        if shape not in self._draws:
            rng = np.random.default_rng(self.seed)
            self._draws[shape] = rng.standard_normal((self.samples,) + shape).astype(np.float32)
        return self._draws[shape]

    def sample(self, images, index):
        span = images.max(axis=(1, 2, 3), keepdims=True) - images.min(axis=(1, 2, 3), keepdims=True)
        return images + self.noise * span * self._standard_noise(images.shape[1:])[index]

    def attribute(self, batch):
        return self.gradient_sum(batch)


class IntegratedGradients(SampledAttribution):
    """Integrated gradients (Sundararajan et al. 2017) from the all-zero (normalized) input:
    (x - 0) * the integral of the gradient along the straight path, by Gauss-Legendre
    quadrature with ``samples`` nodes (Captum's default rule)."""

    name = "integrated-gradients"

    def __init__(self, samples: int = 50):
        super().__init__(samples)
        nodes, weights = np.polynomial.legendre.leggauss(samples)
        self.alphas, self.steps = 0.5 * (nodes + 1.0), 0.5 * weights

    def sample(self, images, index):
        return images * self.alphas[index, None, None, None].astype(np.float32)

    def weight(self, index):
        return self.steps[index]

    def attribute(self, batch):
        return batch.inputs[:, None] * self.gradient_sum(batch)
