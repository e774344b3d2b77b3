"""Import Ultralytics offline: no downloads, no auto-installs, settings kept out of the user's home if unwritable."""
from __future__ import annotations

import os

from ._imports import require


def ultralytics():
    """Import ultralytics with YOLO_OFFLINE and YOLO_AUTOINSTALL=False set first."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("YOLO_ANALYTICS", "False")
    require("torch", "training and export")
    ul = require("ultralytics", "training and export")
    try:
        from ultralytics.utils import SETTINGS

        if SETTINGS.get("sync", False):
            SETTINGS.update({"sync": False})
    except Exception:
        pass
    return ul


def arch_of(model) -> tuple[str, str]:
    """(arch, family) of an Ultralytics model: ('yolov8n', 'yolov8'), ('yolo11n', 'yolo11'), ('rtdetr-l', 'rtdetr')."""
    net = getattr(model, "model", model)
    cfg = getattr(net, "yaml", {}) or {}
    name = os.path.splitext(os.path.basename(str(cfg.get("yaml_file", ""))))[0].lower()
    scale = cfg.get("scale", "")
    if not name:
        name = type(net).__name__.lower()
    base = name
    for fam in ("yolov8", "yolo11", "yolo12", "yolov10", "yolov5", "yolov9", "yolo26", "rtdetr"):
        if name.startswith(fam):
            if scale and fam != "rtdetr" and not name.endswith(tuple("nsmlx")):
                base = f"{fam}{scale}"
            return base, fam
    return base, "unknown"
