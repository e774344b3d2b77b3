"""The sidecar (model.json) of an exported ONNX: one constructor for every exporter (Ultralytics, YOLO-NAS)."""
from __future__ import annotations

import datetime as _dt
from pathlib import Path

LETTERBOX = {"pad_value": 114, "center": True, "scaleup": True, "auto": False, "interpolation": "linear"}


def onnx_sidecar(target: Path, *, arch: str, family: str, names: list[str], imgsz, stride: int, input_name: str,
                 output_name: str, layout: str, output_shape: list, opset: int | None, dynamic: bool,
                 source: Path, source_sha256: str, versions: dict, **extra) -> dict:
    """model.json for an FP32 ONNX at `target`: what the runtime needs to run it and what it was built from."""
    doc = {
        "task": "detect",
        "arch": arch,
        "family": family,
        "names": list(names),
        "nc": len(names),
        "imgsz": list(imgsz),
        "stride": int(stride),
        "letterbox": dict(LETTERBOX),
        "input": {"name": input_name, "batch": None if dynamic else 1, "dtype": "float32",
                  "layout": "NCHW", "color": "RGB", "scale": "1/255"},
        "output": {"name": output_name, "layout": layout, "shape": output_shape},
        "opset": opset,
        "dynamic": dynamic,
        "precision": "fp32",
        "backend": "onnx",
        "source": {"path": str(Path(source).resolve()), "sha256": source_sha256},
        "versions": versions,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
        "size_mb": round(Path(target).stat().st_size / 1e6, 3),
    }
    return doc
