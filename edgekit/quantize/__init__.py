"""INT8 quantization with an accuracy gate: one algorithm (quantizer.py), one thin quantizer per backend."""
from __future__ import annotations

import dataclasses
from typing import Callable

from .._registry import Registry
from ..errors import ArtifactError
from .config import QuantizeConfig

# backend name -> "module:class" of its Quantizer (quantizer.py): adding a backend is one file and one line here, or
# `register` in your code, or an entry point in the group `edgekit.quantizers` of your package
REGISTRY = Registry("backend", "edgekit.quantizers")
register = REGISTRY.register
names = REGISTRY.names  # the backends edgekit quantize builds INT8 for, plugins included
register("openvino", "edgekit.quantize.openvino:OpenVINOQuantizer")
register("onnxruntime", "edgekit.quantize.onnxruntime:OnnxRuntimeQuantizer")
register("tensorrt", "edgekit.quantize.tensorrt:TensorRTQuantizer")
METHODS = ("auto", "minmax", "entropy", "percentile")


def quantizer_class(backend: str):
    """The Quantizer class registered for `backend` (imports its module, not the backend's library)."""
    return REGISTRY.get(backend)


def output_claim(onnx_path, data, config: QuantizeConfig) -> dict:
    """claim_output/check_outputs arguments of a quantization: its folder, what it reads and the names it writes."""
    from pathlib import Path

    from ..outputs import artifact_inputs, data_inputs
    from .job import BASELINE_FILE, BASELINE_MATCHES, DOMAIN_FILE, FAILED_SUFFIX

    onnx, b = Path(onnx_path), config.backend
    names = [f"{onnx.stem}_{p}_{b}{s}" for p in ("int8", "fp16") for s in ("", FAILED_SUFFIX)]
    return {"out": config.out_dir or onnx.parent, "inputs": artifact_inputs(onnx) + data_inputs(data),
            "files": names + [BASELINE_FILE, BASELINE_MATCHES, DOMAIN_FILE, f".quantize-{b}.work"]}


def quantize(onnx_path, data, config: QuantizeConfig | None = None, *, log: Callable = print, **options) -> dict:
    """FP32 ONNX -> gated INT8 artifact; returns the result dict, raises AccuracyGateError after a FAILED sidecar.

    `options` are QuantizeConfig fields (backend=..., method=..., ...), applied over `config`.
    """
    from ..outputs import check_outputs

    config = dataclasses.replace(config or QuantizeConfig(), **options)
    check_outputs(**output_claim(onnx_path, data, config))
    cls = quantizer_class(config.backend)
    if config.method not in METHODS:
        raise ArtifactError(f"unknown method '{config.method}' (choose from {', '.join(METHODS)})")
    quantizer = cls()
    quantizer.check_available()
    from .job import Job
    from .quantizer import run

    job = Job(onnx_path, data, config, log, config.device or quantizer.default_device)
    try:
        run(job, quantizer)
        return job.finish()
    finally:
        job.cleanup()


__all__ = ["quantize", "QuantizeConfig", "names", "register", "METHODS"]
