"""Prometheus metrics of one server, in their own registry (requests, queue depth, batch sizes, latency)."""
from __future__ import annotations

from typing import Callable

from .._imports import require

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self, model: str, max_batch: int, depth: Callable[[], int]):
        pc = require("prometheus_client", "edgekit serve metrics")
        self._pc = pc
        self.registry = pc.CollectorRegistry()
        r = self.registry
        self.requests = pc.Counter("edgekit_requests", "Inference requests by HTTP status", ["model", "status"],
                                   registry=r)
        self.latency = pc.Histogram("edgekit_request_latency_seconds", "Inference request latency, end to end "
                                    "in the server (decode to response)", ["model"], buckets=LATENCY_BUCKETS,
                                    registry=r)
        self.batch = pc.Histogram("edgekit_batch_size", "Images per network call", ["model"],
                                  buckets=tuple(range(1, max_batch + 1)), registry=r)
        self.infer = pc.Histogram("edgekit_batch_infer_seconds", "Network time per batch", ["model"],
                                  buckets=LATENCY_BUCKETS, registry=r)
        depth_g = pc.Gauge("edgekit_queue_depth", "Requests waiting for a batch", ["model"], registry=r)
        depth_g.labels(model).set_function(depth)
        self.model = model

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch.labels(self.model).observe(size)
        self.infer.labels(self.model).observe(seconds)

    def on_request(self, status: int, seconds: float | None = None) -> None:
        self.requests.labels(self.model, str(status)).inc()
        if seconds is not None:
            self.latency.labels(self.model).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return self._pc.generate_latest(self.registry), self._pc.CONTENT_TYPE_LATEST
