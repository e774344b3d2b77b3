"""Timing primitives: a monotonic clock, per-stage sample collection and summary statistics."""
from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

clock = time.perf_counter
STAT_KEYS = ("mean", "p50", "p90", "p99", "std")
STAGES = ("decode", "preprocess", "infer", "postprocess", "e2e")


def summarize(samples_ms, ndigits: int = 3) -> dict:
    """mean, p50, p90, p99, std (population), min, max and n of samples in ms (linear-interpolated percentiles)."""
    a = np.asarray(list(samples_ms), np.float64)
    if a.size == 0:
        return {k: None for k in (*STAT_KEYS, "min", "max")} | {"n": 0}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    r = {"mean": a.mean(), "p50": p50, "p90": p90, "p99": p99, "std": a.std(), "min": a.min(), "max": a.max()}
    return {k: round(float(v), ndigits) for k, v in r.items()} | {"n": int(a.size)}


class StageTimer:
    """Collects wall-clock samples in ms per named stage: `with t("infer"): ...`."""

    def __init__(self, *stages: str):
        self.samples: dict[str, list[float]] = {s: [] for s in stages}
        self.stamps: list[float] = []  # completion time (clock, s) of each timed iteration, for stability windows
        self.start = clock()

    @contextmanager
    def __call__(self, stage: str):
        t0 = clock()
        try:
            yield
        finally:
            self.add(stage, (clock() - t0) * 1e3)

    def add(self, stage: str, ms: float) -> None:
        self.samples.setdefault(stage, []).append(ms)

    def clear(self) -> None:
        for v in self.samples.values():
            v.clear()
        self.stamps.clear()
        self.start = clock()

    def summary(self) -> dict:
        return {s: summarize(v) for s, v in self.samples.items()}
