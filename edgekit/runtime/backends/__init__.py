"""Inference backends behind one small interface, each imported lazily by name."""
from __future__ import annotations

import importlib
from pathlib import Path

from ...errors import ArtifactError
from .base import Backend

BACKENDS = {
    "onnxruntime": "edgekit.runtime.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "edgekit.runtime.backends.openvino:OpenVINOBackend",
    "tensorrt": "edgekit.runtime.backends.tensorrt:TensorRTBackend",
    "torch": "edgekit.runtime.backends.torch:TorchBackend",
}


def get_backend(name: str) -> type[Backend]:
    if name not in BACKENDS:
        raise ArtifactError(f"unknown backend '{name}' (choose from {', '.join(BACKENDS)})")
    mod, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(mod), cls)


def pick_backend(path, device: str = "cpu") -> str:
    """The default backend for an artifact file and a device."""
    from ..._imports import available

    p = Path(path)
    suffix = p.suffix.lower()
    if p.is_dir() or suffix == ".xml":
        return "openvino"
    if suffix in (".engine", ".plan"):
        return "tensorrt"
    if suffix in (".pt", ".pth"):
        return "torch"
    if suffix == ".onnx":
        if device.upper() in ("GPU", "NPU", "AUTO") or device.upper().startswith("GPU."):
            return "openvino"
        if available("onnxruntime") or not available("openvino"):
            return "onnxruntime"
        return "openvino"
    raise ArtifactError(f"{p}: unknown model format '{suffix}' (expected .onnx, .xml or an OpenVINO folder, .engine, .pt)")
