"""A model the service explains with: its Explainer, its micro-batcher and what it can serve."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from onnxcam.api.explainer import Explainer, ExplainResult
from onnxcam.errors import OnnxcamError
from onnxcam.methods.registry import METHODS
from onnxcam.serve.batching import MicroBatcher

Payload = tuple[np.ndarray, np.ndarray]  # (RGB uint8 image, int64 [K] targets)


@dataclass
class Explained:
    """One request's share of a batch run: image ``index`` of ``results`` (one per method)."""

    results: list[ExplainResult]
    index: int
    batch_size: int
    run_seconds: float


class ServedModel:
    """An explain-graph loaded for serving, with the batcher that feeds it."""

    def __init__(self, name: str, path: str, *, max_batch: int = 8, max_wait: float = 0.01,
                 max_pixels: Optional[int] = None, threads: Optional[int] = None,
                 providers: Optional[Sequence[str]] = None, spinning: bool = False,
                 on_batch: Optional[Callable[[str, int], None]] = None):
        self.name = name
        self.explainer = Explainer(path, providers, threads, spinning=spinning, max_pixels=max_pixels)
        self.image_output: dict[str, bool] = {}  # method -> drawn as an image, not a heatmap
        for method in METHODS:
            try:
                self.image_output[method] = self.explainer.method(method).image_output
            except OnnxcamError:  # a method this file cannot serve
                pass
        self.batcher = MicroBatcher(self._run, max_batch, max_wait, name=f"onnxcam-{name}",
                                    on_batch=None if on_batch is None else lambda n: on_batch(name, n))

    def describe(self) -> dict:
        """What ``GET /v1/model`` says about this model."""
        info = self.explainer.info
        return {"name": self.name, "file": self.explainer.path.name, "source": info.source,
                "input_size": list(info.input_size), "resize": info.resize,
                "num_classes": info.num_classes, "labels": info.labels, "layers": info.layers,
                "methods": list(self.image_output), "in_graph_maps": info.maps,
                "precision": info.precision, "providers": self.explainer.session.get_providers(),
                "max_batch": self.batcher.max_batch, "max_pixels": self.explainer.max_pixels}

    def _run(self, key: tuple, payloads: list[Payload]) -> list:
        """One graph run for a batch; if it fails, each request alone, so only the culprit fails."""
        methods, _ = key
        start = time.perf_counter()
        try:
            results = self.explainer.explain_methods(
                [image for image, _ in payloads], list(methods),
                targets=np.stack([targets for _, targets in payloads]), batch_size=len(payloads))
        except Exception as error:  # noqa: BLE001  (reported to the request, never raised here)
            if len(payloads) == 1:
                return [error]
            return [self._run(key, [payload])[0] for payload in payloads]
        seconds = time.perf_counter() - start
        return [Explained(results, i, len(payloads), seconds) for i in range(len(payloads))]
