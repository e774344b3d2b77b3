"""A trainer's view of a dataset: links to the user's images and labels written by edgekit, in a folder of ours.

Ultralytics writes into the dataset it is given: `labels/<split>.cache`, `*.npy` image caches, and it re-saves
("restores") a JPEG whose last two bytes are not FFD9. Given the view, all of that lands in the view: labels are
ours (validated, de-duplicated), images are symbolic links, except JPEGs it would re-save, which are copied.
Bad samples (skipped with skip_bad) are left out, so the trainer sees exactly what edgekit validated.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from ..errors import DataError
from ..io import atomic_write_text
from .images import jpeg_ends_with_eoi

MIN_SIDE = 10  # Ultralytics drops smaller images without an error (check_image: "image size <10 pixels")


def write_view(ds, yaml_path: Path, splits: list[str]) -> Path:
    """Build the view of `splits` in the folder `.<stem>` beside yaml_path and write the data.yaml; returns its path."""
    yaml_path = Path(yaml_path).resolve()
    root = yaml_path.parent / f".{yaml_path.stem}"
    shutil.rmtree(root, ignore_errors=True)
    doc = {"path": str(root), "names": dict(enumerate(ds.names)), "nc": ds.nc}
    for split in splits:
        _write_split(ds, split, root)
        doc[split] = f"images/{split}"
    atomic_write_text(yaml_path, yaml.safe_dump(doc, sort_keys=False))
    return yaml_path


def _write_split(ds, split: str, root: Path) -> None:
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    stems: set[str] = set()
    kept = 0
    for s in ds.samples(split):
        if s.size and min(s.size) < MIN_SIDE:
            ds._bad(DataError(s.image, f"image is {s.size[0]}x{s.size[1]} pixels; training needs at least "
                                       f"{MIN_SIDE}x{MIN_SIDE}"))
            continue
        stem = _unique_stem(s.image.stem, stems)
        _place(s.image, images / f"{stem}{s.image.suffix}")
        (labels / f"{stem}.txt").write_text(_label_text(s))
        kept += 1
    if not kept:
        raise DataError(ds.source, f"split '{split}' has no usable images")


def _unique_stem(stem: str, used: set[str]) -> str:
    """The image's own name where possible; Ultralytics' glob skips names starting with a dot."""
    base = stem.lstrip(".") or "image"
    name, k = base, 1
    while name.lower() in used:
        name, k = f"{base}_{k}", k + 1
    used.add(name.lower())
    return name


def _place(src: Path, dst: Path) -> None:
    """Link to the user's image; copy a JPEG with trailing bytes, which Ultralytics would re-save in place."""
    if jpeg_ends_with_eoi(src):
        try:
            os.symlink(src.resolve(), dst)
            return
        except OSError:  # no symlinks here (Windows without the privilege): copy
            pass
    shutil.copyfile(src, dst)


def _label_text(s) -> str:
    return "".join(f"{int(c)} {b[0]:.8g} {b[1]:.8g} {b[2]:.8g} {b[3]:.8g}\n" for c, b in zip(s.classes, s.boxes))
