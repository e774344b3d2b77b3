"""One trial of the sweep: a model, an input size and a training strategy; and how its records name files."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

# <trial>/stages/rows.json: a trial's rows before speed (report --merge reads it). /2: every path in it is relative to
# the run folder, and "trial_dir" says where the trial lies in it; /1 named absolute paths under its "root".
ROWS_FORMAT = "edgekit-trial-rows/2"
ROW_PATHS = ("artifact", "matches")  # the fields of a row that name a file of the run
NESTED_PATHS = {"_bench": ("artifact", "record"), "gate": ("artifact",)}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


def model_name(model) -> str:
    """The model as rows show it: a file's name (yolov8n_coco.pt), else the spec itself (yolov8n.yaml)."""
    return Path(str(model)).name


@dataclass(frozen=True)
class Trial:
    model: str   # the weights or arch yaml, as given
    imgsz: int
    strategy: str

    @property
    def group(self) -> tuple[str, int]:
        """The speed class: trials of one model at one input size share their graphs."""
        return (model_name(self.model), self.imgsz)

    def folder(self, out: Path, nested: bool) -> Path:
        """Where its stage records and outputs go: out/<strategy>, or out/<model>-<imgsz>/<strategy> in a sweep."""
        base = Path(out) / f"{slug(Path(model_name(self.model)).stem)}-{self.imgsz}" if nested else Path(out)
        return base / slug(self.strategy)

    def label(self, nested: bool) -> str:
        return f"{Path(model_name(self.model)).stem}@{self.imgsz} {self.strategy}" if nested else self.strategy


def relative_to(path, base) -> str:
    """path as a record names it: relative to base (a run folder, or a report's folder), '/'-separated."""
    return Path(os.path.relpath(Path(path).absolute(), Path(base).absolute())).as_posix()


def resolve_in(name, base) -> str:
    """The path a record's relative name stands for, given the folder it is relative to."""
    return os.path.normpath(os.path.join(Path(base).absolute(), name))


def _map_paths(row: dict, fn) -> dict:
    out = dict(row)
    for k in ROW_PATHS:
        if isinstance(out.get(k), str):
            out[k] = fn(out[k])
    for sub, keys in NESTED_PATHS.items():
        if isinstance(out.get(sub), dict):
            out[sub] = {**out[sub], **{k: fn(out[sub][k]) for k in keys if isinstance(out[sub].get(k), str)}}
    return out


def run_relative(row: dict, base) -> dict:
    """A copy of a row whose file paths are relative to base: what rows.json and report.json keep."""
    return _map_paths(row, lambda p: relative_to(p, base))


def resolved(row: dict, base) -> dict:
    """A copy of a recorded row whose relative file paths are made paths again, against the folder they name."""
    return _map_paths(row, lambda p: resolve_in(p, base))
