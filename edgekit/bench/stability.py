"""Stability verdict: timing in windows, stable when the last 3 windows agree (Triton perf_analyzer's rule).

A window is a run of consecutive samples: its throughput (samples per second of wall time) and its p50 latency.
Windows: up to 10, of at least 25 samples where there are enough (never fewer than 3).
A result is stable when, over the last `last` windows, every window's throughput and p50 lie within `threshold`
(10 %) of their mean. `cv` is the coefficient of variation of the p50 across all windows (std / mean).
"""
from __future__ import annotations

import numpy as np

THRESHOLD = 0.10
LAST = 3
MAX_WINDOWS = 10
MIN_PER_WINDOW = 25  # fewer windows rather than windows of a handful of samples (one hiccup would decide)
RULE = "last 3 windows within 10 % of their mean on throughput and p50 (perf_analyzer)"


def windows(ends, latencies_ms=None, start: float | None = None, n_windows: int | None = None) -> list[dict]:
    """Split samples (completion times in s, ascending; optional latencies in ms) into consecutive windows.

    Each window: {"n", "throughput" (samples/s between the previous window's end and its own), "p50" (ms or None)}.
    """
    ends = np.asarray(list(ends), np.float64)
    lat = None if latencies_ms is None else np.asarray(list(latencies_ms), np.float64)
    n = ends.size
    if n < 2:
        return []
    k = n_windows or min(MAX_WINDOWS, max(LAST, n // MIN_PER_WINDOW))
    k = max(1, min(k, n - (start is None)))
    edges = np.linspace(0, n, k + 1).round().astype(int)
    out, prev_t = [], ends[0] if start is None else start
    first = 1 if start is None else 0  # without a start time the first sample only opens the clock
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        a = max(a, first) if i == 0 else a
        if b <= a:
            continue
        dt = ends[b - 1] - prev_t
        out.append({"n": int(b - a), "throughput": round(float((b - a) / dt), 4) if dt > 0 else None,
                    "p50": None if lat is None else round(float(np.median(lat[a:b])), 4)})
        prev_t = ends[b - 1]
    return out


def _spread(values) -> float | None:
    """Largest relative deviation from the mean; None when a value is missing or the mean is 0."""
    if not values or any(v is None for v in values):
        return None
    m = float(np.mean(values))
    return None if m <= 0 else round(max(abs(v - m) for v in values) / m, 4)


def cv(values) -> float | None:
    """Coefficient of variation (population std / mean) of the non-missing values; None with fewer than 2."""
    v = np.asarray([x for x in values if x is not None], np.float64)
    if v.size < 2 or v.mean() <= 0:
        return None
    return round(float(v.std() / v.mean()), 4)


def stability(wins: list[dict], threshold: float = THRESHOLD, last: int = LAST) -> dict:
    """The verdict on a series of windows: {"stable", "cv", "windows", "samples", "spread", "reason", "rule"}.

    A metric that no window carries (p50 in a pure throughput run) is not judged; one that only some carry is.
    """
    tail = wins[-last:]
    verdict = {"stable": False, "cv": cv(w.get("p50") for w in wins), "windows": len(wins),
               "samples": int(sum(w.get("n", 0) for w in wins)), "threshold": threshold, "rule": RULE,
               "spread": {}, "reason": ""}
    if len(wins) < last:
        verdict["reason"] = f"only {len(wins)} window(s); the rule needs {last}"
        return verdict
    bad = []
    for key in ("throughput", "p50"):
        vals = [w.get(key) for w in tail]
        if all(v is None for v in vals):
            continue
        s = _spread(vals)
        verdict["spread"][key] = s
        if s is None or s > threshold:
            bad.append(f"{key} varies {'?' if s is None else f'{s:.1%}'} over the last {last} windows")
    if not verdict["spread"]:
        verdict["reason"] = "no window carries throughput or p50"
        return verdict
    verdict["stable"] = not bad
    verdict["reason"] = "; ".join(bad) or f"last {last} windows within {threshold:.0%}"
    return verdict


def combine(verdicts: list[dict]) -> tuple[bool, list[str]]:
    """Overall stable flag over several modes, and the reasons of those that are not."""
    return all(v["stable"] for v in verdicts), [v["reason"] for v in verdicts if not v["stable"]]


def label(verdict: dict) -> str:
    """One line for tables: 'stable (p50 CV 1.2 %, 10 windows, 400 samples)' or 'UNSTABLE: reason (...)'."""
    c = verdict.get("cv")
    tail = (f"p50 CV {'-' if c is None else f'{c:.1%}'}, {verdict.get('windows')} windows, "
            f"{verdict.get('samples')} samples")
    return f"stable ({tail})" if verdict.get("stable") else f"UNSTABLE: {verdict.get('reason')} ({tail})"
