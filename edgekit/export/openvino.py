"""ONNX -> OpenVINO IR (FP32 or FP16 weights, or FP32 weights run in bf16) with the sidecar carried over."""
from __future__ import annotations

from pathlib import Path

from .._imports import require, tool_versions
from ..errors import ArtifactError
from ..io import atomic_dir
from ..runtime.embedded_meta import set_model_info
from ..runtime.meta import from_sidecar, read_sidecar, write_sidecar

PRECISIONS = ("fp32", "fp16", "bf16")


def executed_on(xml: Path, doc: dict, device: str = "cpu") -> str | None:
    """Compile the saved IR as Engine would and return the precision it executes (raises if it can't run it)."""
    from ..runtime.backends.openvino import OpenVINOBackend

    backend = OpenVINOBackend(xml, device, from_sidecar(doc)).load()
    try:
        return backend.precision_executed
    finally:
        backend.close()


def onnx_to_openvino(onnx_path, out_dir=None, fp16: bool = False, log=print, precision: str | None = None,
                     device: str = "cpu") -> Path:
    """model.onnx -> out_dir/model.xml (+ .bin, model.json); returns the folder.

    precision: fp32 (default), fp16 (FP16 weights) or bf16 (FP32 weights, executed in bf16: refused where
    `device` cannot run bf16). The sidecar records the precision the IR executed on `device`.
    """
    ov = require("openvino", "OpenVINO conversion")
    precision = precision or ("fp16" if fp16 else "fp32")
    if precision not in PRECISIONS:
        raise ArtifactError(f"unknown OpenVINO precision '{precision}' (choose {', '.join(PRECISIONS)})")
    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir) if out_dir else onnx_path.parent / f"{onnx_path.stem}_{precision}_openvino"
    doc = read_sidecar(onnx_path)
    model = ov.convert_model(str(onnx_path))
    with atomic_dir(out_dir) as tmp:
        doc.update({"precision": precision, "backend": "openvino", "converted_from": str(onnx_path),
                    "versions": {**doc.get("versions", {}), **tool_versions("openvino")}})
        doc.pop("parity", None)
        doc.pop("accuracy", None)  # the ONNX's cached FP32 baselines describe the ONNX, not this IR
        doc.pop("threshold", None)  # so does its deployment threshold: this IR gets its own
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=precision == "fp16")
        doc["precision_executed"] = executed_on(tmp / "model.xml", doc, device)
        doc["precision_executed_on"] = device
        set_model_info(model, doc)  # the sidecar's content inside the IR too (rt_info model_info): saved again
        ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=precision == "fp16")
        write_sidecar(tmp / "model.xml", doc)
    log(f"wrote {out_dir}/model.xml ({precision.upper()}{' weights' if precision != 'bf16' else ' execution'}, "
        f"runs {doc['precision_executed']} on {device})")
    return out_dir
