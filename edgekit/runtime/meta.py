"""Artifact metadata: our JSON sidecar, with fallbacks for Ultralytics' own exports."""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..errors import ArtifactError
from ..io import atomic_write_json
from .embedding import detection_index

SIDECAR_FORMAT = "edgekit-sidecar/1"


def sidecar_path(artifact) -> Path:
    """model.onnx -> model.json; a folder holding model.xml -> folder/model.json."""
    p = Path(artifact)
    if p.is_dir():
        p = find_model_file(p)
    return p.with_suffix(".json")


def find_model_file(folder: Path) -> Path:
    for pattern in ("*.xml", "*.onnx", "*.engine", "*.plan", "*.param", "*.tflite", "*.pte"):
        hits = sorted(folder.glob(pattern))
        if hits:
            return hits[0]
    raise ArtifactError(f"{folder}: no model file (.xml, .onnx, .engine, .param, .tflite, .pte) in this folder")


@dataclass
class ModelMeta:
    names: list[str]
    imgsz: tuple[int, int] = (640, 640)
    stride: int = 32
    layout: str = "yolo"
    batch: int | None = 1  # None: dynamic
    precision: str = "fp32"
    pad_value: int = 114
    conf: float | None = None  # the deployment threshold recorded by quantize (sidecar 'threshold.conf')
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def nc(self) -> int:
        return len(self.names)


LAYOUTS = ("yolo", "end2end", "rtdetr", "nas")


def _bad(src, key: str, why: str, value) -> ArtifactError:
    shown = "null" if value is None else repr(value)
    return ArtifactError(f"{src}: key '{key}': {why}, got {shown[:80]}")


def _names(v, src="metadata") -> list[str]:
    """A non-empty list of class names, or a {index: name} dict with indices 0..n-1."""
    if isinstance(v, str):
        try:
            v = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            raise _bad(src, "names", "expected a list of class names", v) from None
    if isinstance(v, dict):
        try:
            keys = sorted(int(k) for k in v)
        except (TypeError, ValueError):
            raise _bad(src, "names", "class indices must be integers", list(v)[:5]) from None
        if keys != list(range(len(keys))):
            raise _bad(src, "names", "class indices must be 0..n-1", keys[:10])
        v = [v[k] if k in v else v[str(k)] for k in keys]
    if not isinstance(v, (list, tuple)) or not v:
        raise _bad(src, "names", "expected a non-empty list of class names", v)
    if not all(isinstance(x, str) and x.strip() for x in v):
        raise _bad(src, "names", "every class name must be a non-empty string", next(
            x for x in v if not (isinstance(x, str) and x.strip())))
    return [str(x) for x in v]


def _posint(v, src, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _bad(src, key, "expected a positive integer", v)
    return v


def _int(v):
    """'32' -> 32 (Ultralytics stores metadata as strings); anything else unchanged for _posint to judge."""
    return int(v) if isinstance(v, str) and v.strip().isdigit() else v


def _imgsz(v, src="metadata") -> tuple[int, int]:
    if isinstance(v, str):
        try:
            v = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            raise _bad(src, "imgsz", "expected N or [H, W]", v) from None
    if isinstance(v, (list, tuple)) and len(v) == 2:
        return (_posint(v[0], src, "imgsz"), _posint(v[1], src, "imgsz"))
    if isinstance(v, (list, tuple)) and len(v) == 1:
        v = v[0]
    if isinstance(v, (list, tuple)):
        raise _bad(src, "imgsz", "expected N or [H, W]", v)
    n = _posint(v, src, "imgsz")
    return (n, n)


def _section(doc: dict, key: str, src) -> dict:
    v = doc.get(key, {})
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _bad(src, key, "expected an object", v)
    return v


def from_sidecar(doc, src="sidecar") -> ModelMeta:
    """Validate a sidecar document and turn it into ModelMeta; errors name the file and the key."""
    if not isinstance(doc, dict):
        raise ArtifactError(f"{src}: expected a JSON object (edgekit sidecar), got a JSON {type(doc).__name__}")
    for key in ("names", "imgsz"):
        if key not in doc:
            raise ArtifactError(f"{src}: key '{key}' is missing")
    lb, out, inp = (_section(doc, k, src) for k in ("letterbox", "output", "input"))
    layout = out.get("layout", "yolo")
    if layout not in LAYOUTS:
        raise _bad(src, "output.layout", f"expected one of {', '.join(LAYOUTS)}", layout)
    batch = inp.get("batch", 1)
    if batch is not None:
        _posint(batch, src, "input.batch")
    pad = lb.get("pad_value", 114)
    if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad <= 255:
        raise _bad(src, "letterbox.pad_value", "expected an integer 0..255", pad)
    precision = doc.get("precision", "fp32")
    if not isinstance(precision, str):
        raise _bad(src, "precision", "expected a string", precision)
    names = _names(doc["names"], src)
    if "nc" in doc and doc["nc"] != len(names):
        raise _bad(src, "nc", f"does not match the {len(names)} names", doc["nc"])
    return ModelMeta(names=names, imgsz=_imgsz(doc["imgsz"], src), stride=_posint(doc.get("stride", 32), src, "stride"),
                     layout=layout, batch=batch, precision=precision, pad_value=pad, conf=_threshold(doc, src), raw=doc)


def _threshold(doc: dict, src) -> float | None:
    """The deployment threshold's conf ('threshold': {conf, precision, recall, f1, per_class, chosen_by}), if any."""
    conf = _section(doc, "threshold", src).get("conf")
    if conf is None:
        return None
    if isinstance(conf, bool) or not isinstance(conf, (int, float)) or not 0 <= conf <= 1:
        raise _bad(src, "threshold.conf", "expected a confidence in [0, 1]", conf)
    return float(conf)


def _from_ultralytics(d, src="metadata") -> ModelMeta:
    if not isinstance(d, dict) or "names" not in d:
        raise ArtifactError(f"{src}: no class names in Ultralytics metadata")
    batch = _posint(_int(d.get("batch", 1)), src, "batch") if not str(d.get("dynamic", "False")) == "True" else None
    layout = "end2end" if str(d.get("nms", d.get("end2end", "False"))) == "True" else "yolo"
    if "rtdetr" in str(d.get("description", "")).lower():
        layout = "rtdetr"
    return ModelMeta(names=_names(d["names"], src), imgsz=_imgsz(d.get("imgsz", 640), src),
                     stride=_posint(_int(d.get("stride", 32)), src, "stride"), layout=layout, batch=batch,
                     raw={"ultralytics": {k: str(v) for k, v in d.items()}})


def _from_checkpoint(path: Path, imgsz=None, trust_checkpoint: bool = False) -> ModelMeta:
    """An Ultralytics .pt: names and stride from the model, loaded without running code unless trusted."""
    from ..checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, trust=trust_checkpoint)
    net = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else ckpt
    if getattr(net, "names", None) is None:
        raise ArtifactError(f"{path}: checkpoint has no class names (expected an Ultralytics detection model)")
    stride = int(max(net.stride)) if getattr(net, "stride", None) is not None else 32
    layout = "rtdetr" if "rtdetr" in type(net).__name__.lower() else "yolo"
    return ModelMeta(names=_names(net.names, path), imgsz=_imgsz(imgsz or 640, "--imgsz"), stride=stride,
                     layout=layout, batch=None, raw={"checkpoint": str(path)})


# --- the model's real input and output against the metadata ---------------------------------------------------------

def _dims(shape) -> list:
    """Static dims as ints, dynamic ones as None."""
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def check_io(path, meta: ModelMeta, inp, out) -> None:
    """Refuse a model whose input/output shapes don't fit the metadata: not a detector, or another imgsz."""
    inp, out = _dims(inp), _dims(out)
    if len(inp) != 4 or inp[1] not in (3, None):
        raise ArtifactError(f"{path}: input shape {_show(inp)} is not an NCHW image batch with 3 channels "
                            f"(not a detector edgekit can run)")
    h, w = inp[2], inp[3]
    if (h is not None and h != meta.imgsz[0]) or (w is not None and w != meta.imgsz[1]):
        raise ArtifactError(f"{path}: the model's input is {h}x{w} but its metadata says imgsz "
                            f"{meta.imgsz[0]}x{meta.imgsz[1]} (key 'imgsz'); re-export or fix the sidecar")
    if len(out) != 3:
        raise ArtifactError(f"{path}: output shape {_show(out)} has rank {len(out)}, a detector's has rank 3 "
                            f"(layout '{meta.layout}')")
    want = {"yolo": (1, 4 + meta.nc), "rtdetr": (2, 4 + meta.nc), "nas": (2, 4 + meta.nc), "end2end": (2, 6)}
    axis, n = want[meta.layout]
    if out[axis] is not None and out[axis] != n:
        raise ArtifactError(f"{path}: output shape {_show(out)} does not fit layout '{meta.layout}' with "
                            f"{meta.nc} classes (key 'names'): expected {n} on axis {axis}")


def _show(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def model_io(model: Path):
    """(input shape, output shape) read from an .onnx (with the onnx package) or an OpenVINO .xml; None if unknown."""
    try:
        if model.suffix.lower() == ".onnx":
            import onnx

            g = onnx.load(str(model), load_external_data=False).graph
            inits = {i.name for i in g.initializer}
            inp = next(i for i in g.input if i.name not in inits)
            outs = list(g.output)
            out = outs[detection_index([o.name for o in outs])]
            return ([d.dim_value for d in inp.type.tensor_type.shape.dim],
                    [d.dim_value for d in out.type.tensor_type.shape.dim])
        if model.suffix.lower() == ".xml":
            import xml.etree.ElementTree as ET

            root = ET.parse(model).getroot()
            layers = root.find("layers")
            par = next(x for x in layers if x.get("type") == "Parameter")
            results = [x for x in layers if x.get("type") == "Result"]
            res = results[detection_index([x.get("name", "").split("/sink_port")[0] for x in results])]
            inp = [int(d) if d.lstrip("-").isdigit() else -1 for d in par.find("data").get("shape").split(",")]
            out = [int(d.text) if d.text.strip().lstrip("-").isdigit() else -1
                   for d in res.find("input").find("port").findall("dim")]
            return inp, out
    except Exception:  # unreadable here: the backend's own load reports it
        return None
    return None


def load_meta(artifact, imgsz=None, trust_checkpoint: bool = False) -> ModelMeta:
    """Read the sidecar; else Ultralytics' ONNX metadata or OpenVINO metadata.yaml; else raise.

    A .pt checkpoint has no sidecar: its metadata comes from the model, at `imgsz` (default 640), loaded with the
    restricted unpickler unless `trust_checkpoint`. For .onnx and .xml the model's real input and output shapes are
    checked against the metadata.
    """
    p = Path(artifact)
    if not p.exists():
        raise ArtifactError(f"{p}: model file not found")
    if p.suffix.lower() in (".pt", ".pth"):
        return _from_checkpoint(p, imgsz, trust_checkpoint)
    model = find_model_file(p) if p.is_dir() else p
    meta = _read_meta(model)
    io = model_io(model)
    if io is not None:
        check_io(model, meta, *io)
    return meta


def _read_meta(model: Path) -> ModelMeta:
    side = model.with_suffix(".json")
    if side.exists():
        try:
            doc = json.loads(side.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{side}: malformed sidecar (not JSON: {e})") from None
        return from_sidecar(doc, side)
    ul_yaml = model.parent / "metadata.yaml"
    if ul_yaml.exists():
        try:
            doc = yaml.safe_load(ul_yaml.read_text())
        except yaml.YAMLError as e:
            raise ArtifactError(f"{ul_yaml}: malformed YAML ({str(e).splitlines()[0]})") from None
        return _from_ultralytics(doc, ul_yaml)
    from .embedded_meta import read_embedded  # metadata inside the file: ONNX metadata_props, IR rt_info

    if (embedded := read_embedded(model)) is not None:
        return embedded
    if model.suffix.lower() == ".onnx":
        try:
            import onnx
        except ImportError:
            onnx = None
        if onnx is not None:
            try:
                m = onnx.load(str(model), load_external_data=False)
            except Exception as e:  # protobuf DecodeError and friends
                reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise ArtifactError(f"{model}: not a readable ONNX model ({reason[:120]}), and no sidecar "
                                    f"{side.name} beside it") from None
            props = {x.key: x.value for x in m.metadata_props}
            if "names" in props:
                return _from_ultralytics(props, f"{model} (ONNX metadata)")
    raise ArtifactError(f"{model}: no metadata: expected the sidecar {side.name} (written by 'edgekit export')")


def write_sidecar(artifact, doc: dict) -> Path:
    doc = {"format": SIDECAR_FORMAT, **doc}
    return atomic_write_json(sidecar_path(artifact), doc)


def read_sidecar(artifact) -> dict:
    side = sidecar_path(artifact)
    if not side.exists():
        return {}
    try:
        doc = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{side}: malformed sidecar (not JSON: {e})") from None
    if not isinstance(doc, dict):
        raise ArtifactError(f"{side}: expected a JSON object (edgekit sidecar), got a JSON {type(doc).__name__}")
    return doc
