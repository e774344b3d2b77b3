"""Import Ultralytics offline: no downloads, no auto-installs, its settings.json in the temp dir, not the user's home."""
from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

from ._imports import require


def config_dir() -> str:
    """A folder for Ultralytics' settings under the system temp dir, owned by this user only (created 0700)."""
    user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    p = Path(tempfile.gettempdir()) / f"edgekit-ultralytics-uid{user}"
    try:
        p.mkdir(mode=0o700, exist_ok=True)
        st = p.lstat()
        if stat.S_ISDIR(st.st_mode) and (not hasattr(os, "getuid") or st.st_uid == os.getuid()):
            return str(p)
    except OSError:
        pass
    return tempfile.mkdtemp(prefix="edgekit-ultralytics-")  # someone else holds that name: a fresh private one


def ultralytics():
    """Import ultralytics with YOLO_OFFLINE, YOLO_AUTOINSTALL=False and YOLO_CONFIG_DIR (unless the user set it) first."""
    if "YOLO_CONFIG_DIR" not in os.environ and "ultralytics" not in sys.modules:
        os.environ["YOLO_CONFIG_DIR"] = config_dir()  # read once, when ultralytics.utils is first imported
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
