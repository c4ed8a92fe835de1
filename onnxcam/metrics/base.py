"""What every metric shares: the images as the network sees them (:class:`Scene`), one method's
maps over them (:class:`Maps`), the per-image values a metric returns (:class:`MetricResult`),
and the base class :class:`Metric`.

Conventions, for every metric:

- *probability*: the target class's probability: the softmax over all of the model's logits, or
  the class's sigmoid for a multi-label or one-logit head (``ArtifactInfo.head``)
  (computed in float64 from the ``logits`` output), whatever score the file differentiates;
- *image*: as the network sees it, fitted to the input size (resized, cropped) and in pixel
  space [0, 1], before the mean/std normalization; perturbations happen there and the result is
  normalized like any input;
- *map*: given over the original image in [0, 1] (as ``ExplainResult.heatmaps``) and brought to
  the network's frame the way the image was (:meth:`Geometry.to_input`);
- *pixel order*: by map value, most relevant first; equal values in row-major order, the
  earlier pixel first (in both directions: least relevant first also takes the earlier pixel
  first); a fraction f of the H x W pixels is round(f * H * W) of them;
- *flagged maps*: a map flagged in ``zero_maps``, or all zero, is not scored: its values are
  NaN, it is left out of the means and counted in ``MetricResult.zero_maps``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Optional, Sequence

import cv2
import numpy as np

from onnxcam.errors import OnnxcamError, check_count
from onnxcam.images.geometry import Geometry, fit_pixels, input_transform, normalize
from onnxcam.images.sources import image_stream, load_images
from onnxcam.render.boxes import DEFAULT_RULE, BoxRule, RuleLike, parse_rule
from onnxcam.runtime.artifact import ArtifactInfo
from onnxcam.runtime.runner import Batch, target_scores
from onnxcam.runtime.targets import resolve_ranks, target_matrix

if TYPE_CHECKING:
    from onnxcam.api.explainer import Explainer

HIGHER, LOWER = "higher", "lower"
BLUR_KERNEL, BLUR_SIGMA = 11, 5.0  # the blurred copy (RISE's insertion substrate), in input pixels
FILLS = ("mean", "black", "blur")


class Value(NamedTuple):
    """One number a metric reports per image and target."""

    name: str  # column name, e.g. "deletion_auc"
    label: str  # table heading
    better: str  # HIGHER or LOWER
    summary: bool = True  # shown in the table (else only in the CSV)


@dataclass
class Scene:
    """N images as the network sees them, the target classes to score and their probabilities,
    and the session that runs perturbed copies (``forward_batch_size`` rows a pass)."""

    pixels: np.ndarray  # float32 [N, 3, H, W] in [0, 1], before normalization
    geometries: list[Geometry]  # how each original image became the network input
    classes: np.ndarray  # int64 [N, K], ranks resolved
    probs: np.ndarray  # float64 [N, K]: probability of those classes (ArtifactInfo.probability)
    batch: Batch  # the session, for perturbed passes
    names: list[str]  # the images' names, for messages
    _blurred: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, explainer: "Explainer", images, targets=None, top_k: int = 1,
              forward_batch_size: int = 32, progress: bool = False,
              names: Optional[Sequence[str]] = None) -> "Scene":
        """Read and fit ``images`` (paths or RGB uint8 arrays, as for ``Explainer.explain``) and
        run them once. ``targets``: as for ``Explainer.explain`` (None: the ``top_k`` classes;
        a negative -r: the r-th ranked class)."""
        check_count("forward_batch_size", forward_batch_size)
        sources = list(image_stream(images))
        pixels, geometries = fit_pixels(load_images(sources, explainer.max_pixels), explainer.info)
        rows = target_matrix(targets, top_k, len(pixels), explainer.num_classes)
        batch = Batch(normalize(pixels, explainer.info), rows, np.zeros((len(pixels), 0), np.float32),
                      {}, explainer.runner, forward_batch_size, progress)
        batch.logits = batch.logits_of_inputs("images", len(pixels), lambda a, b: batch.inputs[a:b])
        batch.classes = resolve_ranks(batch.logits, rows)
        if names is None:
            names = [str(image) if isinstance(image, (str, os.PathLike)) else f"images[{i}]"
                     for i, image in enumerate(sources)]
        return cls(pixels, geometries, batch.classes, target_scores(
            batch.logits, batch.classes, explainer.info.probability), batch, list(names))

    @property
    def info(self) -> ArtifactInfo:
        return self.batch.info

    def __len__(self) -> int:
        return len(self.pixels)

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel-space rows [M, 3, H, W] to the network's normalized input."""
        return normalize(pixels, self.info)

    def blurred(self, i: int) -> np.ndarray:
        """Image ``i`` blurred (Gaussian, 11 x 11, sigma 5): [3, H, W]."""
        if i not in self._blurred:
            image = self.pixels[i].transpose(1, 2, 0)
            self._blurred[i] = cv2.GaussianBlur(image, (BLUR_KERNEL, BLUR_KERNEL),
                                                BLUR_SIGMA).transpose(2, 0, 1)
        return self._blurred[i]

    def fill(self, i: int, kind: str) -> np.ndarray:
        """What removed pixels of image ``i`` become: ``mean`` (the normalization's per-channel
        mean, zero after normalization), ``black`` (0) or ``blur`` (the blurred copy)."""
        if kind == "blur":
            return self.blurred(i)
        value = np.zeros(3, np.float32)
        if kind == "mean":
            order, scale, offset, _ = input_transform(self.info)
            value[order] = offset / scale  # the pixels the model's input holds as 0
        return np.broadcast_to(value[:, None, None], self.pixels.shape[1:])

    def probabilities(self, label: str, count: int, rows, classes: np.ndarray) -> np.ndarray:
        """Softmax probabilities [count] of ``classes[r]`` on pixel-space rows ``rows(start,
        stop)``, fed through the session ``forward_batch_size`` at a time."""
        if count == 0:
            return np.zeros(0)
        logits = self.batch.logits_of_inputs(label, count, lambda a, b: self.normalize(rows(a, b)))
        return target_scores(logits, np.asarray(classes)[:, None], self.info.probability)[:, 0]

    def maps(self, heatmaps, zero_maps: Optional[np.ndarray] = None, box_rule: RuleLike = DEFAULT_RULE) -> "Maps":
        """One method's maps over these images: per image [K, H_img, W_img] in [0, 1] (a list,
        or one [N, K, H, W] array), as ``ExplainResult.heatmaps``; ``zero_maps`` [N, K] flags
        maps not to score (those all zero are flagged too); ``box_rule``: how the method's maps
        are boxed (``ExplainResult.box_rule``)."""
        n, k = self.classes.shape
        if len(heatmaps) != n:
            raise OnnxcamError(f"maps: got {len(heatmaps)} for {n} images")
        checked = []
        for i, (heat, geometry) in enumerate(zip(heatmaps, self.geometries)):
            heat = np.asarray(heat, np.float32)
            if heat.shape != (k, *geometry.original):
                raise OnnxcamError(f"maps: {self.names[i]}: expected shape {(k, *geometry.original)} "
                                   f"(targets, image height, width), got {heat.shape}")
            if not np.isfinite(heat).all() or heat.min() < 0.0 or heat.max() > 1.0 + 1e-6:
                raise OnnxcamError(f"maps: {self.names[i]}: values must be finite and in [0, 1]")
            checked.append(np.minimum(heat, 1.0))
        zero = np.array([[not m.max() > 0.0 for m in heat] for heat in checked]).reshape(n, k)
        if zero_maps is not None:
            zero |= np.asarray(zero_maps, bool).reshape(n, k)
        at_input = np.stack([[geometry.to_input(m) for m in heat]
                             for heat, geometry in zip(checked, self.geometries)])
        return Maps(checked, zero, np.clip(at_input, 0.0, 1.0), parse_rule(box_rule))


@dataclass
class Maps:
    """One method's maps over a :class:`Scene`'s images."""

    heatmaps: list[np.ndarray]  # per image float32 [K, H_img, W_img] in [0, 1]
    zero: np.ndarray  # bool [N, K]: not scored
    at_input: np.ndarray  # float32 [N, K, H, W]: the same maps in the network's frame
    box_rule: BoxRule = field(default_factory=lambda: parse_rule(DEFAULT_RULE))  # how they are boxed
    _orders: dict = field(default_factory=dict, repr=False)

    def order(self, i: int, k: int, most_first: bool = True) -> np.ndarray:
        """Flat pixel indices of map (i, k) at the input, most (or least) relevant first; equal
        values in row-major order."""
        key = (i, k, most_first)
        if key not in self._orders:
            flat = self.at_input[i, k].ravel()
            self._orders[key] = np.argsort(-flat if most_first else flat, kind="stable")
        return self._orders[key]

    def top(self, i: int, k: int, fraction: float, most_first: bool = True) -> np.ndarray:
        """Bool [H, W]: the round(fraction * H * W) most (or least) relevant pixels of map (i, k)."""
        shape = self.at_input.shape[2:]
        chosen = np.zeros(shape[0] * shape[1], bool)
        chosen[self.order(i, k, most_first)[:pixel_count(fraction, chosen.size)]] = True
        return chosen.reshape(shape)


@dataclass
class MetricResult:
    """One metric over N images and K targets of one method."""

    metric: str
    values: dict[str, np.ndarray]  # name -> float64 [N, K]; NaN where not scored
    zero_maps: np.ndarray  # bool [N, K]: maps flagged, so not scored
    curves: dict[str, np.ndarray] = field(default_factory=dict)  # name -> float64 [N, K, points]
    # name -> curves: a value of the whole set, the mean over those curves of their mean's maximum
    maxima: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def mean(self) -> dict[str, float]:
        """Each value's mean over the scored (image, target) pairs, and each of ``maxima``; NaN
        when no pair is scored."""
        means = {name: float(np.mean(v[~np.isnan(v)])) if (~np.isnan(v)).any() else float("nan")
                 for name, v in self.values.items()}
        for name, curves in self.maxima.items():
            means[name] = float(np.mean([np.max(self.mean_curve(c)) for c in curves]))
        return means

    @property
    def counts(self) -> dict[str, int]:
        """How many (image, target) pairs each mean is over."""
        counts = {name: int((~np.isnan(v)).sum()) for name, v in self.values.items()}
        for name, curves in self.maxima.items():
            flat = self.curves[curves[0]].reshape(-1, self.curves[curves[0]].shape[-1])
            counts[name] = int((~np.isnan(flat).any(axis=1)).sum())
        return counts

    def subset(self, chosen: np.ndarray) -> "MetricResult":
        """The result over the pairs ``chosen`` picks (a bool mask or indices over the flattened pairs)."""
        def pick(array: np.ndarray, tail: tuple = ()) -> np.ndarray:
            return array.reshape(-1, *tail)[chosen]

        return MetricResult(self.metric, {n: pick(v) for n, v in self.values.items()}, pick(self.zero_maps),
                            {n: pick(c, c.shape[-1:]) for n, c in self.curves.items()}, self.maxima)

    @classmethod
    def concatenate(cls, parts: Sequence["MetricResult"]) -> "MetricResult":
        """One result over the (image, target) pairs of several results of one metric, flattened
        to [pairs] values and [pairs, points] curves (the parts may differ in K)."""
        def flat(arrays: list[np.ndarray], tail: tuple = ()) -> np.ndarray:
            return np.concatenate([a.reshape(-1, *tail) for a in arrays])

        first = parts[0]
        return cls(first.metric, {name: flat([p.values[name] for p in parts]) for name in first.values},
                   flat([p.zero_maps for p in parts]),
                   {name: flat([p.curves[name] for p in parts], c.shape[-1:])
                    for name, c in first.curves.items()}, first.maxima)

    def mean_curve(self, name: str) -> np.ndarray:
        """Curve ``name`` averaged over the scored pairs (NaN points when none is)."""
        curves = self.curves[name].reshape(-1, self.curves[name].shape[-1])
        scored = ~np.isnan(curves).any(axis=1)
        return curves[scored].mean(axis=0) if scored.any() else np.full(curves.shape[1], np.nan)


class Metric:
    """A measure of one method's maps; subclasses set ``name`` and ``values`` and implement
    :meth:`score`."""

    name = ""
    values: tuple[Value, ...] = ()  # per (image, target), and the names of ``maxima``
    maxima: dict[str, tuple[str, ...]] = {}  # values of the whole set: see MetricResult.maxima
    needs_boxes = False

    def score(self, scene: Scene, maps: Maps, boxes: Optional[list]) -> tuple[dict, dict]:
        """(values, curves): name -> float64 [N, K] (NaN where not scored), name -> [N, K, points]."""
        raise NotImplementedError

    def evaluate(self, scene: Scene, maps: Maps, boxes: Optional[list] = None) -> MetricResult:
        """The metric over a prepared scene and maps; ``boxes``: see :func:`target_boxes`."""
        values, curves = self.score(scene, maps, boxes)
        for array in (*values.values(), *curves.values()):
            array[maps.zero] = np.nan
        return MetricResult(self.name, values, maps.zero.copy(), curves, dict(self.maxima))

    def __call__(self, explainer: "Explainer", images, targets, maps,
                 zero_maps: Optional[np.ndarray] = None, boxes: Optional[list] = None,
                 forward_batch_size: int = 32, progress: bool = False) -> MetricResult:
        """The metric for ``maps`` (per image [K, H_img, W_img] in [0, 1], e.g.
        ``ExplainResult.heatmaps``) of ``targets`` on ``images``."""
        scene = Scene.build(explainer, images, targets, forward_batch_size=forward_batch_size,
                            progress=progress)
        return self.evaluate(scene, scene.maps(maps, zero_maps), boxes)


class PerturbationMetric(Metric):
    """A metric from the target's probability on ``copies`` perturbed copies of each image per
    scored (image, target), fed through the session ``forward_batch_size`` rows at a time."""

    copies = 1

    def perturb(self, scene: Scene, maps: Maps, i: int, k: int, j: int) -> np.ndarray:
        """Copy ``j`` of image ``i`` for target ``k``: pixel-space [3, H, W]."""
        raise NotImplementedError

    def perturbed(self, scene: Scene, maps: Maps) -> np.ndarray:
        """Probabilities [N, K, copies] of each target on its copies; NaN for flagged maps."""
        pairs = np.argwhere(~maps.zero)
        copies = self.copies

        def rows(start: int, stop: int) -> np.ndarray:
            return np.stack([self.perturb(scene, maps, *pairs[r // copies], r % copies)
                             for r in range(start, stop)])

        classes = np.repeat(scene.classes[~maps.zero], copies)
        probs = scene.probabilities(self.name, len(classes), rows, classes)
        out = np.full(scene.classes.shape + (copies,), np.nan)
        out[~maps.zero] = probs.reshape(-1, copies)
        return out


def pixel_count(fraction: float, total: int) -> int:
    """round(fraction * total), halves rounded up."""
    return int(np.floor(fraction * total + 0.5))


def relative_change(after: np.ndarray, before: np.ndarray) -> np.ndarray:
    """(after - before) / before, in percent."""
    return 100.0 * (after - before) / before


def check_fill(fill: str) -> str:
    if fill not in FILLS:
        raise OnnxcamError(f"fill: expected one of {', '.join(FILLS)}, got {fill!r}")
    return fill
