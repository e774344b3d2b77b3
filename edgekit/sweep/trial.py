"""One trial of the sweep: a model, an input size and a training strategy."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROWS_FORMAT = "edgekit-trial-rows/1"  # <trial>/stages/rows.json: a trial's rows before speed (report --merge reads it)


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
