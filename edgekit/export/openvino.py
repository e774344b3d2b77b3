"""ONNX -> OpenVINO IR (FP32 or FP16 weights, or FP32 weights run in bf16) with the sidecar carried over."""
from __future__ import annotations

from pathlib import Path

from ..drift.profile import carry_profile
from ..runtime.backends.openvino import OpenVINOBackend


def onnx_to_openvino(onnx_path, out_dir=None, fp16: bool = False, log=print, precision: str | None = None,
                     device: str = "cpu") -> Path:
    """model.onnx -> out_dir/model.xml (+ .bin, model.json); returns the folder (OpenVINOBackend.build).

    precision: fp32 (default), fp16 (FP16 weights) or bf16 (FP32 weights, executed in bf16: refused where
    `device` cannot run bf16). The sidecar records the precision the IR executed on `device`; the ONNX's drift profile is carried over.
    """
    precision = precision or ("fp16" if fp16 else "fp32")
    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir) if out_dir else onnx_path.parent / f"{onnx_path.stem}_{precision}_openvino"
    return OpenVINOBackend.build(onnx_path, precision, out_dir, log=log, device=device, carry=carry_profile).parent
