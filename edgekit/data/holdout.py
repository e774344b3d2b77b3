"""`train-export --holdout-frac F`: a deterministic part of val set aside as the test set, for data without one.

The held-out images confirm the pick and nothing else: selection, the accuracy gates and the deployment thresholds
see val without them. The choice depends on the content of the images and labels only, never on their names, their
order on disk or the machine: the val samples are sorted by the sha256 of image and label, and a fixed-seed draw
takes round(F x n) of them (at least one, and at least one is left).
"""
from __future__ import annotations

import hashlib
import random

from ..errors import EdgekitError
from ..io import sha256_file
from .dataset import Dataset

HOLDOUT_SEED = 0  # fixed: the test set stays the same when --seed changes the training


def sample_key(sample, file_hash=sha256_file) -> str:
    """sha256 of one sample's image and label content."""
    label = file_hash(sample.label) if sample.label else "-"
    return hashlib.sha256(f"{file_hash(sample.image)}\0{label}".encode()).hexdigest()


def hold_out(ds: Dataset, frac: float, seed: int = HOLDOUT_SEED, file_hash=sha256_file) -> tuple[Dataset, dict]:
    """(the dataset with val less the holdout and the holdout as its 'test' split, what was held out)."""
    if not 0 < frac < 1:
        raise EdgekitError(f"--holdout-frac: {frac:g} is not a fraction in (0, 1)")
    if "test" in ds.split_paths:
        raise EdgekitError(f"--holdout-frac: {ds.source} has a test split already: the pick is confirmed on it "
                           f"(--holdout-frac sets aside part of val for data without one)")
    val = ds.samples("val")
    k = round(frac * len(val))
    if k < 1 or k >= len(val):
        raise EdgekitError(f"--holdout-frac: {frac:g} of the {len(val)} val images of {ds.source} leaves "
                           f"{'no test image' if k < 1 else 'no val image'}")
    keyed = sorted(((sample_key(s, file_hash), str(s.image.name), i) for i, s in enumerate(val)))
    drawn = sorted(random.Random(seed).sample(range(len(keyed)), k))
    held = {keyed[j][2] for j in drawn}  # indices into val: both parts keep the dataset's own order
    out = Dataset(ds.source, ds.names, {**ds.split_paths, "test": ds.split_paths["val"]}, skip_bad=ds.skip_bad,
                  skipped=ds.skipped)
    out._cache.update({**ds._cache, "val": [s for i, s in enumerate(val) if i not in held],
                       "test": [s for i, s in enumerate(val) if i in held]})
    info = {"frac": frac, "seed": seed, "images": k, "of": len(val),
            "key": hashlib.sha256("\n".join(keyed[j][0] for j in drawn).encode()).hexdigest()}
    return out, info
