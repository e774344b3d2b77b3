"""Fine-tuning strategies with freeze schedules on Ultralytics (and YOLO-NAS through edgekit.train.nas).

    from edgekit.train import train, parse_strategy
    info = train("yolov8n_coco.pt", "data.yaml", strategy="schedule:0:backbone,2:none", epochs=3, imgsz=320)

Importing this package pulls no torch; train() imports Ultralytics when called.
"""
from __future__ import annotations

from .strategy import GROUPS, Stage, Strategy, parse_strategy


def train(weights_or_arch, data, strategy=None, **kwargs) -> dict:
    """Train one strategy; returns the train.json dict. See edgekit.train.run.train for the arguments.

    weights_or_arch 'yolo_nas_s' (random init) or 'yolo_nas_s:CKPT' (your checkpoint) takes the YOLO-NAS route.
    """
    w = str(weights_or_arch)
    if w.startswith("yolo_nas_s"):
        from .nas import train_nas

        keep = ("epochs", "imgsz", "batch", "device", "out_dir", "gpu_hour_usd", "log", "trust_checkpoint")
        return train_nas(w.partition(":")[2] or None, data, strategy or "full",
                         **{k: v for k, v in kwargs.items() if k in keep})
    from .run import train as _train

    return _train(weights_or_arch, data, strategy, **kwargs)


__all__ = ["GROUPS", "Stage", "Strategy", "parse_strategy", "train"]
