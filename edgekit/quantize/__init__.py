"""INT8 quantization with an accuracy gate: one module per backend, one calibration set, one evaluation path."""
from __future__ import annotations

import importlib
from typing import Callable

from ..errors import ArtifactError

BACKENDS = {"openvino": "edgekit.quantize.openvino", "onnxruntime": "edgekit.quantize.onnxruntime",
            "tensorrt": "edgekit.quantize.tensorrt"}
METHODS = ("auto", "minmax", "entropy", "percentile")


def quantize(onnx_path, data, backend: str = "openvino", method: str = "auto", calib_size: int = 300,
             max_map_drop: float | None = 0.5, out_dir=None, eval_split: str = "val", calib_split: str = "train",
             force: bool = False, eval_limit: int | None = None, log: Callable = print, seed: int = 0,
             device: str | None = None, max_class_drop: float | None = 3.0) -> dict:
    """FP32 ONNX -> gated INT8 artifact; returns the result dict, raises AccuracyGateError after a FAILED sidecar."""
    if backend not in BACKENDS:
        raise ArtifactError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)})")
    if method not in METHODS:
        raise ArtifactError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")
    mod = importlib.import_module(BACKENDS[backend])
    mod.check_available()
    from .job import Job

    job = Job(onnx_path, data, backend, method, calib_size, max_map_drop, out_dir, eval_split, calib_split, force,
              eval_limit, log, seed, device or ("cuda:0" if backend == "tensorrt" else "cpu"))
    job.max_class_drop = max_class_drop
    try:
        mod.run(job)
        return job.finish()
    finally:
        job.cleanup()


__all__ = ["quantize", "BACKENDS", "METHODS"]
