"""Drift over a rolling window of frames against an artifact's profile: scores, thresholds, verdict.

Scores of a window W against the profile P (edgekit.drift.profile rows):
- frechet: Fréchet distance of W's projected embeddings to P's (mean and covariance);
- confidence_psi: PSI of the detections' confidence-bin shares (None under MIN_DETECTIONS detections in W);
- class_psi: PSI of the per-class detection shares, with "frames without a detection" as one more class;
- brightness, contrast, sharpness, size: |mean of W - mean of P| in standard deviations of P.

Thresholds come from the profile itself, for this window size: NULL_DRAWS in-domain windows are drawn (with
replacement) from the profile's rows and each is scored against a resample of the profile, so that both the
window's and the profile's sampling noise are in the null distribution. warn = its 99th percentile, drift = twice
that, with floors (PSI 0.1 / 0.25, the usual bands; statistics 0.5 / 1 standard deviation). The verdict is the worst
level of any score; `moved` lists the scores at warn or above with what changed.
"""
from __future__ import annotations

import threading
from collections import deque

import numpy as np

from .profile import Profile
from .scores import IMAGE_STATS, frechet_distance, psi

SCORES = ("frechet", "confidence_psi", "class_psi", *IMAGE_STATS)
LEVELS = ("ok", "warn", "drift")
NULL_DRAWS, NULL_QUANTILE, DRIFT_FACTOR = 200, 0.99, 2.0
FLOORS = {"confidence_psi": (0.1, 0.25), "class_psi": (0.1, 0.25), **{k: (0.5, 1.0) for k in IMAGE_STATS}}
MIN_DETECTIONS = 10
DEFAULT_WINDOW = 64


class Rows:
    """Stacked profile rows (or a window's), the sums the scores need."""

    def __init__(self, emb, conf, cls, stats):
        self.emb, self.conf, self.cls, self.stats = emb, conf, cls, stats

    @classmethod
    def of(cls, rows: list) -> "Rows":
        embs = [r[0] for r in rows]
        emb = np.stack(embs) if embs and all(e is not None for e in embs) else None
        return cls(emb, np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows]), np.stack([r[3] for r in rows]))

    @classmethod
    def of_profile(cls, p: Profile) -> "Rows":
        return cls(p.emb, p.conf_counts, p.class_counts, p.stats)

    def take(self, idx) -> "Rows":
        return Rows(None if self.emb is None else self.emb[idx], self.conf[idx], self.cls[idx], self.stats[idx])


def _spread(stats: np.ndarray) -> np.ndarray:
    """The profile's standard deviation of each statistic, floored at 5 % of its mean (a constant image size)."""
    return np.maximum(stats.std(0), 0.05 * np.abs(stats.mean(0)) + 1e-9)


def scores(w: Rows, ref: Rows) -> dict:
    """Each score of window w against reference rows ref (None where it cannot be computed)."""
    out: dict = {k: None for k in SCORES}
    if w.emb is not None and ref.emb is not None and len(w.emb) > 1:
        out["frechet"] = frechet_distance(w.emb.mean(0), np.cov(w.emb, rowvar=False),
                                          ref.emb.mean(0), np.cov(ref.emb, rowvar=False))
    if w.conf.sum() >= MIN_DETECTIONS and ref.conf.sum() > 0:
        out["confidence_psi"] = psi(ref.conf.sum(0), w.conf.sum(0))
    out["class_psi"] = psi(ref.cls.sum(0), w.cls.sum(0))
    z = (w.stats.mean(0) - ref.stats.mean(0)) / _spread(ref.stats)
    out.update({k: float(abs(v)) for k, v in zip(IMAGE_STATS, z)})
    return out


def thresholds(p: Profile, window: int, draws: int = NULL_DRAWS, seed: int = 0) -> dict:
    """{score: (warn, drift)} for windows of `window` frames, from the profile's in-domain null distribution."""
    ref = Rows.of_profile(p)
    n = p.images
    rng = np.random.default_rng(seed)
    null: dict = {k: [] for k in SCORES}
    for _ in range(draws):
        s = scores(ref.take(rng.integers(0, n, window)), ref.take(rng.integers(0, n, n)))
        for k, v in s.items():
            if v is not None:
                null[k].append(v)
    out = {}
    for k in SCORES:
        if not null[k]:
            continue
        warn = float(np.quantile(null[k], NULL_QUANTILE))
        lo, hi = FLOORS.get(k, (0.0, 0.0))
        out[k] = (max(warn, lo), max(DRIFT_FACTOR * warn, hi, max(warn, lo) * 1.000001))
    return out


def level_of(value, limits) -> str:
    if value is None or limits is None:
        return "ok"
    return "drift" if value >= limits[1] else "warn" if value >= limits[0] else "ok"


class DriftTracker:
    """Rolling window of the last `window` frames; scores every `every` frames once the window is full.

    add() is thread-safe (serve calls it from its worker threads); verdict() returns the latest judgement.
    """

    def __init__(self, profile: Profile, window: int = DEFAULT_WINDOW, every: int | None = None,
                 has_embedding: bool = True):
        if window < 2:
            raise ValueError("the drift window needs at least 2 frames")
        self.profile, self.window = profile, window
        self.every = every or max(1, window // 8)
        self.ref = Rows.of_profile(profile)
        if not has_embedding:
            self.ref.emb = None
        self.limits = thresholds(profile, window)
        self.frames: deque = deque(maxlen=window)
        self.seen = 0
        self._lock = threading.Lock()
        self._since = 0
        self.current: dict = {"verdict": "collecting", "scores": {}, "moved": [], "frames_in_window": 0,
                              "frames_seen": 0}

    def add(self, embedding, det_scores, class_ids, stats) -> dict:
        """One frame: its embedding row (or None), its detections' scores and classes, its image statistics."""
        row = self.profile.row(embedding, det_scores, class_ids, stats)
        with self._lock:
            self.frames.append(row)
            self.seen += 1
            self._since += 1
            full = len(self.frames) == self.window
            if full and self._since >= self.every:
                self._since = 0
                self.current = self.judge(list(self.frames))
            else:
                self.current = {**self.current, "frames_in_window": len(self.frames), "frames_seen": self.seen}
            return self.current

    def judge(self, rows: list) -> dict:
        w = Rows.of(rows)
        if self.ref.emb is None:
            w.emb = None
        s = scores(w, self.ref)
        levels = {k: level_of(v, self.limits.get(k)) for k, v in s.items()}
        verdict = max(levels.values(), key=LEVELS.index)
        moved = [self._moved(k, s[k], levels[k], w) for k in SCORES if levels[k] != "ok"]
        return {"verdict": verdict, "scores": {k: None if v is None else round(v, 4) for k, v in s.items()},
                "levels": levels, "thresholds": {k: [round(a, 4), round(b, 4)] for k, (a, b) in self.limits.items()},
                "moved": sorted(moved, key=lambda m: -m["value"] / max(m["warn"], 1e-12)),
                "frames_in_window": len(rows),
                "frames_seen": self.seen, "window": self.window}

    def _moved(self, key: str, value: float, level: str, w: Rows) -> dict:
        """What changed behind one score, in the profile's own terms."""
        warn, drift = self.limits[key]
        out = {"score": key, "level": level, "value": round(value, 4), "warn": round(warn, 4), "drift": round(drift, 4)}
        if key in IMAGE_STATS:
            i = IMAGE_STATS.index(key)
            out.update(window_mean=round(float(w.stats[:, i].mean()), 3),
                       profile_mean=round(float(self.ref.stats[:, i].mean()), 3))
        elif key == "class_psi":
            names = [*self.profile.names, "(no detection)"]
            a = w.cls.sum(0) / max(w.cls.sum(), 1)
            e = self.ref.cls.sum(0) / max(self.ref.cls.sum(), 1)
            top = np.argsort(-np.abs(a - e))[:3]
            out["shares"] = {names[k]: {"window": round(float(a[k]), 3), "profile": round(float(e[k]), 3)}
                             for k in top}
        elif key == "confidence_psi":
            out["detections_per_frame"] = round(float(w.conf.sum()) / len(w.conf), 3)
            out["profile_detections_per_frame"] = round(float(self.ref.conf.sum()) / len(self.ref.conf), 3)
        return out

    def verdict(self) -> dict:
        with self._lock:
            return dict(self.current)
