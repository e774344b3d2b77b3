"""A toy runtime backend, the whole of it in one file: a numpy "identity detector" reading a .npz.

The .npz holds, for each image it knows, the fingerprint of its letterboxed input and the raw YOLO output
(4 + nc, N) that reproduces that image's labels; any other input gives no detections. So everything around
the backend is real: Engine's letterbox, batch padding (the model's batch is fixed at 2), the shared decode
and NMS, eval's mAP, bench's runners. `write_toy` builds such a file from a dataset split.
"""
from __future__ import annotations

import hashlib

import numpy as np

from edgekit.runtime.backends.base import Backend


def fingerprint(image_blob: np.ndarray) -> str:
    """sha1 of one preprocessed CHW float32 input."""
    return hashlib.sha1(np.ascontiguousarray(image_blob, np.float32).tobytes()).hexdigest()


class ToyBackend(Backend):
    name = "toy"
    suffixes = (".npz",)
    module = "numpy"
    device_kinds = ("cpu",)
    executes = ("fp32",)

    @classmethod
    def runner(cls, device: str):
        from edgekit.runtime.concurrency import ThreadedRunner

        return ThreadedRunner

    def load_impl(self) -> None:
        with np.load(self.path) as z:
            self.table = dict(zip(z["keys"].tolist(), z["raw"]))
            self._batch = int(z["batch"])
            self.blank = np.zeros(z["raw"].shape[1:], np.float32)

    def infer_impl(self, blob: np.ndarray) -> np.ndarray:
        return np.stack([self.table.get(fingerprint(x), self.blank) for x in blob])


def raw_output(classes, boxes_xyxy, lb, nc: int, n: int) -> np.ndarray:
    """The (4 + nc, n) YOLO output whose decode gives these boxes (original pixels) back through letterbox lb."""
    raw = np.zeros((4 + nc, n), np.float32)
    for j, (c, (x1, y1, x2, y2)) in enumerate(zip(classes, boxes_xyxy)):
        x1, x2 = x1 * lb.gain + lb.pad_left, x2 * lb.gain + lb.pad_left
        y1, y2 = y1 * lb.gain + lb.pad_top, y2 * lb.gain + lb.pad_top
        raw[:4, j] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        raw[4 + int(c), j] = 0.9
    return raw


def write_toy(path, ds, split: str, imgsz: int, keep=None):
    """A .npz (and its sidecar) that detects exactly the labels of the split's images (the first `keep` only)."""
    from edgekit import Engine
    from edgekit.runtime.meta import write_sidecar
    from edgekit.runtime.preprocess import preprocess

    samples = ds.samples(split)[:keep]
    n = max(1, max(len(s.classes) for s in samples))
    keys, raws = [], []
    for s in samples:
        img = Engine.decode(s.image)
        blob, (lb,) = preprocess([img], (imgsz, imgsz))
        keys.append(fingerprint(blob[0]))
        raws.append(raw_output(s.classes, s.boxes_xyxy(img.shape[1], img.shape[0]), lb, ds.nc, n))
    np.savez(path, keys=np.array(keys), raw=np.stack(raws), batch=np.int64(2))
    write_sidecar(path, {"names": list(ds.names), "imgsz": [imgsz, imgsz], "input": {"batch": 2},
                         "precision": "fp32", "output": {"layout": "yolo"}})
    return path
