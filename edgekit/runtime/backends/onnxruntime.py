"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers."""
from __future__ import annotations

import numpy as np

from ..._imports import require
from ...errors import ArtifactError
from .base import Backend


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def providers(self) -> list:
        ort = require("onnxruntime", "the ONNX Runtime backend")
        have = ort.get_available_providers()
        dev = self.device.lower()
        if dev.startswith("cuda"):
            idx = int(dev.split(":")[1]) if ":" in dev else 0
            wanted = ["CUDAExecutionProvider"]
            if self.options.get("trt_ep"):
                wanted.insert(0, "TensorrtExecutionProvider")
            missing = [p for p in wanted if p not in have]
            if missing:
                raise ArtifactError(f"device {self.device}: ONNX Runtime here has no {missing[0]} "
                                    f"(available: {', '.join(have)}); pip install 'edgekit[onnxruntime-gpu]'")
            return [(p, {"device_id": idx}) for p in wanted] + ["CPUExecutionProvider"]
        if dev != "cpu":
            raise ArtifactError(f"device '{self.device}' is not supported by the onnxruntime backend (use cpu or cuda:N)")
        return ["CPUExecutionProvider"]

    def load_impl(self) -> None:
        ort = require("onnxruntime", "the ONNX Runtime backend")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.options.get("threads"):
            so.intra_op_num_threads = int(self.options["threads"])
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=self.providers())
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types
            raise ArtifactError(f"{self.path}: ONNX Runtime cannot load this model: {str(e).splitlines()[0]}") from None
        inp = self.session.get_inputs()[0]
        if self.meta is not None:
            from ..meta import check_io

            check_io(self.path, self.meta, inp.shape, self.session.get_outputs()[0].shape)
        self.input_name = inp.name
        self._dtype = np.float16 if "float16" in inp.type else np.float32
        b = inp.shape[0]
        self._batch = b if isinstance(b, int) else None

    def infer_impl(self, blob: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: blob.astype(self._dtype, copy=False)})[0]

    @property
    def input_dtype(self):
        return self._dtype

    @property
    def fixed_batch(self):
        return self._batch

    def close_impl(self) -> None:
        del self.session
