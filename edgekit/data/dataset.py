"""Ultralytics data.yaml and COCO json datasets, validated before use."""
from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..errors import DataError
from ..runtime.images import IMAGE_SUFFIXES, list_images
from .images import verify_image


class LabelWarning(UserWarning):
    """A label file was repaired on reading (exact duplicate lines removed, as Ultralytics does)."""


@dataclass
class Sample:
    """One image with its labels: classes (n,) and boxes (n, 4) as normalized cx, cy, w, h."""

    image: Path
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    label: Path | None = None
    size: tuple[int, int] | None = None  # (width, height) of the stored image, from validation

    def boxes_xyxy(self, width: int, height: int) -> np.ndarray:
        """Boxes in pixels, x1 y1 x2 y2."""
        b = self.boxes.astype(np.float64)
        out = np.empty_like(b)
        out[:, 0] = (b[:, 0] - b[:, 2] / 2) * width
        out[:, 1] = (b[:, 1] - b[:, 3] / 2) * height
        out[:, 2] = (b[:, 0] + b[:, 2] / 2) * width
        out[:, 3] = (b[:, 1] + b[:, 3] / 2) * height
        return out


@dataclass
class Dataset:
    """A detection dataset: class names and split name -> samples."""

    source: Path
    names: list[str]
    split_paths: dict[str, list[Path]]
    skip_bad: bool = False
    skipped: list[str] = field(default_factory=list)
    _cache: dict[str, list[Sample]] = field(default_factory=dict, repr=False)

    @property
    def nc(self) -> int:
        return len(self.names)

    @property
    def splits(self) -> list[str]:
        return list(self.split_paths)

    def samples(self, split: str) -> list[Sample]:
        """Samples of a split, labels parsed and validated; DataError on the first bad file."""
        if split not in self._cache:
            if split not in self.split_paths:
                have = ", ".join(self.split_paths) or "none"
                raise DataError(self.source, f"split '{split}' is not defined (splits: {have})")
            self._cache[split] = self._load_split(split)
        return self._cache[split]

    def _bad(self, err: DataError) -> None:
        if not self.skip_bad:
            raise err
        self.skipped.append(str(err))

    def _load_split(self, split: str) -> list[Sample]:
        images = _expand_images(self.source, split, self.split_paths[split])
        out = []
        for img in images:
            try:
                size = verify_image(img)
                label = _label_path(img)
                classes, boxes = parse_label_file(label, self.nc) if label.exists() else _empty()
            except DataError as e:
                self._bad(e)
                continue
            out.append(Sample(img, classes, boxes, label if label.exists() else None, size))
        if not out:
            raise DataError(self.source, f"split '{split}' has no usable images")
        return out

    def to_ultralytics_yaml(self, path: Path, splits=None) -> Path:
        """Write an Ultralytics data.yaml over a view of the validated samples (folder `.<stem>` beside it).

        The view links to the user's images and holds labels written by edgekit, so whatever Ultralytics writes
        (label caches, re-saved JPEGs) lands in the view and the user's dataset is never modified.
        """
        from .view import write_view

        return write_view(self, Path(path), list(splits or self.split_paths))


def _empty():
    return np.zeros(0, np.int64), np.zeros((0, 4), np.float32)


def _label_path(img: Path) -> Path:
    """Ultralytics convention: the last /images/ in the path becomes /labels/, suffix .txt."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    s = str(img)
    if sa in s:
        s = sb.join(s.rsplit(sa, 1))
    return Path(s).with_suffix(".txt")


def parse_label_file(path: Path, nc: int):
    """Parse a YOLO label file: 'class cx cy w h' per line, normalized to [0, 1]; duplicates dropped with a warning.

    UTF-8 text; a byte-order mark at the start (Windows editors write one) is not part of the first line.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(path, "label file is not text") from None
    except OSError as e:
        raise DataError(path, f"cannot read label file ({e.strerror})") from None
    rows: dict[tuple, None] = {}
    lines = 0
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        lines += 1
        rows.setdefault(_label_row(parts, nc, path, n))
    if lines > len(rows):  # as Ultralytics does: an exact duplicate would count twice in training and in mAP
        warnings.warn(f"{path}: {lines - len(rows)} duplicate label lines removed", LabelWarning, stacklevel=2)
    if not rows:
        return _empty()
    return np.asarray([r[0] for r in rows], np.int64), np.asarray([r[1:] for r in rows], np.float32)


def _label_row(parts: list[str], nc: int, path: Path, n: int) -> tuple:
    """(class, cx, cy, w, h) of one label line, validated; box values rounded to float32 as they are stored."""
    if len(parts) != 5:
        raise DataError(path, f"expected 5 fields 'class cx cy w h', got {len(parts)}", n)
    try:
        c = float(parts[0])
        vals = [float(v) for v in parts[1:]]
    except ValueError:
        # repr: an invisible character (a BOM or zero-width space inside the file) shows as an escape
        raise DataError(path, f"non-numeric value in {' '.join(parts)!r}", n) from None
    if not math.isfinite(c) or c != int(c) or c < 0:
        raise DataError(path, f"class id {parts[0]} is not a non-negative integer", n)
    if int(c) >= nc:
        raise DataError(path, f"class id {int(c)} out of range: dataset has nc={nc} (ids 0..{nc - 1})", n)
    if not all(map(math.isfinite, vals)) or min(vals) < 0.0 or max(vals) > 1.0:
        raise DataError(path, f"coordinates outside [0, 1]: {' '.join(parts[1:])}", n)
    if vals[2] <= 0 or vals[3] <= 0:
        raise DataError(path, f"box has zero width or height: {' '.join(parts[1:])}", n)
    return (int(c), *np.asarray(vals, np.float32).tolist())


def _expand_images(source: Path, split: str, paths: list[Path]) -> list[Path]:
    images: list[Path] = []
    for p in paths:
        if p.is_dir():
            images += list_images(p)
        elif p.is_file() and p.suffix == ".txt":
            base = p.parent
            for line in p.read_text().splitlines():
                line = line.strip()
                if line:
                    q = Path(line)
                    images.append(q if q.is_absolute() else (base / q).resolve())
        elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            images.append(p)
        else:
            raise DataError(source, f"split '{split}': path not found: {p}")
    if not images:
        raise DataError(source, f"split '{split}' is empty: no images under {', '.join(map(str, paths))}")
    return images


def _names_from(doc: dict, path: Path) -> list[str]:
    names = doc.get("names")
    if names is None:
        raise DataError(path, "no 'names' key")
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise DataError(path, "'names' keys must be integer class ids") from None
        if keys != list(range(len(keys))):
            raise DataError(path, f"'names' ids must be 0..{len(keys) - 1} without gaps")
        names = [str(names[k] if k in names else names[str(k)]) for k in keys]
    elif isinstance(names, list):
        names = [str(n) for n in names]
    else:
        raise DataError(path, "'names' must be a list or a mapping id -> name")
    if not names:
        raise DataError(path, "'names' is empty")
    nc = doc.get("nc", len(names))
    if isinstance(nc, bool) or not isinstance(nc, int):
        raise DataError(path, f"'nc' must be an integer, got {nc!r}")
    if nc != len(names):
        raise DataError(path, f"nc={nc} does not match the {len(names)} class names")
    return names


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise DataError(path, "not a text file") from None
    except OSError as e:
        raise DataError(path, f"cannot read ({e.strerror})") from None


def load_yolo_yaml(path: Path, skip_bad: bool = False) -> Dataset:
    try:
        doc = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as e:
        raise DataError(path, f"invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(doc, dict):
        raise DataError(path, "expected a mapping with train/val/names keys")
    names = _names_from(doc, path)
    root = path.parent
    if doc.get("path"):
        p = Path(str(doc["path"]))
        root = p if p.is_absolute() else (path.parent / p)
    splits: dict[str, list[Path]] = {}
    for split in ("train", "val", "test"):
        v = doc.get(split)
        if v in (None, "", []):
            continue
        items = v if isinstance(v, list) else [v]
        if not all(isinstance(i, str) for i in items):
            raise DataError(path, f"'{split}' must be a path or a list of paths, got {v!r}")
        splits[split] = [Path(i) if Path(i).is_absolute() else (root / i) for i in items]
    if not splits:
        raise DataError(path, "no train/val/test split defined")
    return Dataset(path, names, splits, skip_bad=skip_bad)


def load_coco_json(path: Path, skip_bad: bool = False) -> Dataset:
    """A COCO instances json: one split named after the file (e.g. instances_val2017 -> val).

    Structural faults (missing keys, wrong types, duplicate ids, annotations of unknown images) are errors naming
    the key; a bad annotation of a known image, or a bad image file, is a bad sample (skipped with skip_bad).
    """
    try:
        doc = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(path, f"invalid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict):
        raise DataError(path, "not a COCO detection file: expected an object with images, annotations, categories")
    images, anns, cats = (_coco_list(doc, k, path) for k in ("images", "annotations", "categories"))
    if not cats:
        raise DataError(path, "'categories' is empty")
    cat_ids = _coco_ids(cats, "categories", "id", path)
    order = sorted(range(len(cats)), key=lambda i: cat_ids[i])  # class index = rank of the category id
    cat_index = {cat_ids[i]: k for k, i in enumerate(order)}
    names = [str(_coco_field(cats[i], "name", f"categories[{i}]", path)) for i in order]
    image_ids = _coco_ids(images, "images", "id", path)
    by_image: dict = {i: [] for i in image_ids}
    for j, a in enumerate(anns):
        iid = _coco_id(a, "image_id", f"annotations[{j}]", path)
        if iid not in by_image:
            raise DataError(path, f"annotations[{j}]: image_id {iid!r} is not the id of any image"
                                  + _id_type_hint(iid, image_ids))
        by_image[iid].append(j)
    split = "val" if "val" in path.stem else "train" if "train" in path.stem else "test" if "test" in path.stem else "val"
    ds = Dataset(path, names, {split: []}, skip_bad=skip_bad)
    samples = []
    for i, im in enumerate(images):
        try:
            samples.append(_coco_sample(path, i, im, [(j, anns[j]) for j in by_image[image_ids[i]]], cat_index))
        except DataError as e:
            ds._bad(e)
    if not samples:
        raise DataError(path, f"split '{split}' has no usable images")
    ds._cache[split] = samples
    return ds


_ID_KIND = {int: "an integer", str: "a string"}


def _id_type_hint(iid, image_ids: list) -> str:
    """' (image ids are strings)' when an annotation's image_id has another type than the image ids."""
    if not image_ids or type(iid) is type(image_ids[0]):
        return ""
    return f" (image ids are {_ID_KIND[type(image_ids[0])].split()[-1]}s)"


def _coco_list(doc: dict, key: str, path: Path) -> list[dict]:
    if key not in doc:
        raise DataError(path, f"not a COCO detection file: no '{key}' key")
    v = doc[key]
    if not isinstance(v, list):
        raise DataError(path, f"'{key}' must be a list, got {type(v).__name__}")
    for i, x in enumerate(v):
        if not isinstance(x, dict):
            raise DataError(path, f"{key}[{i}]: must be an object, got {type(x).__name__}")
    return v


def _coco_field(obj: dict, key: str, where: str, path: Path):
    if key not in obj:
        raise DataError(path, f"{where}: no '{key}'")
    return obj[key]


def _coco_id(obj: dict, key: str, where: str, path: Path):
    v = _coco_field(obj, key, where, path)
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise DataError(path, f"{where}: {key} must be an integer or a string, got {v!r}")
    return v


def _coco_ids(items: list[dict], key: str, field_: str, path: Path) -> list:
    """The ids of images or categories: one type for all, no duplicates."""
    ids, seen = [], set()
    for i, x in enumerate(items):
        v = _coco_id(x, field_, f"{key}[{i}]", path)
        if ids and type(v) is not type(ids[0]):
            raise DataError(path, f"{key}[{i}]: {field_} {v!r} is {_ID_KIND[type(v)]} but {key}[0].{field_} is "
                                  f"{_ID_KIND[type(ids[0])]} (mixed id types)")
        if v in seen:
            raise DataError(path, f"{key}[{i}]: duplicate {field_} {v}")
        seen.add(v)
        ids.append(v)
    return ids


def _coco_number(obj: dict, key: str, where: str, path: Path) -> float:
    v = _coco_field(obj, key, where, path)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise DataError(path, f"{where}: {key} must be a positive number, got {v!r}")
    return float(v)


def _coco_bbox(a: dict, where: str, path: Path) -> list[float]:
    b = _coco_field(a, "bbox", where, path)
    if not isinstance(b, list) or len(b) != 4:
        got = len(b) if isinstance(b, list) else repr(b)
        raise DataError(path, f"{where}: bbox must be 4 numbers, got {got}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in b):
        raise DataError(path, f"{where}: bbox must be 4 numbers, got {b!r}")
    return [float(v) for v in b]


def _coco_sample(path: Path, i: int, im: dict, anns: list[tuple[int, dict]], cat_index: dict) -> Sample:
    """One image of a COCO file with its annotations, validated against the image file."""
    where = f"images[{i}]"
    name = _coco_field(im, "file_name", where, path)
    if not isinstance(name, str) or not name:
        raise DataError(path, f"{where}: file_name must be a non-empty string, got {name!r}")
    w, h = _coco_number(im, "width", where, path), _coco_number(im, "height", where, path)
    file = _resolve_coco_image(path, name)
    real = verify_image(file)
    if real not in ((round(w), round(h)), (round(h), round(w))):
        raise DataError(path, f"{where}: width x height {w:g}x{h:g}, but {file} is {real[0]}x{real[1]}")
    classes, boxes = [], []
    for j, a in anns:
        aw = f"annotations[{j}]"
        cat = _coco_id(a, "category_id", aw, path)
        if cat not in cat_index:
            raise DataError(path, f"{aw}: unknown category_id {cat!r}")
        if a.get("iscrowd", 0):
            continue
        x, y, bw, bh = _coco_bbox(a, aw, path)
        if bw <= 0 or bh <= 0 or x < -1 or y < -1 or x + bw > w + 1 or y + bh > h + 1:
            raise DataError(path, f"{aw}: bbox {a['bbox']} outside image {name} ({w:.0f}x{h:.0f})")
        classes.append(cat_index[cat])
        boxes.append([min(max((x + bw / 2) / w, 0), 1), min(max((y + bh / 2) / h, 0), 1), min(bw / w, 1), min(bh / h, 1)])
    s = Sample(file, size=real)
    if classes:
        s.classes, s.boxes = np.asarray(classes, np.int64), np.asarray(boxes, np.float32)
    return s


def _resolve_coco_image(json_path: Path, file_name: str) -> Path:
    base = json_path.parent
    for cand in (base / file_name, base / "images" / file_name, base.parent / "images" / file_name):
        if cand.exists():
            return cand
    return base / file_name


def load_dataset(path, skip_bad: bool = False) -> Dataset:
    """Load a dataset from an Ultralytics data.yaml or a COCO json file."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "dataset file not found")
    if path.is_dir():
        cand = path / "data.yaml"
        if not cand.exists():
            raise DataError(path, "is a folder without data.yaml")
        path = cand
    if path.suffix.lower() == ".json":
        return load_coco_json(path, skip_bad)
    if path.suffix.lower() in (".yaml", ".yml"):
        return load_yolo_yaml(path, skip_bad)
    raise DataError(path, "expected a data.yaml or a COCO .json file")
