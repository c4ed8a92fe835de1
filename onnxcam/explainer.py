"""The high-level API: run an explain-graph on images and turn its outputs into heatmaps."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional, Sequence, Union

import numpy as np

from onnxcam.artifact import LOGITS, TARGET_INDICES
from onnxcam.errors import OnnxcamError
from onnxcam.imageops import Geometry, identity_geometry, load_image, preprocess, to_rgb_uint8
from onnxcam.methods import InGraphMap, Method, normalize_maps, resize_maps
from onnxcam.registry import get_method
from onnxcam.runner import Batch, GraphRunner
from onnxcam.session import open_session

ImageLike = Union[str, os.PathLike, np.ndarray]
Targets = Union[None, int, Sequence[int], np.ndarray]
MethodLike = Union[str, Method]


@dataclass
class ExplainResult:
    """Explanations for N images and K targets each."""

    method: str
    classes: np.ndarray  # int64 [N, K]: the explained class of each target (ranks resolved)
    probs: np.ndarray  # float32 [N, K]: softmax probability of those classes
    logits: np.ndarray  # float32 [N, C]
    heatmaps: list[np.ndarray]  # per image float32 [K, H_img, W_img] in [0, 1]
    raw_maps: np.ndarray  # float32 [N, K, h, w]: unnormalized maps at layer resolution
    # (at the input resolution for fused layers, in-graph maps and input-space attributions)
    zero_maps: np.ndarray  # bool [N, K]: the map was constant, so its heatmap is all zero
    images: Optional[list[np.ndarray]]  # RGB uint8 originals; None for normalized input
    labels: Optional[list[str]] = None  # class names, when the model has them
    attributions: Optional[np.ndarray] = None  # float32 [N, K, 3, H, W], signed, at the network
    # input, for input-space methods (guided-backprop, saliency, ...); None for CAMs
    geometries: Optional[list[Geometry]] = None  # how each image became the network input

    def __len__(self) -> int:
        return len(self.heatmaps)

    def label(self, i: int, k: int = 0) -> Optional[str]:
        """Name of the class explained for image ``i``, target ``k`` (None without labels)."""
        return self.labels[int(self.classes[i, k])] if self.labels else None


class _Part(NamedTuple):
    """One method's output for one batch."""

    raw_maps: np.ndarray
    heatmaps: list[np.ndarray]
    zero_maps: np.ndarray
    attributions: Optional[np.ndarray]


def target_matrix(targets: Targets, top_k: int, n: int, num_classes: int) -> np.ndarray:
    """The int64 [n, K] ``targets`` graph input; negative -r means the r-th ranked class."""
    if targets is None:
        if not 1 <= top_k <= num_classes:
            raise OnnxcamError(f"top_k: must be between 1 and {num_classes}, got {top_k}")
        matrix = np.tile(-np.arange(1, top_k + 1, dtype=np.int64), (n, 1))
    else:
        try:
            array = np.asarray(targets)
        except ValueError:  # ragged nested lists
            array = np.asarray([], dtype=object)
        if array.size == 0 or not np.issubdtype(array.dtype, np.integer) or array.ndim > 2:
            raise OnnxcamError("targets: expected a class index, a list of them, or an [N, K] "
                               f"integer array (got {array.dtype} values of shape {array.shape})")
        if array.ndim < 2:
            array = np.broadcast_to(array.reshape(1, -1), (n, array.size))
        elif array.shape[0] != n:
            raise OnnxcamError(f"targets: has {array.shape[0]} rows for {n} images")
        matrix = array.astype(np.int64)
    bad = matrix[(matrix >= num_classes) | (matrix < -num_classes)]
    if bad.size:
        raise OnnxcamError(f"targets: class {int(bad[0])} out of range for a model with "
                           f"{num_classes} classes")
    return np.ascontiguousarray(matrix)


def _softmax_at(logits: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Softmax probabilities of ``classes`` [N, K] under ``logits`` [N, C]."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    return np.take_along_axis(probs, classes, axis=1).astype(np.float32)


class Explainer:
    """An explain-graph loaded with onnxruntime, ready to explain images."""

    def __init__(self, path: str | os.PathLike, providers: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None, spinning: bool = True, cache: bool = False):
        """``providers``: onnxruntime providers (default CUDA when available, else CPU);
        ``threads``, ``spinning``, ``cache``: see :func:`onnxcam.session.open_session`."""
        self.path = Path(path)
        self.session, self.info = open_session(self.path, providers, threads, spinning, cache)
        self.runner = GraphRunner(self.session, self.info, self.path)

    @property
    def labels(self) -> Optional[list[str]]:
        """Class names stored in the model, or None."""
        return self.info.labels

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def method(self, method: MethodLike, **options) -> Method:
        """A method by name (with options such as ``samples``) or as given, checked against
        this file: OnnxcamError when the file cannot serve it. A name whose map the file
        computes in the graph (``export(maps=...)``) fetches that map instead."""
        if isinstance(method, str) and method.strip().lower() in self.info.maps:
            return InGraphMap(method.strip().lower())
        method = get_method(method, **options) if isinstance(method, str) else method
        method.check(self.info)
        for name in method.requires(self.info):
            if name not in self.runner.outputs:
                raise OnnxcamError(f"method: {method.name} needs the graph output '{name}', "
                                   f"which {self.path} lacks")
        return method

    def _load(self, images: Union[ImageLike, Sequence[ImageLike]]) -> list[np.ndarray]:
        """Paths and arrays to RGB uint8 arrays."""
        single = isinstance(images, (str, os.PathLike))
        if single or (isinstance(images, np.ndarray) and images.ndim < 4):
            images = [images]
        elif isinstance(images, np.ndarray):
            raise OnnxcamError("images: got a 4-D array; pass normalized=True for a preprocessed "
                               "[N, 3, H, W] batch, or a list of HxWx3 uint8 images")
        images = list(images)
        if not images:
            raise OnnxcamError("images: nothing to explain")
        return [load_image(image) if isinstance(image, (str, os.PathLike))
                else to_rgb_uint8(image, f"images[{i}]") for i, image in enumerate(images)]

    def _check_normalized(self, batch: np.ndarray) -> np.ndarray:
        """Validate a preprocessed [N, 3, H, W] batch."""
        h, w = self.info.input_size
        if (not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1:] != (3, h, w)
                or not np.issubdtype(batch.dtype, np.floating) or len(batch) == 0):
            got = (f"shape {batch.shape}, {batch.dtype}" if isinstance(batch, np.ndarray)
                   else type(batch).__name__)
            raise OnnxcamError(f"images: with normalized=True expected a float32 [N, 3, {h}, {w}] "
                               f"array, got {got}")
        return np.ascontiguousarray(batch, np.float32)

    def _heatmaps(self, raw: np.ndarray, geometries: Sequence[Geometry]) -> tuple[list[np.ndarray], np.ndarray]:
        """Raw maps [N, K, h, w] -> per image heatmaps [K, H_img, W_img] and zero flags [N, K].

        Order: the raw maps are resized (cv2.INTER_LINEAR) to the network input size, then
        min-max normalized there, all at once, then mapped onto each original image (zero
        outside a crop); an image that is the network input keeps its maps as they are.
        """
        normalized, zero = normalize_maps(resize_maps(raw, self.info.input_size))
        heat = [maps if geometry.identity else np.clip(np.stack([geometry.to_original(m) for m in maps]), 0.0, 1.0)
                for maps, geometry in zip(normalized, geometries)]
        return heat, zero

    def _explain_batch(self, methods: Sequence[Method], batch: Batch,
                       geometries: Sequence[Geometry]) -> list[_Part]:
        """Each method's output for one batch."""
        parts = []
        for method in methods:
            explanation = method.explain(batch)
            raw = np.asarray(explanation.maps, np.float32)
            heat, zero = self._heatmaps(raw, geometries)
            parts.append(_Part(raw, heat, zero, explanation.attributions))
        return parts

    def explain(self, images, method: MethodLike = "gradcam", targets: Targets = None,
                top_k: int = 1, normalized: bool = False, batch_size: int = 8,
                **options) -> ExplainResult:
        """Explain images: a path, an HxWx3 uint8 RGB array, or a list of them; with
        ``normalized=True`` a preprocessed float32 [N, 3, H, W] array (maps at H x W).

        ``method``: a name (see ``onnxcam.registry.METHODS``) or a Method instance.
        ``targets``: None for the ``top_k`` ranked classes, an int for one class for every
        image, a list of ints (one per target column), or an [N, K] array; negative -r means
        the r-th ranked class. Images are run ``batch_size`` at a time. ``options``: see
        :meth:`explain_methods`.
        """
        return self.explain_methods(images, [method], targets, top_k, normalized, batch_size,
                                    **options)[0]

    def explain_methods(self, images, methods: Sequence[MethodLike], targets: Targets = None,
                        top_k: int = 1, normalized: bool = False, batch_size: int = 8,
                        samples: Optional[int] = None, noise: Optional[float] = None,
                        forward_batch_size: int = 32, progress: bool = False) -> list[ExplainResult]:
        """Explain images with several methods, sharing one graph run per batch; one
        ExplainResult per method, in order (arguments as for :meth:`explain`).

        ``samples`` (smoothgrad's noisy copies, integrated-gradients' path points) and
        ``noise`` (smoothgrad's std as a fraction of the input's range) go to the methods that
        take them. Extra forward passes (scorecam, ablationcam, smoothgrad,
        integrated-gradients) run ``forward_batch_size`` rows at a time, with a progress bar
        on a terminal's stderr when ``progress``.
        """
        chosen = [self.method(m, samples=samples, noise=noise) for m in methods]
        if batch_size < 1:
            raise OnnxcamError(f"batch_size: must be at least 1, got {batch_size}")
        if forward_batch_size < 1:
            raise OnnxcamError(f"forward_batch_size: must be at least 1, got {forward_batch_size}")
        originals = None if normalized else self._load(images)
        tensor = self._check_normalized(images) if normalized else None
        count = len(tensor) if normalized else len(originals)
        target_rows = target_matrix(targets, top_k, count, self.num_classes)
        fetch = list(dict.fromkeys([LOGITS, TARGET_INDICES]
                                   + [name for m in chosen for name in m.fetch(self.info)]))
        classes, logits, geometries, parts = [], [], [], []
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            if normalized:
                batch, shapes = tensor[start:stop], [identity_geometry(self.info)] * (stop - start)
            else:
                batch, shapes = preprocess(originals[start:stop], self.info)
            out = dict(zip(fetch, self.runner.run(fetch, batch, target_rows[start:stop])))
            context = Batch(batch, out[TARGET_INDICES].astype(np.int64), out[LOGITS].astype(np.float32),
                            out, self.runner, forward_batch_size, progress)
            classes.append(context.classes)
            logits.append(context.logits)
            geometries += shapes
            parts.append(self._explain_batch(chosen, context, shapes))
        classes, logits = np.concatenate(classes), np.concatenate(logits)
        probs = _softmax_at(logits, classes)
        results = []
        for m, method in enumerate(chosen):
            mine = [p[m] for p in parts]
            attributions = (None if mine[0].attributions is None
                            else np.concatenate([p.attributions for p in mine]))
            results.append(ExplainResult(
                method=method.name, classes=classes, probs=probs, logits=logits,
                heatmaps=[h for p in mine for h in p.heatmaps],
                raw_maps=np.concatenate([p.raw_maps for p in mine]),
                zero_maps=np.concatenate([p.zero_maps for p in mine]), images=originals,
                labels=self.labels, attributions=attributions, geometries=geometries))
        return results
