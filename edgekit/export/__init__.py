"""ONNX export with a metadata sidecar and a parity check against PyTorch."""
from .onnx import export_onnx

__all__ = ["export_onnx"]
