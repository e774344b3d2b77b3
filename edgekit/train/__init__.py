"""Fine-tuning strategies with freeze schedules on Ultralytics (and YOLO-NAS through edgekit.train.nas).

    from edgekit.train import train, parse_strategy
    info = train("yolov8n_coco.pt", "data.yaml", strategy="schedule:0:backbone,2:none", epochs=3, imgsz=320)

Importing this package pulls no torch; train() imports Ultralytics when called.
"""
from __future__ import annotations

from .strategy import GROUPS, Stage, Strategy, parse_strategy


def train(weights_or_arch, data, strategy=None, **kwargs) -> dict:
    """Train one strategy; returns the train.json dict. See edgekit.train.run.train for the arguments."""
    from .run import train as _train

    return _train(weights_or_arch, data, strategy, **kwargs)


__all__ = ["GROUPS", "Stage", "Strategy", "parse_strategy", "train"]
