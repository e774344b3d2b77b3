"""Calibration sets: a seeded, class-balanced sample of the train split, preprocessed by the runtime's letterbox.

One abstraction (after nncf.Dataset: an iterable of items plus a transform) feeds every backend:
NNCF (`to_nncf()`), ONNX Runtime (`edgekit.quantize.onnxruntime.calibration_reader`, a CalibrationDataReader over
`batches()`) and TensorRT (`batches()` behind the calibrator).
"""
from __future__ import annotations

import hashlib
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import DataError
from ..io import sha256_file
from .dataset import Dataset, Sample
from ..runtime.images import read_image

DEFAULT_SIZE = 300
WARN_BELOW = 100
REFUSE_BELOW = 16


class CalibrationWarning(UserWarning):
    """A calibration set is smaller than recommended or drawn from the evaluation split."""


def balanced_sample(samples: list[Sample], size: int, seed: int = 0) -> list[Sample]:
    """Greedy class balance: repeatedly take an unused image of the class seen least so far, rarest classes first.

    Images without labels fill the remainder. Deterministic for a seed; the result keeps the chosen order.
    """
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    if size >= len(samples):
        return [samples[i] for i in order]
    by_class: dict[int, list[int]] = {}
    for i in order:
        for c in sorted(set(samples[i].classes.tolist())):
            by_class.setdefault(int(c), []).append(i)
    rarity = {c: len(v) for c, v in by_class.items()}
    seen = {c: 0 for c in by_class}
    cursor = {c: 0 for c in by_class}
    used: set[int] = set()
    chosen: list[int] = []
    while len(chosen) < size:
        open_classes = [c for c in by_class if cursor[c] < len(by_class[c])]
        if not open_classes:
            break
        c = min(open_classes, key=lambda k: (seen[k], rarity[k], k))
        pool = by_class[c]
        while cursor[c] < len(pool) and pool[cursor[c]] in used:
            cursor[c] += 1
        if cursor[c] >= len(pool):
            continue
        i = pool[cursor[c]]
        used.add(i)
        chosen.append(i)
        for k in set(samples[i].classes.tolist()):
            seen[int(k)] += 1
    for i in order:
        if len(chosen) >= size:
            break
        if i not in used:
            used.add(i)
            chosen.append(i)
    return [samples[i] for i in chosen]


@dataclass
class CalibrationSet:
    """Images to calibrate on plus the transform that turns one into a network input (1, 3, H, W)."""

    items: list[Path]
    imgsz: tuple[int, int] = (640, 640)
    pad_value: int = 114
    dtype: type = np.float32
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Path]:
        return iter(self.items)

    def transform(self, item) -> np.ndarray:
        """An image path -> a letterboxed NCHW float blob of batch 1 (edgekit.runtime.preprocess)."""
        from ..runtime.preprocess import preprocess

        blob, _ = preprocess([read_image(item)], self.imgsz, self.pad_value, dtype=self.dtype)
        return blob

    def batches(self, batch_size: int = 1, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """Stacked blobs of `batch_size` images; the last batch is padded by repeating images (static shapes)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = self.items[start:stop]
        for s in range(0, len(items), batch_size):
            chunk = items[s:s + batch_size]
            while len(chunk) < batch_size:
                chunk = chunk + items[:batch_size - len(chunk)]
            yield np.concatenate([self.transform(p) for p in chunk])

    def to_nncf(self):
        """The same items and transform as an nncf.Dataset."""
        from .._imports import require

        nncf = require("nncf", "OpenVINO INT8 quantization")
        return nncf.Dataset(self.items, self.transform)

    def manifest(self, with_hashes: bool = True) -> dict:
        """What the sidecar records: split, size, seed, files with sha256, one digest over all of them."""
        root = Path(self.info.get("root", "."))
        files = []
        digest = hashlib.sha256()
        for p in self.items:
            rel = _relative(p, root)
            h = sha256_file(p) if with_hashes else None
            files.append({"path": rel, "sha256": h})
            digest.update(f"{rel}:{h}\n".encode())
        return {**{k: v for k, v in self.info.items() if k != "root"}, "size": len(self.items),
                "imgsz": list(self.imgsz), "preprocess": "edgekit.runtime.preprocess.letterbox",
                "sha256": digest.hexdigest(), "files": files}


def _relative(p: Path, root: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(p)


def calibration_set(ds: Dataset, imgsz=(640, 640), size: int = DEFAULT_SIZE, split: str = "train", seed: int = 0,
                    force: bool = False, eval_split: str | None = "val", pad_value: int = 114) -> CalibrationSet:
    """Draw a calibration set from a split; warn when small, refuse below 16 images unless force."""
    if size < 1:
        raise DataError(ds.source, f"calibration size must be >= 1, got {size}")
    if split not in ds.split_paths:
        have = ", ".join(ds.split_paths) or "none"
        raise DataError(ds.source, f"calibration split '{split}' is not defined (splits: {have}); "
                                   f"pass another with --calib-split")
    if eval_split is not None and split == eval_split:
        warnings.warn(f"{ds.source}: calibrating on the evaluation split '{split}': the accuracy gate is optimistic",
                      CalibrationWarning, stacklevel=2)
    samples = ds.samples(split)
    n = min(size, len(samples))
    if n < REFUSE_BELOW and not force:
        raise DataError(ds.source, f"split '{split}' gives only {n} calibration images, fewer than {REFUSE_BELOW}: "
                                   f"INT8 ranges would be unreliable (add images, or pass --force)")
    if size > len(samples):
        warnings.warn(f"{ds.source}: split '{split}' has {len(samples)} images, fewer than the {size} requested; "
                      f"calibrating on all {len(samples)}", CalibrationWarning, stacklevel=2)
    if n < WARN_BELOW:
        warnings.warn(f"{ds.source}: calibrating on {n} images, fewer than the {WARN_BELOW} recommended "
                      f"({DEFAULT_SIZE} is the default)", CalibrationWarning, stacklevel=2)
    chosen = balanced_sample(samples, n, seed)
    covered = sorted({int(c) for s in chosen for c in s.classes.tolist()})
    present = sorted({int(c) for s in samples for c in s.classes.tolist()})
    info = {"split": split, "requested": size, "seed": seed, "strategy": "class-balanced (greedy, rarest first)",
            "classes_covered": len(covered), "classes_in_split": len(present), "forced": bool(force and n < REFUSE_BELOW),
            "data": str(ds.source), "root": str(Path(ds.source).parent)}
    return CalibrationSet([s.image for s in chosen], tuple(imgsz), pad_value, info=info)


def calibration_from_folder(folder, imgsz=(640, 640), size: int = DEFAULT_SIZE, seed: int = 0, force: bool = False,
                            pad_value: int = 114) -> CalibrationSet:
    """A calibration set from a folder of unlabeled images (e.g. frames from the deployment), read only.

    A seeded sample of `size` images when the folder holds more; every image is checked (header, size limits of
    edgekit.runtime.images) before any calibration work, so a bad file fails here, naming itself.
    """
    from ..runtime.images import list_images

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "--calib-from must name a folder of images")
    found = list_images(folder)
    n = min(size, len(found))
    if n < REFUSE_BELOW and not force:
        raise DataError(folder, f"holds {len(found)} images, fewer than {REFUSE_BELOW}: INT8 ranges would be "
                                f"unreliable (add images, or pass --force)")
    chosen = sorted(random.Random(seed).sample(found, n)) if n < len(found) else found
    for p in chosen:
        read_image(p)
    if n < WARN_BELOW:
        warnings.warn(f"{folder}: calibrating on {n} images, fewer than the {WARN_BELOW} recommended "
                      f"({DEFAULT_SIZE} is the default)", CalibrationWarning, stacklevel=2)
    info = {"split": None, "folder": str(folder.resolve()), "images_in_folder": len(found), "requested": size,
            "seed": seed, "strategy": "seeded random sample of an unlabeled folder", "classes_covered": None,
            "classes_in_split": None, "forced": bool(force and n < REFUSE_BELOW), "root": str(folder.resolve())}
    return CalibrationSet(chosen, tuple(imgsz), pad_value, info=info)
