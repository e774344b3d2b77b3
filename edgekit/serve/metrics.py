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

    def track_drift(self, tracker) -> None:
        """Gauges read from the drift tracker's latest verdict when /metrics is scraped (nothing per frame)."""
        from ..drift.tracker import LEVELS, SCORES

        pc, r, m = self._pc, self.registry, self.model
        score = pc.Gauge("edgekit_drift_score", "Drift score of the latest full window against the artifact's "
                         "profile (NaN: not computed)", ["model", "score"], registry=r)
        limit = pc.Gauge("edgekit_drift_threshold", "Score at which the verdict becomes warn or drift",
                         ["model", "score", "level"], registry=r)
        state = pc.Gauge("edgekit_drift_verdict", "Drift verdict: -1 collecting the first window, 0 ok, 1 warn, "
                         "2 drift", ["model"], registry=r)
        frames = pc.Gauge("edgekit_drift_frames", "Frames the drift tracker has seen", ["model"], registry=r)

        def value(k):
            v = tracker.verdict()["scores"].get(k)
            return float("nan") if v is None else v

        for k in SCORES:
            score.labels(m, k).set_function(lambda k=k: value(k))
        for k, (warn, drift) in tracker.limits.items():
            limit.labels(m, k, "warn").set(warn)
            limit.labels(m, k, "drift").set(drift)
        state.labels(m).set_function(lambda: LEVELS.index(v) if (v := tracker.verdict()["verdict"]) in LEVELS else -1)
        frames.labels(m).set_function(lambda: tracker.seen)

    def on_batch(self, size: int, seconds: float) -> None:
        self.batch.labels(self.model).observe(size)
        self.infer.labels(self.model).observe(seconds)

    def on_request(self, status: int, seconds: float | None = None) -> None:
        self.requests.labels(self.model, str(status)).inc()
        if seconds is not None:
            self.latency.labels(self.model).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return self._pc.generate_latest(self.registry), self._pc.CONTENT_TYPE_LATEST


class Stats:
    """Triton's inference statistics of one model (GET /v2/models/NAME/stats): counts and cumulative nanoseconds.

    Per request: success / fail (whole request), queue (waiting for a batch), compute_input (parse, decode,
    letterbox), compute_infer (its batch's network call), compute_output (decode + NMS, response); per batch size:
    compute_infer. inference_count counts images, execution_count network calls.
    """

    KEYS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")

    def __init__(self, name: str, version: str = "1"):
        import threading

        self.name, self.version = name, version
        self._lock = threading.Lock()
        self._d = {k: [0, 0] for k in self.KEYS}
        self._batches: dict[int, list[int]] = {}
        self.inference_count = self.execution_count = self.last_inference_ms = 0

    def add(self, key: str, seconds: float, count: int = 1) -> None:
        with self._lock:
            d = self._d[key]
            d[0] += count
            d[1] += int(seconds * 1e9)

    def on_batch(self, size: int, seconds: float) -> None:
        import time

        with self._lock:
            b = self._batches.setdefault(size, [0, 0])
            b[0] += 1
            b[1] += int(seconds * 1e9)
            self.execution_count += 1
            self.inference_count += size
            self.last_inference_ms = int(time.time() * 1000)

    def doc(self) -> dict:
        with self._lock:
            return {"name": self.name, "version": self.version, "last_inference": self.last_inference_ms,
                    "inference_count": self.inference_count, "execution_count": self.execution_count,
                    "inference_stats": {k: {"count": c, "ns": ns} for k, (c, ns) in self._d.items()},
                    "batch_stats": [{"batch_size": s, "compute_infer": {"count": c, "ns": ns}}
                                    for s, (c, ns) in sorted(self._batches.items())]}
