"""Artifact metadata: our JSON sidecar, with fallbacks for Ultralytics' own exports."""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import ArtifactError
from ..io import atomic_write_json

SIDECAR_FORMAT = "edgekit-sidecar/1"


def sidecar_path(artifact) -> Path:
    """model.onnx -> model.json; a folder holding model.xml -> folder/model.json."""
    p = Path(artifact)
    if p.is_dir():
        p = find_model_file(p)
    return p.with_suffix(".json")


def find_model_file(folder: Path) -> Path:
    for pattern in ("*.xml", "*.onnx", "*.engine", "*.plan"):
        hits = sorted(folder.glob(pattern))
        if hits:
            return hits[0]
    raise ArtifactError(f"{folder}: no model file (.xml, .onnx, .engine) in this folder")


@dataclass
class ModelMeta:
    names: list[str]
    imgsz: tuple[int, int] = (640, 640)
    stride: int = 32
    layout: str = "yolo"
    batch: int | None = 1  # None: dynamic
    precision: str = "fp32"
    pad_value: int = 114
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def nc(self) -> int:
        return len(self.names)


def _names(v) -> list[str]:
    if isinstance(v, str):
        v = ast.literal_eval(v)
    if isinstance(v, dict):
        return [str(v[k]) for k in sorted(v, key=int)]
    return [str(x) for x in v]


def _imgsz(v) -> tuple[int, int]:
    if isinstance(v, str):
        v = ast.literal_eval(v)
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def from_sidecar(doc: dict) -> ModelMeta:
    lb = doc.get("letterbox", {})
    return ModelMeta(
        names=_names(doc["names"]),
        imgsz=_imgsz(doc["imgsz"]),
        stride=int(doc.get("stride", 32)),
        layout=doc.get("output", {}).get("layout", "yolo"),
        batch=doc.get("input", {}).get("batch", 1),
        precision=doc.get("precision", "fp32"),
        pad_value=int(lb.get("pad_value", 114)),
        raw=doc,
    )


def _from_ultralytics(d: dict) -> ModelMeta:
    batch = int(d.get("batch", 1)) if not str(d.get("dynamic", "False")) == "True" else None
    layout = "end2end" if str(d.get("nms", d.get("end2end", "False"))) == "True" else "yolo"
    if "rtdetr" in str(d.get("description", "")).lower():
        layout = "rtdetr"
    return ModelMeta(names=_names(d["names"]), imgsz=_imgsz(d.get("imgsz", 640)), stride=int(d.get("stride", 32)),
                     layout=layout, batch=batch, raw={"ultralytics": {k: str(v) for k, v in d.items()}})


def _from_checkpoint(path: Path, imgsz=None) -> ModelMeta:
    """An Ultralytics .pt: names and stride from the pickled model; imgsz from the caller (default 640)."""
    from .._ultralytics import ultralytics

    ultralytics()  # offline env first; the unpickled classes live in ultralytics
    import torch

    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:
        raise ArtifactError(f"{path}: not a loadable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    net = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else ckpt
    if getattr(net, "names", None) is None:
        raise ArtifactError(f"{path}: checkpoint has no class names (expected an Ultralytics detection model)")
    stride = int(max(net.stride)) if getattr(net, "stride", None) is not None else 32
    layout = "rtdetr" if "rtdetr" in type(net).__name__.lower() else "yolo"
    return ModelMeta(names=_names(net.names), imgsz=_imgsz(imgsz or 640), stride=stride, layout=layout, batch=None,
                     raw={"checkpoint": str(path)})


def load_meta(artifact, imgsz=None) -> ModelMeta:
    """Read the sidecar; else Ultralytics' ONNX metadata or OpenVINO metadata.yaml; else raise.

    A .pt checkpoint has no sidecar: its metadata comes from the model, at `imgsz` (default 640).
    """
    p = Path(artifact)
    if not p.exists():
        raise ArtifactError(f"{p}: model file not found")
    if p.suffix.lower() in (".pt", ".pth"):
        return _from_checkpoint(p, imgsz)
    model = find_model_file(p) if p.is_dir() else p
    side = model.with_suffix(".json")
    if side.exists():
        try:
            doc = json.loads(side.read_text())
            return from_sidecar(doc)
        except (json.JSONDecodeError, KeyError, ValueError, SyntaxError) as e:
            raise ArtifactError(f"{side}: malformed sidecar ({type(e).__name__}: {e})") from None
    ul_yaml = model.parent / "metadata.yaml"
    if ul_yaml.exists():
        return _from_ultralytics(yaml.safe_load(ul_yaml.read_text()))
    from .embedded_meta import read_embedded  # metadata inside the file: ONNX metadata_props, IR rt_info

    if (embedded := read_embedded(model)) is not None:
        return embedded
    if model.suffix == ".onnx":
        try:
            import onnx

            m = onnx.load(str(model), load_external_data=False)
            props = {x.key: x.value for x in m.metadata_props}
            if "names" in props:
                return _from_ultralytics(props)
        except ImportError:
            pass
    raise ArtifactError(f"{model}: no metadata: expected the sidecar {side.name} (written by 'edgekit export')")


def write_sidecar(artifact, doc: dict) -> Path:
    doc = {"format": SIDECAR_FORMAT, **doc}
    return atomic_write_json(sidecar_path(artifact), doc)


def read_sidecar(artifact) -> dict:
    side = sidecar_path(artifact)
    if not side.exists():
        return {}
    return json.loads(side.read_text())
