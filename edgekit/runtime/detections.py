"""Detections of one image: xyxy boxes in original-image pixels, scores, class ids and names."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detections:
    boxes: np.ndarray  # (n, 4) float32, x1 y1 x2 y2 in original-image pixels
    scores: np.ndarray  # (n,) float32
    class_ids: np.ndarray  # (n,) int64
    names: list[str] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def labels(self) -> list[str]:
        return [self.names[int(c)] if 0 <= int(c) < len(self.names) else str(int(c)) for c in self.class_ids]

    def filter(self, mask) -> "Detections":
        return Detections(self.boxes[mask], self.scores[mask], self.class_ids[mask], self.names)

    def to_list(self) -> list[dict]:
        return [
            {"box": [round(float(v), 2) for v in b], "score": round(float(s), 4), "class_id": int(c), "label": lbl}
            for b, s, c, lbl in zip(self.boxes, self.scores, self.class_ids, self.labels)
        ]

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for lbl in self.labels:
            counts[lbl] = counts.get(lbl, 0) + 1
        return f"Detections({len(self)}: {', '.join(f'{v} {k}' for k, v in counts.items()) or 'none'})"


def padded_batch(dets: list) -> dict:
    """Batched outputs BOXES [n, k, 4], SCORES [n, k], LABELS [n, k], padded to the largest k with score 0 and
    label -1 (as Triton's ensemble returns them; edgekit serve and the Triton post model both use this)."""
    k = max([len(d) for d in dets] + [0])
    boxes = np.zeros((len(dets), k, 4), np.float32)
    scores = np.zeros((len(dets), k), np.float32)
    labels = np.full((len(dets), k), -1, np.int64)
    for i, d in enumerate(dets):
        boxes[i, :len(d)], scores[i, :len(d)], labels[i, :len(d)] = d.boxes, d.scores, d.class_ids
    return {"BOXES": boxes, "SCORES": scores, "LABELS": labels}
