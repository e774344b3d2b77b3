"""Decode raw detector outputs and run class-aware NMS, vectorised in numpy.

Layouts (recorded in the sidecar as output.layout):
- "yolo": (B, 4 + nc, N) rows cx, cy, w, h, class scores (YOLOv8, YOLO11 exports);
- "end2end": (B, N, 6) rows x1, y1, x2, y2, score, class (models exported with NMS inside);
- "rtdetr": (B, N, 4 + nc) rows normalized cx, cy, w, h, class scores;
- "nas": (B, N, 4 + nc) rows x1, y1, x2, y2 in input pixels, class scores (YOLO-NAS exports by edgekit.train.nas).
Semantics follow Ultralytics' non_max_suppression so that mAP matches its val.
"""
from __future__ import annotations

import numpy as np

from .detections import Detections
from .preprocess import Letterbox

MAX_WH = 7680  # per-class offset for class-aware NMS, as Ultralytics


def xywh2xyxy(b: np.ndarray) -> np.ndarray:
    out = np.empty_like(b)
    half_w, half_h = b[:, 2] / 2, b[:, 3] / 2
    out[:, 0] = b[:, 0] - half_w
    out[:, 1] = b[:, 1] - half_h
    out[:, 2] = b[:, 0] + half_w
    out[:, 3] = b[:, 1] + half_h
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy NMS on xyxy boxes; returns kept indices by descending score (stops after max_keep)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    limit = max_keep or len(boxes)
    while order.size and len(keep) < limit:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        iou = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[iou <= iou_thres]
    return np.asarray(keep, np.int64)


def _yolo_candidates(pred: np.ndarray, conf: float, multi_label: bool):
    """pred (4 + nc, N) -> boxes xyxy, scores, classes above conf."""
    scores_all = pred[4:]
    nc = scores_all.shape[0]
    best = scores_all.max(0)
    cand = np.flatnonzero(best > conf)
    if not cand.size:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    boxes = xywh2xyxy(pred[:4, cand].T)
    sc = scores_all[:, cand]
    if multi_label and nc > 1:
        j, i = np.nonzero(sc > conf)
        return boxes[i], sc[j, i], j.astype(np.int64)
    cls = sc.argmax(0)
    return boxes, best[cand], cls.astype(np.int64)


def postprocess(raw: np.ndarray, boxes_info: list[Letterbox], names, layout: str = "yolo",
                conf: float = 0.25, iou: float = 0.7, max_det: int = 300, multi_label: bool = False,
                agnostic: bool = False, max_nms: int = 30000, imgsz=(640, 640)) -> list[Detections]:
    """Raw network output for a batch -> one Detections per image, boxes in original pixels."""
    out = []
    for k, info in enumerate(boxes_info):
        pred = raw[k]
        if layout == "end2end":
            m = pred[:, 4] > conf
            p = pred[m][:max_det]
            boxes, scores, cls = p[:, :4].astype(np.float32), p[:, 4], p[:, 5].astype(np.int64)
        else:
            if layout == "rtdetr":
                p = pred.T.copy()
                p[[0, 2]] *= imgsz[1]
                p[[1, 3]] *= imgsz[0]
                pred = p
            elif layout == "nas":  # xyxy rows -> the yolo (4 + nc, N) cx, cy, w, h layout
                p = pred.T.copy()
                p[0], p[1] = (pred[:, 0] + pred[:, 2]) / 2, (pred[:, 1] + pred[:, 3]) / 2
                p[2], p[3] = pred[:, 2] - pred[:, 0], pred[:, 3] - pred[:, 1]
                pred = p
            boxes, scores, cls = _yolo_candidates(pred, conf, multi_label)
            if len(scores) > max_nms:
                top = np.argsort(-scores, kind="stable")[:max_nms]
                boxes, scores, cls = boxes[top], scores[top], cls[top]
            if layout == "rtdetr":
                top = np.argsort(-scores, kind="stable")[:max_det]
            else:
                offset = 0 if agnostic else cls[:, None].astype(boxes.dtype) * MAX_WH
                top = nms(boxes + offset, scores, iou, max_det)
            boxes, scores, cls = boxes[top], scores[top], cls[top]
        boxes = info.to_original(boxes.astype(np.float32, copy=True))
        out.append(Detections(boxes, scores.astype(np.float32), cls, names))
    return out
