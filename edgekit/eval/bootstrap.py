"""Per-image matches, per-class AP and bootstrap intervals of mAP50-95.

COCO matching (greedy, by score, each ground-truth box used once per IoU threshold, area range "all", at most
`max_det` detections per image and class) is done once per image; a bootstrap resample then only re-weights the
images (an image drawn twice counts twice), so accumulating a resample is a few cumulative sums per class. With
every weight 1 this reproduces COCOeval's mAP50-95 (the same 10 IoU thresholds and 101 recall points); the tests
compare it with faster-coco-eval. Resampling images, not boxes, keeps the dependence between boxes of one image.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

IOU_THRS = np.linspace(0.5, 0.95, 10)
REC_THRS = np.linspace(0.0, 1.0, 101)
RESAMPLES, SEED = 1000, 0  # the interval of a row
PAIRED_RESAMPLES = 200  # paired differences: many pairs per report, and >= 200 as the issue asks


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xywh boxes a (n, 4) and b (m, 4)."""
    ax2, ay2, bx2, by2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.clip(np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _match(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(T, D) true-positive flags of score-sorted detections dt against gt boxes, COCO's greedy rule."""
    tp = np.zeros((len(IOU_THRS), len(dt)), bool)
    if not len(gt) or not len(dt):
        return tp
    ious = _iou(dt, gt)
    taken = np.zeros((len(IOU_THRS), len(gt)), bool)
    thr = np.minimum(IOU_THRS, 1 - 1e-10)
    for d in range(len(dt)):
        cand = np.where(taken, -1.0, ious[d][None, :])
        g = cand.argmax(1)
        hit = cand[np.arange(len(thr)), g] >= thr
        tp[hit, d] = True
        taken[np.nonzero(hit)[0], g[hit]] = True
    return tp


@dataclass
class Matches:
    """Every detection's image, class, score and true-positive flags per IoU threshold; gt counts per image/class."""
    img: np.ndarray    # (N,) image index 0..n_images-1
    cls: np.ndarray    # (N,) class id
    score: np.ndarray  # (N,)
    tp: np.ndarray     # (T, N) bool
    ngt: np.ndarray    # (n_images, nc) ground-truth boxes

    @property
    def n_images(self) -> int:
        return int(self.ngt.shape[0])

    @classmethod
    def build(cls, gt_images: list[dict], gt_anns: list[dict], dets: np.ndarray, nc: int, max_det: int = 300):
        """From the evaluator's inputs: gt (pixel xywh, image ids) and dets (N, 7: image_id, x, y, w, h, score, class)."""
        index = {im["id"]: i for i, im in enumerate(gt_images)}
        ngt = np.zeros((len(gt_images), nc), np.int32)
        gts: dict = {}
        for a in gt_anns:
            i, c = index[a["image_id"]], int(a["category_id"])
            ngt[i, c] += 1
            gts.setdefault((i, c), []).append(a["bbox"])
        dets = np.asarray(dets, np.float64).reshape(-1, 7)
        parts = []
        img_of = np.array([index[int(x)] for x in dets[:, 0]], np.int64) if len(dets) else np.zeros(0, np.int64)
        for i in range(len(gt_images)):
            di = dets[img_of == i]
            for c in np.unique(di[:, 6]).astype(int):
                d = di[di[:, 6] == c]
                d = d[np.argsort(-d[:, 5], kind="mergesort")][:max_det]
                g = np.asarray(gts.get((i, c), []), np.float64).reshape(-1, 4)
                parts.append((np.full(len(d), i), np.full(len(d), c), d[:, 5], _match(d[:, 1:5], g)))
        if not parts:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros((len(IOU_THRS), 0), bool), ngt)
        return cls(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                   np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts], 1), ngt)

    def save(self, path) -> Path:
        from ..io import atomic_path

        with atomic_path(Path(path)) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, img=self.img.astype(np.int32), cls=self.cls.astype(np.int16),
                                    score=self.score.astype(np.float32), tp=np.packbits(self.tp, axis=0),
                                    ngt=self.ngt)
        return Path(path)

    @classmethod
    def load(cls, path) -> "Matches":
        d = np.load(path)
        n = len(d["img"])
        tp = np.unpackbits(d["tp"], axis=0, count=len(IOU_THRS)).astype(bool).reshape(len(IOU_THRS), n)
        return cls(d["img"].astype(np.int64), d["cls"].astype(np.int64), d["score"].astype(np.float64), tp, d["ngt"])

    def _sorted(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Class k's detections by descending score (stable): their images and tp flags, cached."""
        cache = self.__dict__.setdefault("_cache", {})
        if k not in cache:
            sel = np.nonzero(self.cls == k)[0]
            sel = sel[np.argsort(-self.score[sel], kind="mergesort")]
            cache[k] = (self.img[sel], self.tp[:, sel])
        return cache[k]

    def class_ap(self, weights: np.ndarray | None = None) -> np.ndarray:
        """AP50-95 of each class (nan where the weighted images hold no box of it); weights: per-image counts."""
        w = np.ones(self.n_images) if weights is None else np.asarray(weights, np.float64)
        npig = w @ self.ngt
        out = np.full(self.ngt.shape[1], np.nan)
        for k in np.nonzero(npig > 0)[0]:
            img, tp_all = self._sorted(k)
            wd = w[img]
            keep = wd > 0
            if not keep.any():
                out[k] = 0.0
                continue
            wd, tp = wd[keep], tp_all[:, keep]
            tps = np.cumsum(tp * wd, 1)
            fps = np.cumsum(~tp * wd, 1)
            rc = tps / npig[k]
            pr = np.maximum.accumulate((tps / (tps + fps))[:, ::-1], 1)[:, ::-1]
            q = np.zeros((len(IOU_THRS), len(REC_THRS)))
            for t in range(len(IOU_THRS)):
                idx = np.searchsorted(rc[t], REC_THRS, side="left")
                ok = idx < len(wd)
                q[t, ok] = pr[t, idx[ok]]
            out[k] = q.mean()
        return out

    def class_ap_batch(self, weights: np.ndarray, chunk: int = 64) -> np.ndarray:
        """class_ap for many weight vectors at once: (B, n_images) -> (B, nc), nan where a class has no box.

        Zero-weight detections stay in the cumulative sums: they repeat the previous (recall, precision) point,
        which changes neither the precision envelope nor the interpolated values, so the result equals class_ap.
        """
        W = np.atleast_2d(np.asarray(weights, np.float64))
        out = np.full((len(W), self.ngt.shape[1]), np.nan)
        npig = W @ self.ngt
        T, R = len(IOU_THRS), len(REC_THRS)
        for k in np.nonzero((npig > 0).any(0))[0]:
            img, tp = self._sorted(k)
            D = len(img)
            for b0 in range(0, len(W), chunk):
                w, n = W[b0:b0 + chunk], npig[b0:b0 + chunk, k]
                if D == 0:
                    out[b0:b0 + chunk, k] = np.where(n > 0, 0.0, np.nan)
                    continue
                wd = w[:, img].astype(np.float32)[:, None, :]  # (b, 1, D); counts: exact in float32
                tps = np.cumsum(tp[None] * wd, 2, dtype=np.float32).astype(np.float64)
                fps = np.cumsum(~tp[None] * wd, 2, dtype=np.float32).astype(np.float64)
                tot = tps + fps
                pr = np.divide(tps, tot, out=np.zeros_like(tps), where=tot > 0)
                pr = np.maximum.accumulate(pr[..., ::-1], 2)[..., ::-1].reshape(-1, D)
                rc = (tps / np.where(n > 0, n, 1)[:, None, None]).reshape(-1, D)
                q = np.zeros((len(rc), R))
                for r in range(len(rc)):
                    idx = np.searchsorted(rc[r], REC_THRS, side="left")
                    hit = idx < D
                    q[r, hit] = pr[r, idx[hit]]
                ap = q.reshape(len(w), T, R).mean((1, 2))
                out[b0:b0 + chunk, k] = np.where(n > 0, ap, np.nan)
        return out

    def map50_95_batch(self, weights: np.ndarray) -> np.ndarray:
        """map50_95 for each row of weights (B, n_images)."""
        ap = self.class_ap_batch(weights)
        valid = np.isfinite(ap)
        return np.where(valid.any(1), np.nansum(np.where(valid, ap, 0), 1) / np.maximum(valid.sum(1), 1), 0.0)

    def map50_95(self, weights: np.ndarray | None = None) -> float:
        ap = self.class_ap(weights)
        return float(np.nanmean(ap)) if np.isfinite(ap).any() else 0.0

    def resample_weights(self, n: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
        """(n, n_images) counts: each row draws n_images images with replacement, seeded."""
        k = self.n_images
        return np.random.default_rng(seed).multinomial(k, np.full(k, 1.0 / k), size=n).astype(np.float64)


def bootstrap_ci(m: Matches, n: int = RESAMPLES, seed: int = SEED, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval [lo, hi] of mAP50-95 over images (n resamples, fixed seed)."""
    stats = m.map50_95_batch(m.resample_weights(n, seed))
    a = (1 - level) / 2
    return [round(float(np.quantile(stats, a)), 5), round(float(np.quantile(stats, 1 - a)), 5)]


def paired_diff(a: Matches, b: Matches, n: int = PAIRED_RESAMPLES, seed: int = SEED, level: float = 0.95) -> dict:
    """mAP50-95 of a minus b in points, with the paired bootstrap interval (the same image draws for both)."""
    from ..errors import EdgekitError

    if a.ngt.shape != b.ngt.shape or not np.array_equal(a.ngt, b.ngt):
        raise EdgekitError("paired comparison of two evaluations on different images")
    ws = a.resample_weights(n, seed)
    d = (a.map50_95_batch(ws) - b.map50_95_batch(ws)) * 100
    q = (1 - level) / 2
    lo, hi = float(np.quantile(d, q)), float(np.quantile(d, 1 - q))
    return {"diff": round((a.map50_95() - b.map50_95()) * 100, 3), "ci": [round(lo, 3), round(hi, 3)],
            "images": a.n_images}


def images_to_separate(diff: float, ci: list[float], images: int) -> int | None:
    """Val images needed for the interval of a difference to exclude 0 (the half-width shrinks as 1/sqrt(n))."""
    half = (ci[1] - ci[0]) / 2
    if abs(diff) < 1e-9 or half <= 0:
        return None
    return int(np.ceil(images * (half / abs(diff)) ** 2))


def class_drops(before_per_class: dict, after_per_class: dict, instances: dict, min_instances: int = 20,
                max_drop: float = 3.0) -> list[tuple[str, float]]:
    """Classes with >= min_instances val boxes whose AP50-95 fell by more than max_drop points, worst first."""
    out = []
    for name, ap in (before_per_class or {}).items():
        after = (after_per_class or {}).get(name)
        if ap is None or after is None or (instances or {}).get(name, 0) < min_instances:
            continue
        drop = (ap - after) * 100
        if drop > max_drop + 1e-9:
            out.append((name, round(drop, 2)))
    return sorted(out, key=lambda x: -x[1])
