"""How good is a map: faithfulness and localization metrics, run on the explainer's session.

Each metric takes the explainer, the images, the targets and one method's maps and returns
per-image values with their means (:class:`MetricResult`)::

    from onnxcam.metrics import Deletion, Scene
    result = ex.explain(images, "gradcam")
    Deletion()(ex, images, result.classes, result.heatmaps, result.zero_maps).mean

or, to share one preprocessing among several metrics and methods::

    scene = Scene.build(ex, images, result.classes)
    Deletion().evaluate(scene, scene.maps(result.heatmaps, result.zero_maps))

Conventions (which probability, which frame, ties) are in :mod:`onnxcam.metrics.base`.
"""
from __future__ import annotations

import inspect

from onnxcam.errors import OnnxcamError
from onnxcam.metrics.base import Maps, Metric, MetricResult, Scene, Value
from onnxcam.metrics.faithfulness import (
    ROAD,
    ConfidenceChange,
    Deletion,
    Insertion,
    Removal,
)
from onnxcam.metrics.imputation import noisy_linear_imputation
from onnxcam.metrics.localization import Localization, target_boxes

METRICS: dict[str, type[Metric]] = {cls.name: cls for cls in (
    ConfidenceChange, Removal, Deletion, Insertion, ROAD, Localization)}

__all__ = ["METRICS", "ROAD", "ConfidenceChange", "Deletion", "Insertion", "Localization", "Maps",
           "Metric", "MetricResult", "Removal", "Scene", "Value", "get_metric", "noisy_linear_imputation",
           "parse_metrics", "target_boxes"]


def get_metric(name: str, **options) -> Metric:
    """The metric registered as ``name``, given the options its constructor takes (others, and
    None, are ignored)."""
    cls = METRICS.get(name.strip().lower())
    if cls is None:
        raise OnnxcamError(f"metrics: unknown metric {name!r} (choose from: {', '.join(METRICS)})")
    accepted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in options.items() if k in accepted and v is not None})


def parse_metrics(text: str, **options) -> list[Metric]:
    """Metrics from a comma-separated list of names, e.g. ``deletion,insertion``."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if not names:
        raise OnnxcamError(f"metrics: no metric named in {text!r}")
    return [get_metric(name, **options) for name in dict.fromkeys(names)]
