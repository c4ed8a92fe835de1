"""Fitting a box rule to annotated boxes: of a set of candidate rules, the one whose boxes match
the given boxes best (as Choe et al. 2020 choose the threshold on held-out boxes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from onnxcam.errors import OnnxcamError
from onnxcam.methods.base import Method
from onnxcam.metrics.box_files import AnnotatedImage
from onnxcam.metrics.localization import BOXACC_IOUS, iou, shrunk
from onnxcam.render.boxes import Box, BoxRule, MassShare, Otsu, PeakFraction, map_boxes

CANDIDATES: tuple[BoxRule, ...] = (
    *(PeakFraction(round(0.05 * i, 2)) for i in range(1, 20)),
    *(MassShare(round(0.1 * i, 1)) for i in range(1, 10)),
    Otsu(),
)
if TYPE_CHECKING:
    from onnxcam.api.explainer import Explainer

Pair = tuple[np.ndarray, Sequence[Box]]  # a heatmap [H, W] and the boxes of its class in it


def matched(found: Sequence[Box], truth: Sequence[Box], threshold: float) -> int:
    """How many boxes of ``truth`` are matched one to one by boxes of ``found`` at IoU >=
    ``threshold`` (greedily, best IoU first)."""
    pairs = sorted(((iou(f, t), a, b) for a, f in enumerate(found) for b, t in enumerate(truth)), reverse=True)
    used_found, used_truth = set(), set()
    for value, a, b in pairs:
        if value < threshold:
            break
        if a not in used_found and b not in used_truth:
            used_found.add(a)
            used_truth.add(b)
    return len(used_truth)


def rule_score(rule: BoxRule, heat: np.ndarray, truth: Sequence[Box]) -> float:
    """One map's box accuracy under ``rule``, in [0, 1]: the boxes the rule gives (its largest
    segment for one given box, mode "all" for several) matched one to one with ``truth``, over
    the larger of the two counts (a box too many costs as one missed), averaged over IoU 0.3,
    0.5 and 0.7. Maps larger than CURVE_SIDE are scored shrunk (:func:`shrunk`)."""
    heat, truth = shrunk(heat, truth)
    found = map_boxes(heat, rule, "largest" if len(truth) == 1 else "all")
    if not found:
        return 0.0
    return float(np.mean([matched(found, truth, t) for t in BOXACC_IOUS])) / max(len(found), len(truth))


@dataclass
class Calibration:
    """The rule fitted to a set of maps and boxes, and every candidate's score."""

    rule: BoxRule
    scores: dict[str, float]  # rule spec -> mean box accuracy over the pairs, in percent
    pairs: int

    def score(self, rule: BoxRule) -> float:
        return self.scores[str(rule)]


def calibrate(pairs: Sequence[Pair], candidates: Sequence[BoxRule] = CANDIDATES) -> Calibration:
    """The candidate with the highest mean :func:`rule_score` over ``pairs`` (the earlier
    candidate on a tie); OnnxcamError without pairs."""
    if not pairs:
        raise OnnxcamError("calibrate boxes: no map with boxes to fit a rule to")
    small = [shrunk(heat, truth) for heat, truth in pairs]  # once, not once per rule
    scores = {str(rule): 100.0 * float(np.mean([rule_score(rule, heat, truth) for heat, truth in small]))
              for rule in candidates}
    best = max(candidates, key=lambda rule: scores[str(rule)])
    return Calibration(best, scores, len(pairs))


def image_targets(explainer: "Explainer", item: AnnotatedImage, image: np.ndarray,
                  forward_batch_size: int = 32) -> dict[int, list[Box]]:
    """``item.targets`` of its loaded ``image``: one forward pass for its logits where an object
    is named by several classes."""
    from onnxcam.metrics.base import Scene

    logits = None
    if any(len(classes) > 1 for classes, _ in item.objects):
        logits = Scene.build(explainer, [image], forward_batch_size=forward_batch_size).batch.logits[0]
    return item.targets(logits)


def annotated_maps(explainer: "Explainer", items: Sequence[AnnotatedImage], methods: Sequence[Method],
                   forward_batch_size: int = 32) -> dict[str, list[Pair]]:
    """Per method, (heatmap, boxes) of every class of every annotated image: each object named by
    its best-scoring class, objects named alike one target with several boxes. Flagged (constant)
    maps are left out."""
    from onnxcam.images.decode import load_image

    pairs: dict[str, list[Pair]] = {method.name: [] for method in methods}
    for item in items:
        image = load_image(item.path, explainer.max_pixels)
        targets = image_targets(explainer, item, image, forward_batch_size)
        results = explainer.explain_methods([image], methods, targets=list(targets),
                                            forward_batch_size=forward_batch_size)
        for method, result in zip(methods, results):
            for k, boxes in enumerate(targets.values()):
                if not result.zero_maps[0, k]:
                    pairs[method.name].append((result.heatmaps[0][k], boxes))
    return pairs
