"""A bounded, sampled set of frames from drifted windows, saved for labeling (serve --drift-save DIR).

Off by default. Only frames that arrive while the verdict is "drift" are candidates; each is kept with probability
`rate`, and saving stops for good once the folder's saved files reach `max_mb`: never the full stream. The folder is
claimed like every output (edgekit.outputs: never inside an input, one run at a time). Frames are written as PNG
(lossless), atomically, with one line per frame in frames.jsonl (file, time, the window's scores); the folder is
what `edgekit quantize --calib-from DIR` reads.
"""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from ..io import atomic_path

MANIFEST = "frames.jsonl"


class FrameSaver:
    def __init__(self, folder, rate: float = 0.1, max_mb: float = 200.0, seed: int = 0, log=None):
        if not 0 < rate <= 1:
            raise ValueError(f"the frame sampling rate must be in (0, 1], got {rate}")
        self.folder, self.rate, self.cap = Path(folder), rate, int(max_mb * 2 ** 20)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.used = sum(p.stat().st_size for p in self.folder.glob("*.png"))
        self.saved = 0
        self.full = self.used >= self.cap
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._log = log

    def sample(self, verdict: dict) -> bool:
        """Draw whether a frame arriving now is kept: only while the window is drifted, at `rate`, under the cap."""
        if verdict.get("verdict") != "drift" or self.full:
            return False
        with self._lock:
            return bool(self._rng.random() < self.rate)

    def save(self, image: np.ndarray, verdict: dict) -> Path | None:
        """Write a sampled frame (HWC uint8 BGR) as PNG, unless it would take the folder past its cap; its path."""
        import cv2

        ok, buf = cv2.imencode(".png", image)
        if not ok:
            return None
        with self._lock:
            if self.full or self.used + len(buf) > self.cap:
                if not self.full and self._log:
                    self._log(f"drift frames: {self.folder} reached its cap of {self.cap / 2 ** 20:g} MB; "
                              f"no more frames are saved")
                self.full = True
                return None
            name = f"drift_{time.strftime('%Y%m%dT%H%M%S')}_{self.saved:06d}.png"
            with atomic_path(self.folder / name) as t:
                Path(t).write_bytes(buf.tobytes())
            self.used += len(buf)
            self.saved += 1
            line = {"file": name, "time": time.time(), "scores": verdict.get("scores"),
                    "moved": [m["score"] for m in verdict.get("moved", [])]}
            with open(self.folder / MANIFEST, "a") as f:
                f.write(json.dumps(line) + "\n")
            return self.folder / name

    def offer(self, image: np.ndarray, verdict: dict) -> Path | None:
        """sample() then save(): the frame's path if it was kept."""
        return self.save(image, verdict) if self.sample(verdict) else None
