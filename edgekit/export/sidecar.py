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


# what an artifact built from the ONNX keeps of its sidecar: the model's facts, not the ONNX file's
KEPT = ("task", "arch", "family", "names", "nc", "imgsz", "stride", "letterbox", "input", "output")


def artifact_sidecar(onnx_doc: dict, *, backend: str, precision: str, build_from: str, source: Path,
                     source_sha256: str, size_bytes: int, versions: dict, **facts) -> dict:
    """The sidecar of an artifact another backend built from an exported ONNX (or the checkpoint behind it).

    The ONNX's model facts (names, imgsz, letterbox, output layout), batch 1, and what this build made: backend,
    precision, source and its sha256 (and the checkpoint the ONNX came from), tool versions; `facts` are the
    backend's own (input/output names merge into those sections).
    """
    doc = {k: onnx_doc[k] for k in KEPT if k in onnx_doc}
    doc["input"] = {**doc.get("input", {}), "batch": 1, **facts.pop("input", {})}
    doc["output"] = {**doc.get("output", {}), **facts.pop("output", {})}
    doc.update({
        "precision": precision,
        "backend": backend,
        "source": {"path": str(Path(source).resolve()), "sha256": source_sha256, "kind": build_from,
                   "exported_from": onnx_doc.get("source")},
        "versions": versions,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **facts,
        "size_mb": round(size_bytes / 1e6, 3),
    })
    return doc
