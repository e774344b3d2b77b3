"""Dataset profile: counts, box sizes, class balance and label problems."""
from __future__ import annotations

import numpy as np

from ..errors import DataError
from .dataset import Dataset
from ..runtime.images import read_image


def profile(ds: Dataset, splits=("train", "val", "test"), image_sizes: int = 50) -> dict:
    """Counts per split, box-size distribution (sqrt of area, in pixels), imbalance, problems found."""
    out: dict = {"data": str(ds.source), "nc": ds.nc, "names": ds.names, "splits": {}}
    train_counts = np.zeros(ds.nc, np.int64)
    sizes = []
    for split in splits:
        if split not in ds.split_paths:
            continue
        samples = ds.samples(split)
        counts = np.bincount(np.concatenate([s.classes for s in samples]) if samples else np.zeros(0, int),
                             minlength=ds.nc)
        out["splits"][split] = {"images": len(samples), "boxes": int(counts.sum()),
                                "background_images": sum(1 for s in samples if len(s.classes) == 0),
                                "classes_present": int((counts > 0).sum())}
        if split == "train":
            train_counts = counts
            step = max(1, len(samples) // image_sizes)
            for s in samples[::step]:
                try:
                    h, w = read_image(s.image).shape[:2]
                except DataError:
                    continue
                if len(s.boxes):
                    sizes.append(np.sqrt(s.boxes[:, 2] * w * s.boxes[:, 3] * h))
    sz = np.concatenate(sizes) if sizes else np.zeros(0)
    present = train_counts[train_counts > 0]
    out["box_size_px"] = ({"p10": float(np.percentile(sz, 10)), "median": float(np.median(sz)),
                           "p90": float(np.percentile(sz, 90)),
                           "small_frac": float((sz < 32).mean()), "large_frac": float((sz > 96).mean())}
                          if sz.size else {})
    out["class_counts_train"] = {ds.names[i]: int(c) for i, c in enumerate(train_counts)}
    out["imbalance"] = float(present.max() / present.min()) if present.size else None
    problems = list(ds.skipped)
    missing = [ds.names[i] for i, c in enumerate(train_counts) if c == 0]
    if missing and "train" in ds.split_paths:
        problems.append(f"{len(missing)} class(es) have no train boxes: {', '.join(missing[:10])}")
    if out["imbalance"] and out["imbalance"] > 20:
        problems.append(f"class imbalance {out['imbalance']:.0f}:1 between the most and least frequent class")
    out["problems"] = problems
    return out
