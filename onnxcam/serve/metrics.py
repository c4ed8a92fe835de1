"""Prometheus metrics of the service: requests by path and status, latency, batch sizes."""
from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,  # noqa: F401  (re-exported for the /metrics route)
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    """The service's counters and histograms, in a registry of their own (one per app)."""

    def __init__(self, paths: tuple[str, ...]):
        self.paths = paths
        self.registry = CollectorRegistry()
        self.requests = Counter("onnxcam_requests", "HTTP requests answered, by path and status",
                                ["path", "status"], registry=self.registry)
        self.latency = Histogram("onnxcam_request_seconds", "Time to answer a request, by path",
                                 ["path"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batches = Histogram("onnxcam_batch_size", "Images per onnxruntime run, by model",
                                 ["model"], buckets=BATCH_BUCKETS, registry=self.registry)

    def batch(self, model: str, size: int) -> None:
        self.batches.labels(model).observe(size)

    def exposition(self) -> bytes:
        """The text format; with several workers (PROMETHEUS_MULTIPROC_DIR set), all of them."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


class CountRequests:
    """ASGI middleware counting every HTTP request in ``metrics`` by path (known routes, else
    "other") and status, and timing it."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"] in self.metrics.paths else "other"
        status = 500  # unless a response starts
        start = time.perf_counter()

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)
