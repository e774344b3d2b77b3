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
    max_class_drop: float | None = 3.0  # mAP50-95 points any class with >= 20 val instances may lose
    eval_split: str = "val"
    eval_limit: int | None = None
    device: str | None = None
    out_dir: Path | str | None = None
