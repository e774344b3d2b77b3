"""Metadata carried inside the model file: written from our sidecar, read when no sidecar is beside the model.

Writing: the sidecar JSON goes into ONNX `metadata_props["edgekit_sidecar"]` and into OpenVINO
`rt_info["model_info"]` (the OpenVINO Model API convention: model_type, labels, pad_value, resize_type,
reverse_input_channels, scale_values, plus our "edgekit_sidecar"). The sidecar file stays the primary record.

Reading (an .xml IR is parsed as XML, no OpenVINO needed): our embedded sidecar first; then the ONNX metadata
that `ovc` carries into `rt_info["framework"]` (Ultralytics' names, imgsz, stride); then Ultralytics' or the Model
API's `model_info` (labels, with imgsz and batch from the input shape). A .tflite: the `metadata.json` zip entry
that Ultralytics' LiteRT export appends to the flatbuffer.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from ..errors import ArtifactError
from .meta import ModelMeta, _from_ultralytics, from_sidecar, read_sidecar

KEY = "edgekit_sidecar"


# writing ---------------------------------------------------------------------------------------------
def embed_onnx(path, doc: dict | None = None) -> Path:
    """Write the sidecar (default: the one beside `path`) into the ONNX file's metadata_props, atomically."""
    from .._imports import require
    from ..io import atomic_path

    onnx = require("onnx", "embedding metadata in ONNX")
    path = Path(path)
    doc = doc if doc is not None else read_sidecar(path)
    if not doc:
        return path
    model = onnx.load(str(path), load_external_data=False)
    if any(t.HasField("data_location") and t.data_location == onnx.TensorProto.EXTERNAL
           for t in model.graph.initializer):
        return path  # external weights: rewriting would orphan them; the sidecar remains the record
    kept = [p for p in model.metadata_props if p.key != KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    model.metadata_props.add(key=KEY, value=json.dumps(doc, sort_keys=True, default=str))
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return path


def set_model_info(model, doc: dict) -> None:
    """Put the sidecar into an openvino.Model's rt_info['model_info'] (Model API keys + our JSON); before save."""
    if not doc:
        return
    names = [str(n).replace(" ", "_") for n in doc.get("names", [])]  # Model API splits labels on spaces
    info = {"labels": names, "pad_value": int(doc.get("letterbox", {}).get("pad_value", 114)),
            "resize_type": "fit_to_window_letterbox", "reverse_input_channels": True, "scale_values": [255.0],
            KEY: json.dumps(doc, sort_keys=True, default=str)}
    if doc.get("output", {}).get("layout", "yolo") == "yolo":
        info["model_type"] = "YOLO"
    for k, v in info.items():
        model.set_rt_info(v, ["model_info", k])


# reading ---------------------------------------------------------------------------------------------
def read_embedded(model_file) -> ModelMeta | None:
    """ModelMeta from metadata inside an .onnx or .xml file, or None when it carries none we understand."""
    p = Path(model_file)
    try:
        if p.suffix.lower() == ".onnx":
            return _from_onnx(p)
        if p.suffix.lower() == ".xml":
            return _from_ir(p)
        if p.suffix.lower() == ".tflite":
            return _from_tflite(p)
    except (json.JSONDecodeError, KeyError, ValueError, SyntaxError) as e:
        raise ArtifactError(f"{p}: malformed embedded metadata ({type(e).__name__}: {e})") from None
    return None


def _from_onnx(p: Path) -> ModelMeta | None:
    from .._imports import available

    if not available("onnx"):
        return None
    import onnx

    try:
        m = onnx.load(str(p), load_external_data=False)
    except Exception:  # not a readable ONNX: load_meta says so, naming the missing sidecar
        return None
    props = {x.key: x.value for x in m.metadata_props}
    return from_sidecar(json.loads(props[KEY])) if KEY in props else None


def _from_tflite(p: Path) -> ModelMeta | None:
    """Ultralytics' LiteRT export appends its metadata to the flatbuffer as a zip entry, metadata.json."""
    import zipfile

    if not zipfile.is_zipfile(p):
        return None
    try:
        with zipfile.ZipFile(p) as z:
            if "metadata.json" not in z.namelist():
                return None
            doc = json.loads(z.read("metadata.json"))
    except zipfile.BadZipFile:
        return None
    return _from_ultralytics(doc, f"{p} (metadata.json)")


def rt_info(xml: Path) -> dict:
    """The IR's top-level <rt_info> as nested dicts of string values."""
    def walk(e):
        return {c.tag if c.tag != "info" else c.get("name", "info"): (c.get("value") if "value" in c.attrib else walk(c))
                for c in e}

    try:
        root = ET.parse(str(xml)).getroot()
    except ET.ParseError as e:
        raise ArtifactError(f"{xml}: not a readable OpenVINO IR ({e})") from None
    node = root.find("rt_info")
    return walk(node) if node is not None else {}


def _io_shapes(xml: Path) -> tuple[list[str], list[str]]:
    """(first input's shape, first output's shape) of an IR, as strings ('?' or '-1' where dynamic)."""
    root = ET.parse(str(xml)).getroot()
    layers = root.find("layers")
    par = next((lyr for lyr in layers if lyr.get("type") == "Parameter"), None)
    res = next((lyr for lyr in layers if lyr.get("type") == "Result"), None)
    shape_in = par.find("data").get("shape", "").split(",") if par is not None and par.find("data") is not None else []
    shape_out = [d.text for d in res.iter("dim")] if res is not None else []
    return [s.strip() for s in shape_in if s.strip()], [s.strip() for s in shape_out]


def _from_ir(p: Path) -> ModelMeta | None:
    info = rt_info(p)
    model_info, framework = info.get("model_info", {}), info.get("framework", {})
    if isinstance(model_info, dict) and KEY in model_info:
        return from_sidecar(json.loads(model_info[KEY]))
    if isinstance(framework, dict) and KEY in framework:  # the source ONNX's sidecar, carried over by ovc
        doc = json.loads(framework[KEY])  # an IR made from it (e.g. quantized) may differ in precision
        return from_sidecar({**doc, "precision": "unknown", "inherited_from": "source ONNX metadata_props"})
    if isinstance(framework, dict) and "names" in framework:
        return _from_ultralytics(framework)
    if not isinstance(model_info, dict) or "labels" not in model_info:
        return None
    shape_in, shape_out = _io_shapes(p)
    if len(shape_in) != 4 or not all(s.isdigit() for s in shape_in[2:]):
        raise ArtifactError(f"{p}: rt_info has labels but the input shape {shape_in} gives no fixed image size; "
                            f"write a sidecar (model.json) with imgsz")
    labels = model_info["labels"]
    names = labels.split() if isinstance(labels, str) else list(labels)
    layout = "end2end" if len(shape_out) == 3 and shape_out[-1] == "6" else "yolo"
    return ModelMeta(names=names, imgsz=(int(shape_in[2]), int(shape_in[3])), layout=layout,
                     batch=int(shape_in[0]) if shape_in[0].isdigit() else None,
                     pad_value=int(float(model_info.get("pad_value", 114))), raw={"rt_info": model_info})
