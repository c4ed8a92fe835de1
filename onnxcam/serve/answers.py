"""The bodies of ``POST /v1/explain`` answers: JSON with base64 PNG overlays, or one PNG."""
from __future__ import annotations

import base64
from typing import Optional

import numpy as np

from onnxcam.render.boxes import Box
from onnxcam.render.grid import explanation_view, figure
from onnxcam.render.overlay import encode_png
from onnxcam.runtime.runner import target_scores
from onnxcam.serve.models import Explained
from onnxcam.serve.params import ExplainOptions

TOP_PREDICTIONS = 5


def _class_entry(labels, index: int, prob: float) -> dict:
    return {"class": int(index), "label": labels[int(index)] if labels else None,
            "prob": round(float(prob), 6)}


def _predictions(logits: np.ndarray, labels, probability: str) -> list[dict]:
    """The model's most probable classes for one image (``probability``: "softmax" or "sigmoid")."""
    probs = target_scores(logits[None], np.arange(len(logits))[None], probability)[0]
    best = np.argsort(-probs, kind="stable")[:TOP_PREDICTIONS]
    return [_class_entry(labels, c, probs[c]) for c in best]


def _box(done: Explained, m: int, k: int) -> Optional[Box]:
    """The weakly-supervised box of method ``m``, target ``k`` (None for a constant map)."""
    boxes = done.results[m].boxes(done.index, k)
    return boxes[0] if boxes else None


def _view(done: Explained, m: int, k: int, image_output: dict[str, bool], alpha: float,
          box: Optional[Box] = None) -> np.ndarray:
    """The picture of method ``m``, target ``k``, with ``box`` drawn as ``onnxcam explain --boxes``
    draws it."""
    result, i = done.results[m], done.index
    return explanation_view(result, i, k, result.images[i], alpha, image_output[result.method],
                            () if box is None else (box,))


def json_answer(model: str, done: Explained, options: ExplainOptions, image_output: dict[str, bool],
                times: dict[str, float], png_level: Optional[int] = None) -> dict:
    """Predictions, and per method and class the overlay as base64 PNG (with ``boxes`` its box
    [x0, y0, x1, y1], x1 and y1 exclusive; with ``raw`` the map at layer resolution)."""
    first, i = done.results[0], done.index
    height, width = first.images[i].shape[:2]
    explained = [_class_entry(first.labels, c, p) for c, p in zip(first.classes[i], first.probs[i])]
    explanations = []
    for m, result in enumerate(done.results):
        for k, target in enumerate(explained):
            box = _box(done, m, k) if options.boxes else None
            view = _view(done, m, k, image_output, options.alpha, box)
            entry = {"method": result.method, **target, "zero_map": bool(result.zero_maps[i, k]),
                     "overlay_png": base64.b64encode(encode_png(view, level=png_level)).decode("ascii")}
            if options.boxes:
                entry["box"] = None if box is None else list(box)
            if options.raw:
                entry["map"] = result.raw_maps[i, k].tolist()
            explanations.append(entry)
    return {"model": model, "width": width, "height": height,
            "predictions": _predictions(first.logits[i], first.labels, first.probability), "classes": explained,
            "explanations": explanations, "batch_size": done.batch_size,
            "time_ms": {name: round(seconds * 1e3, 2) for name, seconds in times.items()}}


def png_answer(done: Explained, options: ExplainOptions, image_output: dict[str, bool],
               png_level: Optional[int] = None) -> bytes:
    """The overlay of a single method and class; the titled grid for several."""
    if len(done.results) == 1 and done.results[0].classes.shape[1] == 1:
        box = _box(done, 0, 0) if options.boxes else None
        return encode_png(_view(done, 0, 0, image_output, options.alpha, box), level=png_level)
    flags = [image_output[result.method] for result in done.results]
    return encode_png(figure(done.results, done.index, options.alpha, flags), level=png_level)
