"""The deployment threshold of an artifact: the confidence it will run at, chosen on val, with P, R and F1 there.

Detections are matched to ground truth exactly as the mAP evaluator does (`Matches`: COCO's greedy rule, by score,
class-aware, each box used once) at IoU 0.5. A detection counts at threshold `conf` when its score is >= conf.
Precision and recall are over all boxes (micro), and per class; F1 is their harmonic mean.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import EdgekitError
from .bootstrap import Matches

MIN_CLASS_BOXES = 20  # classes with fewer val boxes are reported but never fail a gate


def _prf(tp: float, ndet: float, ngt: float) -> tuple[float, float, float]:
    p = tp / ndet if ndet else 0.0
    r = tp / ngt if ngt else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def at_conf(m: Matches, names: list[str], conf: float) -> dict:
    """Precision, recall and F1 at `conf`, overall and per class ({name: {precision, recall, f1, boxes}}, for the
    classes with a box in the split or a detection at conf)."""
    keep = m.score >= conf
    tp50 = m.tp[0] & keep
    ngt = m.ngt.sum(0)
    per = {}
    for k, name in enumerate(names):
        sel = m.cls == k
        if not ngt[k] and not (keep & sel).any():  # a class neither in the split nor detected: nothing to say
            continue
        p, r, f = _prf(float(tp50[sel].sum()), float((keep & sel).sum()), float(ngt[k]))
        per[name] = {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "boxes": int(ngt[k])}
    p, r, f = _prf(float(tp50.sum()), float(keep.sum()), float(ngt.sum()))
    return {"conf": conf, "precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "per_class": per}


def _curve(m: Matches) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate thresholds (each distinct score, descending) and the overall precision and recall at each."""
    order = np.argsort(-m.score, kind="mergesort")
    s, tp = m.score[order], m.tp[0, order].astype(np.float64)
    last = np.r_[s[1:] != s[:-1], True]  # the last detection of each distinct score: all of that score count
    ctp, n = np.cumsum(tp)[last], np.arange(1, len(s) + 1)[last]
    total = max(int(m.ngt.sum()), 1)
    return s[last], ctp / n, ctp / total


def choose_threshold(m: Matches, names: list[str], target_precision: float | None = None,
                     target_recall: float | None = None) -> dict:
    """The deployment threshold: max F1, or the highest recall at >= target_precision, or the highest precision at
    >= target_recall. 'reached' is False when no threshold meets the target (then the closest one is taken)."""
    if target_precision is not None and target_recall is not None:
        raise ValueError("give a target precision or a target recall, not both")
    if not len(m.score):
        return {**at_conf(m, names, 1.0), "chosen_by": "no detections", "reached": False}
    conf, p, r = _curve(m)
    f1 = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0.0)
    reached = True
    if target_precision is not None:
        ok = np.nonzero(p >= target_precision)[0]
        i = int(ok[np.argmax(r[ok])]) if len(ok) else int(np.argmax(p))
        how, reached = f"target_precision {target_precision:g}", bool(len(ok))
    elif target_recall is not None:
        ok = np.nonzero(r >= target_recall)[0]
        i = int(ok[np.argmax(p[ok])]) if len(ok) else int(np.argmax(r))
        how, reached = f"target_recall {target_recall:g}", bool(len(ok))
    else:
        i, how = int(np.argmax(f1)), "max_f1"
    c = math.floor(float(conf[i]) * 1e4) / 1e4  # recorded to 4 decimals, rounded down so it keeps that detection
    return {**at_conf(m, names, c), "chosen_by": how, "reached": reached}


def recall_drops(before: dict, after: dict, max_drop: float, min_boxes: int = MIN_CLASS_BOXES) -> list[dict]:
    """Classes with >= min_boxes boxes whose recall fell by more than max_drop points between two `at_conf` results."""
    out = []
    for name, b in (before.get("per_class") or {}).items():
        a = (after.get("per_class") or {}).get(name)
        if a is None or b["boxes"] < min_boxes:
            continue
        drop = (b["recall"] - a["recall"]) * 100
        if drop > max_drop + 1e-9:
            out.append({"class": name, "recall_fp32": b["recall"], "recall": a["recall"], "drop_points": round(drop, 2),
                        "boxes": b["boxes"]})
    return sorted(out, key=lambda d: -d["drop_points"])


def recall_drop_text(drops: list[dict], conf: float, max_drop: float) -> str:
    """The recall gate's reasons, one '; class ...' clause per class in `drops` (recall_drops), for a message."""
    return "".join(f"; class '{d['class']}' recall {d['recall_fp32']:.3f} (FP32) -> {d['recall']:.3f} at conf "
                   f"{conf:g} (max drop {max_drop:g} points)" for d in drops)


def check_gate_options(max_recall_drop, min_class_boxes: int, target_precision, target_recall,
                       max_class_drop=None) -> None:
    """One line naming the gate or threshold option (quantize's and train-export's alike) whose value cannot work."""
    for opt, v in (("--max-recall-drop", max_recall_drop), ("--max-class-drop", max_class_drop)):
        if v is not None and not v >= 0:
            raise EdgekitError(f"{opt} must be >= 0 points, got {v:g}")
    for opt, v in (("--target-precision", target_precision), ("--target-recall", target_recall)):
        if v is not None and not 0 < v <= 1:
            raise EdgekitError(f"{opt} must be a fraction in (0, 1], got {v:g}")
    if target_precision is not None and target_recall is not None:
        raise EdgekitError("give --target-precision or --target-recall, not both")
    if min_class_boxes < 1:
        raise EdgekitError(f"--min-class-boxes must be >= 1, got {min_class_boxes}")
