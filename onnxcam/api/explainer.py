"""The high-level API: run an explain-graph on images and turn its outputs into heatmaps."""
from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Optional, Sequence, Union

import numpy as np

from onnxcam.errors import OnnxcamError, check_count
from onnxcam.images.decode import (
    DEFAULT_MAX_PIXELS,
)
from onnxcam.images.geometry import Geometry, identity_geometry, preprocess
from onnxcam.images.sources import ImageLike, image_stream, load_images, load_one
from onnxcam.methods.base import InGraphMap, Method
from onnxcam.methods.maps import heatmaps
from onnxcam.methods.registry import get_method
from onnxcam.render.boxes import DEFAULT_RULE, MIN_AREA, Box, BoxRule, RuleLike, map_boxes, parse_rule, rule_for
from onnxcam.runtime.artifact import LOGITS, TARGET_INDICES, TARGET_PROBS, heatmap_name
from onnxcam.runtime.runner import Batch, GraphRunner, target_scores
from onnxcam.runtime.session import open_session
from onnxcam.runtime.targets import Targets, target_matrix

MethodLike = Union[str, Method]


@dataclass
class ExplainResult:
    """Explanations for N images and K targets each."""

    method: str
    classes: np.ndarray  # int64 [N, K]: the explained class of each target (ranks resolved)
    probs: np.ndarray  # float32 [N, K]: probability of those classes (softmax, or sigmoid: ArtifactInfo.head)
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
    probability: str = "softmax"  # how probabilities follow from logits: ArtifactInfo.probability
    box_rule: BoxRule = field(default_factory=lambda: parse_rule(DEFAULT_RULE))  # how maps are boxed:
    # the file's calibrated rule for this method, else the shipped one (onnxcam.render.boxes.rule_for)

    def __len__(self) -> int:
        return len(self.heatmaps)

    def label(self, i: int, k: int = 0) -> Optional[str]:
        """Name of the class explained for image ``i``, target ``k`` (None without labels)."""
        return self.labels[int(self.classes[i, k])] if self.labels else None

    def boxes(self, i: int, k: int = 0, rule: Optional[RuleLike] = None, mode: str = "largest",
              min_area: float = MIN_AREA) -> list[Box]:
        """Weakly-supervised boxes of image ``i``, target ``k``, in the image's own pixels, by
        ``rule`` (default ``box_rule``; see :func:`onnxcam.render.boxes.map_boxes`); none for a
        map flagged in ``zero_maps``."""
        if self.zero_maps[i, k]:
            return []
        return map_boxes(self.heatmaps[i][k], self.box_rule if rule is None else rule, mode, min_area)

    @classmethod
    def concatenate(cls, parts: Sequence["ExplainResult"]) -> "ExplainResult":
        """One result over the images of several results of the same method, in order."""
        first = parts[0]
        if len(parts) == 1:
            return first

        def joined(name: str) -> Optional[np.ndarray]:
            values = [getattr(part, name) for part in parts]
            return None if values[0] is None else np.concatenate(values)

        images = None if first.images is None else [image for part in parts for image in part.images]
        geometries = (None if first.geometries is None
                      else [geometry for part in parts for geometry in part.geometries])
        return cls(method=first.method, classes=joined("classes"), probs=joined("probs"),
                   logits=joined("logits"), heatmaps=[h for part in parts for h in part.heatmaps],
                   raw_maps=joined("raw_maps"), zero_maps=joined("zero_maps"), images=images,
                   labels=first.labels, attributions=joined("attributions"), geometries=geometries,
                   probability=first.probability, box_rule=first.box_rule)


@dataclass
class ExplainedBatch:
    """One batch of :meth:`Explainer.explain_iter`: the images explained, and those that failed."""

    positions: list[int]  # where each explained image stands in the input stream
    sources: list[str]  # their paths, or ``images[i]`` for arrays
    results: list[ExplainResult]  # one per method; image j of each is ``positions[j]``
    failures: list[tuple[int, str, str]]  # (position, source, one-line error) of unusable images


class _Part(NamedTuple):
    """One method's output for one batch."""

    raw_maps: np.ndarray
    heatmaps: list[np.ndarray]
    zero_maps: np.ndarray
    attributions: Optional[np.ndarray]


class Explainer:
    """An explain-graph loaded with onnxruntime, ready to explain images."""

    def __init__(self, path: str | os.PathLike, providers: Optional[Sequence[str]] = None,
                 threads: Optional[int] = None, spinning: bool = True, cache: bool = False,
                 max_pixels: Optional[int] = DEFAULT_MAX_PIXELS):
        """``providers``: onnxruntime providers (default CUDA when available, else CPU);
        ``threads``, ``spinning``, ``cache``: see :func:`onnxcam.runtime.session.open_session`;
        ``max_pixels``: the largest image (width x height) accepted, checked from a file's
        header before decoding (None: no limit)."""
        self.path = Path(path)
        self.max_pixels = max_pixels
        self.session, self.info = open_session(self.path, providers, threads, spinning, cache)
        for method, rule in self.info.box_rules.items():
            try:
                parse_rule(rule)
            except OnnxcamError as error:
                raise OnnxcamError(f"{self.path}: corrupt metadata: box_rules {method}: {error}") from None
        self._use(GraphRunner(self.session, self.info, self.path))

    def _use(self, runner: GraphRunner) -> None:
        """Run through ``runner``; what each call would otherwise work out again is kept."""
        self.runner = runner
        self._by_name: dict[str, Method] = {}  # methods asked for by name without options, checked once
        self._fetches: dict[tuple[Method, ...], list[str]] = {}  # what a run for these methods fetches
        self._identity = identity_geometry(self.info)  # of every preprocessed (normalized) input

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
        if not isinstance(method, str):
            return self._checked(method)
        name = method.strip().lower()
        in_graph = name in self.info.maps  # takes no options
        if not in_graph and any(value is not None for value in options.values()):  # not kept: one per option value
            return self._checked(get_method(name, **options))
        if name not in self._by_name:
            self._by_name[name] = (InGraphMap(name, final=heatmap_name(name) in self.runner.outputs) if in_graph
                                   else self._checked(get_method(name)))
        return self._by_name[name]

    def _checked(self, method: Method) -> Method:
        """``method`` once checked against this file."""
        method.check(self.info)
        for name in method.requires(self.info):
            if name not in self.runner.outputs:
                raise OnnxcamError(f"method: {method.name} needs the graph output '{name}', "
                                   f"which {self.path} lacks")
        return method

    def _check_normalized(self, batch: np.ndarray) -> np.ndarray:
        """Validate a preprocessed [N, 3, H, W] batch."""
        h, w = self.info.input_size
        if (isinstance(batch, np.ndarray) and batch.dtype == np.float32 and batch.shape[1:] == (3, h, w)
                and len(batch) and batch.flags.c_contiguous):
            return batch  # as the runner feeds it: nothing to check further or copy
        if (not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[1:] != (3, h, w)
                or not np.issubdtype(batch.dtype, np.floating) or len(batch) == 0):
            got = (f"shape {batch.shape}, {batch.dtype}" if isinstance(batch, np.ndarray)
                   else type(batch).__name__)
            raise OnnxcamError(f"images: with normalized=True expected a float32 [N, 3, {h}, {w}] "
                               f"array, got {got}")
        return np.ascontiguousarray(batch, np.float32)

    def _explain_batch(self, methods: Sequence[Method], batch: Batch,
                       geometries: Sequence[Geometry]) -> list[_Part]:
        """Each method's output for one batch: raw maps [N, K, h, w], per image heatmaps
        [K, H_img, W_img] and zero flags [N, K].

        Order: the raw maps are resized (cv2.INTER_LINEAR) to the network input size, then
        min-max normalized there (``methods.heatmaps``; a graph with the method's final maps did
        both), then mapped onto each original image (zero outside a crop); an image that is the
        network input keeps its maps as they are.
        """
        parts = []
        for method in methods:
            explanation = method.explain(batch)
            raw = np.asarray(explanation.maps, np.float32)
            if explanation.heatmaps is None:
                normalized, zero = heatmaps(raw, self.info.input_size)
            else:
                normalized, zero = explanation.heatmaps, explanation.zero_maps
            heat = list(normalized) if all(g is self._identity for g in geometries) else [
                maps if geometry.identity else np.clip(np.stack([geometry.to_original(m) for m in maps]), 0.0, 1.0)
                for maps, geometry in zip(normalized, geometries)]
            parts.append(_Part(raw, heat, zero, explanation.attributions))
        return parts

    def explain(self, images, method: MethodLike = "gradcam", targets: Targets = None,
                top_k: int = 1, normalized: bool = False, batch_size: int = 8,
                **options) -> ExplainResult:
        """Explain images: a path, an HxWx3 uint8 RGB array, or a list of them; with
        ``normalized=True`` a preprocessed float32 [N, 3, H, W] array (maps at H x W).

        ``method``: a name (see ``onnxcam.methods.registry.METHODS``) or a Method instance.
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
        chosen = self.prepare_methods(methods, batch_size, forward_batch_size, samples, noise)
        originals = None if normalized else load_images(images, self.max_pixels)
        tensor = self._check_normalized(images) if normalized else None
        count = len(tensor) if normalized else len(originals)
        target_rows = target_matrix(targets, top_k, count, self.num_classes)
        if normalized and count <= batch_size:  # one batch as it came: no slices, nothing to join
            return self._run_batch(chosen, tensor, [self._identity] * count, None, target_rows,
                                   forward_batch_size, progress)
        parts = []
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            if normalized:
                pictures, batch = None, tensor[start:stop]
                geometries = [self._identity] * (stop - start)
            else:
                pictures = originals[start:stop]
                batch, geometries = preprocess(pictures, self.info)
            parts.append(self._run_batch(chosen, batch, geometries, pictures, target_rows[start:stop],
                                         forward_batch_size, progress))
        return [ExplainResult.concatenate(column) for column in zip(*parts)]

    def explain_iter(self, images: Union[ImageLike, Iterable[ImageLike]],
                     methods: Union[MethodLike, Sequence[MethodLike]] = "gradcam",
                     targets: Targets = None, top_k: int = 1, batch_size: int = 8,
                     samples: Optional[int] = None, noise: Optional[float] = None,
                     forward_batch_size: int = 32, progress: bool = False) -> Iterator[ExplainedBatch]:
        """Explain a stream of images ``batch_size`` at a time, reading each batch only when it
        runs: memory stays that of one batch however long the stream. ``images``: a folder (its
        images, recursively), a path, an array, or any iterable of them. Yields one
        :class:`ExplainedBatch` per batch; an image that cannot be read or used is reported in
        its ``failures`` and the others still run. ``targets``: as for :meth:`explain`; an
        [N, K] array gives row i to the stream's image i. Other arguments as for
        :meth:`explain_methods`, which ``methods`` may name one of or several.
        """
        methods = [methods] if isinstance(methods, (str, Method)) else list(methods)
        chosen = self.prepare_methods(methods, batch_size, forward_batch_size, samples, noise)
        per_image = targets is not None and np.ndim(targets) == 2
        rows = np.asarray(targets) if per_image else target_matrix(targets, top_k, 1, self.num_classes)
        stream = enumerate(image_stream(images))
        while chunk := list(itertools.islice(stream, batch_size)):
            loaded, failures = [], []
            for position, image in chunk:
                source = str(image) if isinstance(image, (str, os.PathLike)) else f"images[{position}]"
                try:
                    loaded.append((position, source, load_one(image, position, self.max_pixels)))
                except OnnxcamError as error:
                    failures.append((position, source, str(error)))
            positions = [position for position, _, _ in loaded]
            results = []
            if loaded:
                if per_image:
                    if positions[-1] >= len(rows):
                        raise OnnxcamError(f"targets: has {len(rows)} rows, the stream more images")
                    chosen_rows = target_matrix(rows[positions], top_k, len(positions), self.num_classes)
                else:
                    chosen_rows = np.repeat(rows, len(positions), axis=0)
                pictures = [image for _, _, image in loaded]
                batch, geometries = preprocess(pictures, self.info)
                results = self._run_batch(chosen, batch, geometries, pictures, chosen_rows,
                                          forward_batch_size, progress)
            yield ExplainedBatch(positions, [source for _, source, _ in loaded], results, failures)

    def prepare_methods(self, methods: Sequence[MethodLike], batch_size: int, forward_batch_size: int,
                        samples: Optional[int], noise: Optional[float]) -> list[Method]:
        """The methods, checked against this file, after the batching options are checked."""
        check_count("batch_size", batch_size)
        check_count("forward_batch_size", forward_batch_size)
        return [self.method(m, samples=samples, noise=noise) for m in methods]

    def _fetch(self, chosen: Sequence[Method]) -> list[str]:
        """The outputs one run for ``chosen`` fetches, worked out once per set of methods."""
        key = tuple(chosen)
        fetch = self._fetches.get(key)
        if fetch is None:
            probs = [TARGET_PROBS] if TARGET_PROBS in self.runner.outputs else []  # format version 3
            fetch = list(dict.fromkeys([LOGITS, TARGET_INDICES, *probs]
                                       + [name for m in chosen for name in m.fetch(self.info)]))
            if len(self._fetches) < 64:  # methods made with options are new objects each call
                self._fetches[key] = fetch
        return fetch

    def _run_batch(self, chosen: Sequence[Method], batch: np.ndarray, geometries: list[Geometry],
                   pictures: Optional[list[np.ndarray]], target_rows: np.ndarray,
                   forward_batch_size: int, progress: bool) -> list[ExplainResult]:
        """One graph run over a preprocessed batch; one ExplainResult per method."""
        fetch = self._fetch(chosen)
        out = dict(zip(fetch, self.runner.run(fetch, batch, target_rows)))
        # the runner's float outputs are float32, the indices int64 (the format's contract)
        context = Batch(batch, out[TARGET_INDICES], out[LOGITS], out, self.runner, forward_batch_size, progress)
        probs = (out[TARGET_PROBS] if TARGET_PROBS in out
                 else target_scores(context.logits, context.classes, self.info.probability).astype(np.float32))
        return [ExplainResult(
            method=method.name, classes=context.classes, probs=probs, logits=context.logits,
            heatmaps=part.heatmaps, raw_maps=part.raw_maps, zero_maps=part.zero_maps, images=pictures,
            labels=self.labels, attributions=part.attributions, geometries=geometries,
            probability=self.info.probability, box_rule=rule_for(method.name, self.info.box_rules))
            for method, part in zip(chosen, self._explain_batch(chosen, context, geometries))]
