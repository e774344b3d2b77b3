"""What one quantization run is asked to do: the options of `quantize()` and `edgekit quantize`, in one record."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class QuantizeConfig:
    """Backend, calibration, accuracy gate and output of one run; `device` None is the backend's default device."""

    backend: str = "openvino"
    method: str = "auto"
    calib_size: int = 300
    calib_split: str = "train"
    seed: int = 0
    force: bool = False
    max_map_drop: float | None = 0.5
    max_class_drop: float | None = 3.0  # mAP50-95 points any class with >= min_class_boxes val boxes may lose
    max_recall_drop: float | None = 5.0  # recall points (at the FP32 threshold) any such class may lose
    min_class_boxes: int = 20            # classes with fewer val boxes never fail the per-class gates
    target_precision: float | None = None  # deployment threshold: highest recall at this precision (default: max F1)
    target_recall: float | None = None     # ... or highest precision at this recall
    budget_s: float | None = 240.0       # seconds for the recipe's INT8 stages, then accuracy control (what is left)
    calib_from: Path | str | None = None  # calibrate on this folder of unlabeled images instead of calib_split
    eval_split: str = "val"
    eval_limit: int | None = None
    device: str | None = None
    out_dir: Path | str | None = None
