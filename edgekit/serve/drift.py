"""Drift tracking inside `edgekit serve`: every served image feeds the rolling window (edgekit.drift.tracker).

The image statistics are taken where the image is decoded (prepare), the detections and the embedding where the
response is made (finish), at the profile's threshold: a request that asks for another conf / iou / max_det gets its
own detections, and the window gets the ones the profile was made with.
"""
from __future__ import annotations

import numpy as np

from ..drift.profile import load_profile
from ..drift.scores import image_stats
from ..drift.tracker import DriftTracker


class Drift:
    """The tracker of one served artifact, or the reason there is none ("no profile")."""

    def __init__(self, engine, window: int, every: int | None = None):
        self.tracker, self.reason = None, None
        prof = load_profile(engine.path, engine.meta.raw)
        if prof is None:
            self.reason = ("the artifact carries no drift profile (sidecar key 'drift_profile'): export or quantize "
                           "it with --data (or run train-export) to add one")
            return
        if prof.names and list(prof.names) != list(engine.names):
            self.reason = "the drift profile's class names differ from the artifact's: not used"
            return
        self.tracker = DriftTracker(prof, window, every, has_embedding=engine.has_embedding)

    def observe(self, images: list, frames=None) -> list | None:
        """Per image: (its statistics, the image itself when the frame saver drew it: only those are held on to);
        None without a tracker."""
        if self.tracker is None:
            return None
        now = self.tracker.verdict() if frames is not None else {}
        return [(image_stats(im), im if frames is not None and frames.sample(now) else None) for im in images]

    def update(self, engine, raws, embs, infos, dets, overrides, seen, frames) -> None:
        """Feed the window with each image of a finished request (and offer drifted frames to the saver)."""
        if self.tracker is None:
            return
        p = self.tracker.profile
        if any(k in overrides for k in ("conf", "iou", "max_det")) or engine.conf > p.conf:  # the profile's own
            dets = engine.postprocess(np.stack(raws), infos, conf=p.conf, iou=engine.iou, max_det=engine.max_det)
        for k, (d, (stats, image)) in enumerate(zip(dets, seen)):
            v = self.tracker.add(None if embs is None else embs[k], d.scores, d.class_ids, stats)
            if frames is not None and image is not None:  # drawn while the window was drifted
                frames.save(image, v)

    def verdict(self) -> dict:
        if self.tracker is None:
            return {"verdict": "no profile", "reason": self.reason}
        return self.tracker.verdict()
