"""ONNX -> OpenVINO IR (FP32 or FP16 weights) with the sidecar carried over."""
from __future__ import annotations

from pathlib import Path

from .._imports import require
from ..io import atomic_dir
from ..runtime.embedded_meta import set_model_info
from ..runtime.meta import read_sidecar, write_sidecar
from .._imports import tool_versions


def onnx_to_openvino(onnx_path, out_dir=None, fp16: bool = False, log=print) -> Path:
    """model.onnx -> out_dir/model.xml (+ .bin, model.json); returns the folder."""
    ov = require("openvino", "OpenVINO conversion")
    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir) if out_dir else onnx_path.parent / f"{onnx_path.stem}_{'fp16' if fp16 else 'fp32'}_openvino"
    doc = read_sidecar(onnx_path)
    model = ov.convert_model(str(onnx_path))
    with atomic_dir(out_dir) as tmp:
        doc.update({"precision": "fp16" if fp16 else "fp32", "backend": "openvino", "converted_from": str(onnx_path),
                    "versions": {**doc.get("versions", {}), **tool_versions("openvino")}})
        doc.pop("parity", None)
        set_model_info(model, doc)  # the sidecar's content inside the IR too (rt_info model_info)
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=fp16)
        write_sidecar(tmp / "model.xml", doc)
    log(f"wrote {out_dir}/model.xml ({'FP16' if fp16 else 'FP32'} weights)")
    return out_dir
