"""OpenVINO backend: IR (.xml/.bin or its folder) or ONNX on CPU, GPU, NPU, AUTO."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..._imports import require
from ...errors import ArtifactError
from .base import Backend

_DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU", "auto": "AUTO"}


def ov_device(device: str) -> str:
    d = device.lower()
    if d in _DEVICES:
        return _DEVICES[d]
    if d.startswith("gpu.") or d.startswith("gpu:"):
        return "GPU." + d.split(d[3])[1]
    if d.startswith("cuda"):
        raise ArtifactError(f"device '{device}' is not an OpenVINO device (use cpu, GPU, NPU or AUTO)")
    return device.upper()


def ov_reason(e: Exception) -> str:
    """The meaningful line of an OpenVINO error, not its 'Exception from src/...cpp:N:' header."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from src", "Check '")) and not ln.endswith(".cpp")]
    return (useful or lines or [type(e).__name__])[0][:300]


class OpenVINOBackend(Backend):
    name = "openvino"

    def load_impl(self) -> None:
        ov = require("openvino", "the OpenVINO backend")
        from ..meta import find_model_file

        path = find_model_file(self.path) if Path(self.path).is_dir() else self.path
        core = ov.Core()
        dev = ov_device(self.device)
        avail = core.available_devices
        if dev.split(".")[0] not in [a.split(".")[0] for a in avail] and dev != "AUTO":
            raise ArtifactError(f"OpenVINO device '{dev}' is not available here (available: {', '.join(avail)})")
        try:
            model = core.read_model(str(path))
        except Exception as e:
            raise ArtifactError(f"{path}: OpenVINO cannot read this model: {ov_reason(e)}") from None
        shape = model.inputs[0].get_partial_shape()
        self._batch = shape[0].get_length() if shape[0].is_static else None
        hint = self.options.get("hint", "LATENCY")
        config = {"PERFORMANCE_HINT": hint}
        if self.options.get("streams"):
            config["NUM_STREAMS"] = str(self.options["streams"])
        if self.options.get("threads"):
            config["INFERENCE_NUM_THREADS"] = int(self.options["threads"])
        self.compiled = core.compile_model(model, dev, config)
        self.request = self.compiled.create_infer_request()
        self.core = core

    def infer_impl(self, blob: np.ndarray) -> np.ndarray:
        self.request.infer({0: blob}, share_inputs=True)
        return self.request.get_output_tensor(0).data.copy()

    @property
    def fixed_batch(self):
        return self._batch

    def info(self) -> dict:
        d = super().info()
        try:
            d["ov_device"] = self.compiled.get_property("EXECUTION_DEVICES")
        except Exception:
            pass
        return d

    def close_impl(self) -> None:
        del self.request, self.compiled
