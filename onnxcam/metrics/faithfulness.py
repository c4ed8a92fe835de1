"""Faithfulness: how the target's probability responds when the image is changed where the map
says it matters (conventions in :mod:`onnxcam.metrics.base`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.metrics.base import (
    HIGHER,
    LOWER,
    Maps,
    PerturbationMetric,
    Value,
    check_fill,
    relative_change,
)
from onnxcam.metrics.imputation import noisy_linear_imputation


class ConfidenceChange(PerturbationMetric):
    """The image times its map (Grad-CAM++'s "explanation map" E = I * L): with p and p' the
    target's probability on the image and on E, *drop* = max(0, p - p') / p and *increase* =
    1 when p' > p, both in percent; their means are the average drop and the rate of increase."""

    name = "confidence"
    values = (Value("drop", "drop in confidence %", LOWER),
              Value("increase", "increase in confidence %", HIGHER))

    def perturb(self, scene, maps, i, k, j):
        return scene.pixels[i] * maps.at_input[i, k][None]

    def score(self, scene, maps, boxes):
        after = self.perturbed(scene, maps)[..., 0]
        drop = 100.0 * np.maximum(0.0, scene.probs - after) / scene.probs
        increase = np.where(np.isnan(after), np.nan, 100.0 * (after > scene.probs))
        return {"drop": drop, "increase": increase}, {}


class Removal(PerturbationMetric):
    """The most relevant ``fraction`` of the pixels replaced by ``fill``: the relative change of
    the target's probability, (p' - p) / p in percent (a faithful map makes it strongly
    negative); the least relevant fraction replaced the same way is the control (near 0)."""

    name = "removal"
    copies = 2

    def __init__(self, fraction: float = 0.25, fill: str = "mean"):
        if not 0.0 < fraction < 1.0:
            raise OnnxcamError(f"fraction: must be in (0, 1), got {fraction}")
        self.fraction, self.fill = fraction, check_fill(fill)
        share = f"{100 * fraction:g} %"
        self.values = (Value("remove_most", f"top {share} removed, change %", LOWER),
                       Value("remove_least", f"bottom {share} removed, change %", HIGHER))

    def perturb(self, scene, maps, i, k, j):
        removed = maps.top(i, k, self.fraction, most_first=j == 0)
        return np.where(removed, scene.fill(i, self.fill), scene.pixels[i])

    def score(self, scene, maps, boxes):
        after = self.perturbed(scene, maps)
        change = relative_change(after, scene.probs[..., None])
        return {"remove_most": change[..., 0], "remove_least": change[..., 1]}, {}


class Curve(PerturbationMetric):
    """A probability curve over ``steps`` + 1 points, at fractions 0, 1/steps, ..., 1 of the
    pixels changed in map order, and its area under the curve (trapezoids over [0, 1])."""

    curve = ""

    def __init__(self, steps: int = 20):
        if steps < 1:
            raise OnnxcamError(f"steps: must be at least 1, got {steps}")
        self.steps = self.copies = steps

    def changed(self, maps: Maps, i: int, k: int, step: int) -> np.ndarray:
        """Bool [H, W]: the pixels changed at ``step``, most relevant first."""
        return maps.top(i, k, step / self.steps)

    def score(self, scene, maps, boxes):
        curve = self.points(scene.probs, self.perturbed(scene, maps))
        area = (curve[..., :-1] + curve[..., 1:]).sum(axis=-1) / (2 * self.steps)
        return {f"{self.curve}_auc": area}, {self.curve: curve}

    def points(self, probs: np.ndarray, copies: np.ndarray) -> np.ndarray:
        """The whole curve [N, K, steps + 1] from the image's probability and the copies'."""
        raise NotImplementedError


class Deletion(Curve):
    """Deletion (Petsiuk et al. 2018): the most relevant pixels replaced by ``fill`` step by step,
    from the image (step 0) to none of it left (step ``steps``); a lower area is better."""

    name = curve = "deletion"
    values = (Value("deletion_auc", "deletion AUC", LOWER),)

    def __init__(self, steps: int = 20, fill: str = "mean"):
        super().__init__(steps)
        self.fill = check_fill(fill)

    def perturb(self, scene, maps, i, k, j):  # copy j is step j + 1
        return np.where(self.changed(maps, i, k, j + 1), scene.fill(i, self.fill), scene.pixels[i])

    def points(self, probs, copies):
        return np.concatenate([probs[..., None], copies], axis=-1)


class Insertion(Curve):
    """Insertion (Petsiuk et al. 2018): the most relevant pixels of the image put into its
    blurred copy step by step, from the blurred copy (step 0) to the image (step ``steps``);
    a higher area is better."""

    name = curve = "insertion"
    values = (Value("insertion_auc", "insertion AUC", HIGHER),)

    def perturb(self, scene, maps, i, k, j):  # copy j is step j
        return np.where(self.changed(maps, i, k, j), scene.pixels[i], scene.blurred(i))

    def points(self, probs, copies):
        return np.concatenate([copies, probs[..., None]], axis=-1)


class ROAD(PerturbationMetric):
    """ROAD, remove and debias (Rong et al. 2022): at each of ``percentiles`` the most relevant
    (MoRF) or the least relevant (LeRF) pixels are removed and filled by noisy linear imputation
    from their neighbours (:func:`noisy_linear_imputation`), so the filled region carries no
    sharp outline that would leak the map's shape. Values: the relative change (p' - p) / p in
    percent at each percentile and its mean over them (MoRF: lower is better; LeRF: higher).
    The noise field of each (percentile, order) is drawn from ``seed`` and is the same for every
    image, so the values do not depend on batching."""

    name = "road"

    def __init__(self, percentiles: Sequence[float] = (10, 30, 50, 70, 90), noise: float = 0.01,
                 seed: int = 0):
        percentiles = [float(q) for q in percentiles]
        if not percentiles or not all(0.0 < q < 100.0 for q in percentiles):
            raise OnnxcamError(f"percentiles: each must be in (0, 100), got {percentiles}")
        if not noise >= 0.0:
            raise OnnxcamError(f"noise: must be at least 0, got {noise}")
        self.percentiles, self.noise, self.seed = percentiles, noise, seed
        self.copies = 2 * len(percentiles)
        self.values = (Value("road_morf", "ROAD MoRF change %", LOWER),
                       Value("road_lerf", "ROAD LeRF change %", HIGHER),
                       *(Value(f"road_{order}_{q:g}", f"ROAD {order} {q:g} %", better, summary=False)
                         for order, better in (("morf", LOWER), ("lerf", HIGHER))
                         for q in percentiles))
        self._noise: dict[tuple, np.ndarray] = {}

    def noise_field(self, j: int, shape: tuple[int, ...]) -> np.ndarray:
        """The noise of copy ``j`` ([3, H, W], std ``noise``), the same for every image."""
        key = (j, shape)
        if key not in self._noise:
            rng = np.random.default_rng([self.seed, j])
            self._noise[key] = (self.noise * rng.standard_normal(shape)).astype(np.float32)
        return self._noise[key]

    def perturb(self, scene, maps, i, k, j):  # copies: MoRF at each percentile, then LeRF
        count = len(self.percentiles)
        removed = maps.top(i, k, self.percentiles[j % count] / 100.0, most_first=j < count)
        return noisy_linear_imputation(scene.pixels[i], removed,
                                       self.noise_field(j, scene.pixels.shape[1:]))

    def score(self, scene, maps, boxes):
        count = len(self.percentiles)
        change = relative_change(self.perturbed(scene, maps), scene.probs[..., None])
        morf, lerf = change[..., :count], change[..., count:]
        values = {"road_morf": morf.mean(axis=-1), "road_lerf": lerf.mean(axis=-1)}
        for order, part in (("morf", morf), ("lerf", lerf)):
            values.update({f"road_{order}_{q:g}": part[..., n] for n, q in enumerate(self.percentiles)})
        return values, {"road_morf": morf, "road_lerf": lerf}
