"""Ultralytics data.yaml and COCO json datasets, validated before use."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from ..errors import DataError
from .images import IMAGE_SUFFIXES, check_image_file, list_images


@dataclass
class Sample:
    """One image with its labels: classes (n,) and boxes (n, 4) as normalized cx, cy, w, h."""

    image: Path
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    label: Path | None = None
    size: tuple[int, int] | None = None  # (width, height) when known without decoding

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
                check_image_file(img)
                label = _label_path(img)
                classes, boxes = parse_label_file(label, self.nc) if label.exists() else _empty()
            except DataError as e:
                self._bad(e)
                continue
            out.append(Sample(img, classes, boxes, label if label.exists() else None))
        if not out:
            raise DataError(self.source, f"split '{split}' has no usable images")
        return out

    def to_ultralytics_yaml(self, path: Path) -> Path:
        """Write an Ultralytics data.yaml with absolute paths (works from any working directory)."""
        doc = {"path": str(self.source.parent.resolve()), "names": dict(enumerate(self.names)), "nc": self.nc}
        for split, paths in self.split_paths.items():
            doc[split] = [str(p.resolve()) for p in paths] if len(paths) > 1 else str(paths[0].resolve())
        from ..io import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))
        return path


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
    """Parse a YOLO label file: 'class cx cy w h' per line, normalized to [0, 1]."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataError(path, "label file is not text") from None
    except OSError as e:
        raise DataError(path, f"cannot read label file ({e.strerror})") from None
    classes, boxes = [], []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise DataError(path, f"expected 5 fields 'class cx cy w h', got {len(parts)}", n)
        try:
            c = float(parts[0])
            vals = [float(v) for v in parts[1:]]
        except ValueError:
            raise DataError(path, f"non-numeric value in '{line.strip()}'", n) from None
        if c != int(c) or c < 0:
            raise DataError(path, f"class id {parts[0]} is not a non-negative integer", n)
        if int(c) >= nc:
            raise DataError(path, f"class id {int(c)} out of range: dataset has nc={nc} (ids 0..{nc - 1})", n)
        if not all(np.isfinite(vals)) or min(vals) < 0.0 or max(vals) > 1.0:
            raise DataError(path, f"coordinates outside [0, 1]: {' '.join(parts[1:])}", n)
        if vals[2] <= 0 or vals[3] <= 0:
            raise DataError(path, f"box has zero width or height: {' '.join(parts[1:])}", n)
        classes.append(int(c))
        boxes.append(vals)
    if not classes:
        return _empty()
    return np.asarray(classes, np.int64), np.asarray(boxes, np.float32)


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
    if "nc" in doc and int(doc["nc"]) != len(names):
        raise DataError(path, f"nc={doc['nc']} does not match the {len(names)} class names")
    return names


def load_yolo_yaml(path: Path, skip_bad: bool = False) -> Dataset:
    try:
        doc = yaml.safe_load(path.read_text())
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
        splits[split] = [Path(str(i)) if Path(str(i)).is_absolute() else (root / str(i)) for i in items]
    if not splits:
        raise DataError(path, "no train/val/test split defined")
    return Dataset(path, names, splits, skip_bad=skip_bad)


def load_coco_json(path: Path, skip_bad: bool = False) -> Dataset:
    """A COCO instances json: one split named after the file (e.g. instances_val2017 -> val)."""
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(path, f"invalid JSON ({e.msg} at line {e.lineno})") from None
    for key in ("images", "annotations", "categories"):
        if key not in doc:
            raise DataError(path, f"not a COCO detection file: no '{key}' key")
    cats = sorted(doc["categories"], key=lambda c: c["id"])
    if not cats:
        raise DataError(path, "'categories' is empty")
    cat_index = {c["id"]: i for i, c in enumerate(cats)}
    names = [str(c["name"]) for c in cats]
    split = "val" if "val" in path.stem else "train" if "train" in path.stem else "test" if "test" in path.stem else "val"
    ds = Dataset(path, names, {split: []}, skip_bad=skip_bad)
    anns: dict[int, list] = {}
    for a in doc["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    samples = []
    for im in doc["images"]:
        file = _resolve_coco_image(path, im["file_name"])
        w, h = float(im["width"]), float(im["height"])
        classes, boxes = [], []
        try:
            check_image_file(file)
            for a in anns.get(im["id"], []):
                if a.get("iscrowd", 0):
                    continue
                if a["category_id"] not in cat_index:
                    raise DataError(path, f"annotation {a.get('id')} has unknown category_id {a['category_id']}")
                x, y, bw, bh = (float(v) for v in a["bbox"])
                if bw <= 0 or bh <= 0 or x < -1 or y < -1 or x + bw > w + 1 or y + bh > h + 1:
                    raise DataError(path, f"annotation {a.get('id')} bbox {a['bbox']} outside image {im['file_name']} ({w:.0f}x{h:.0f})")
                classes.append(cat_index[a["category_id"]])
                boxes.append([min(max((x + bw / 2) / w, 0), 1), min(max((y + bh / 2) / h, 0), 1), min(bw / w, 1), min(bh / h, 1)])
        except DataError as e:
            ds._bad(e)
            continue
        s = Sample(file, size=(int(w), int(h)))
        if classes:
            s.classes, s.boxes = np.asarray(classes, np.int64), np.asarray(boxes, np.float32)
        samples.append(s)
    if not samples:
        raise DataError(path, f"split '{split}' has no usable images")
    ds._cache[split] = samples
    return ds


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
