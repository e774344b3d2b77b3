"""Letterbox preprocessing: the one path shared by calibration, eval, bench and Engine.

It reproduces Ultralytics' LetterBox (auto=False, center=True, scaleup=True, pad value 114,
cv2.INTER_LINEAR) so that an artifact sees the same pixels here as under Ultralytics.

Thin images (a 20000x20 strip at imgsz 320): a side that the common gain would round to 0 px is drawn 1 px wide
instead (that axis alone is stretched), and boxes map back through each axis' own scale, so they land inside the
image where the network saw them. Every other image keeps the one gain of Ultralytics.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Letterbox:
    """How one image was mapped into the network input: scale, then padding."""

    gain: float
    pad_left: int
    pad_top: int
    orig_shape: tuple[int, int]  # (h, w)

    @property
    def scales(self) -> tuple[float, float]:
        """(x, y) scale of the resize: the gain, or 1/side along a side drawn 1 px wide (see the module's note)."""
        h, w = self.orig_shape
        return tuple(self.gain if int(round(side * self.gain)) >= 1 else 1.0 / side for side in (w, h))

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Map xyxy boxes from network input pixels back to original-image pixels (in place, clipped)."""
        boxes[:, [0, 2]] -= self.pad_left
        boxes[:, [1, 3]] -= self.pad_top
        sx, sy = self.scales
        boxes[:, 0::2] /= sx
        boxes[:, 1::2] /= sy
        h, w = self.orig_shape
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        return boxes


def _scaled(side: int, gain: float) -> int:
    """A side's length after the resize: rounded as Ultralytics does, but never 0 px."""
    return max(1, int(round(side * gain)))


def letterbox(img: np.ndarray, new_shape=(640, 640), color: int = 114, scaleup: bool = True,
              auto: bool = False, stride: int = 32) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping aspect ratio and pad to new_shape (h, w); returns the HWC image and its Letterbox."""
    h, w = img.shape[:2]
    nh, nw = new_shape
    r = min(nh / h, nw / w)
    if not scaleup:
        r = min(r, 1.0)
    uw, uh = _scaled(w, r), _scaled(h, r)
    dw, dh = nw - uw, nh - uh
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    if (w, h) != (uw, uh):
        img = cv2.resize(img, (uw, uh), interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    if top or bottom or left or right:
        img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(color, color, color))
    return img, Letterbox(r, left, top, (h, w))


def to_blob(images: list[np.ndarray], out: np.ndarray | None = None, dtype=np.float32) -> np.ndarray:
    """Stack letterboxed HWC BGR uint8 images into an NCHW RGB blob scaled to [0, 1]."""
    n = len(images)
    h, w = images[0].shape[:2]
    if out is None or out.shape != (n, 3, h, w) or out.dtype != dtype:
        out = np.empty((n, 3, h, w), dtype)
    for i, im in enumerate(images):
        out[i] = im[..., ::-1].transpose(2, 0, 1)
    out *= np.asarray(1.0 / 255.0, dtype)
    return out


def preprocess(images: list[np.ndarray], imgsz=(640, 640), color: int = 114, dtype=np.float32):
    """Letterbox a list of BGR images and stack them: returns (blob, [Letterbox])."""
    boxed, infos = [], []
    for im in images:
        if im.ndim == 2:
            im = cv2.cvtColor(im, cv2.COLOR_GRAY2BGR)
        elif im.shape[2] == 4:
            im = cv2.cvtColor(im, cv2.COLOR_BGRA2BGR)
        b, info = letterbox(im, imgsz, color)
        boxed.append(b)
        infos.append(info)
    return to_blob(boxed, dtype=dtype), infos
