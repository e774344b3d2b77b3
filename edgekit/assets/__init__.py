"""Bundled demo data and weights (see LICENSES.md in this folder)."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent


def demo_weights() -> Path:
    """COCO-pretrained YOLOv8n (Ultralytics, AGPL-3.0), rebuilt from Ultralytics' INT8 OpenVINO export."""
    return ROOT / "yolov8n_coco.pt"


def demo_data() -> Path:
    """data.yaml of the bundled vehicles demo set (96 train / 32 val images, 5 classes, CC BY 4.0)."""
    return ROOT / "demo" / "data.yaml"


def demo_images() -> list[Path]:
    return sorted((ROOT / "demo" / "images" / "val").glob("*.jpg"))
