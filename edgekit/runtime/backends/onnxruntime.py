"""ONNX Runtime backend: CPU, CUDA and TensorRT execution providers."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..._imports import require
from ...errors import ArtifactError
from ..concurrency import SplitThreadsRunner
from ..devices import parse_device
from ..embedding import detection_index, embedding_index
from .base import Backend


class OnnxRuntimeRunner(SplitThreadsRunner):
    """Parallel ONNX Runtime sessions; on CPU the cores are split between them (intra-op threads each)."""

    kind = "onnxruntime parallel sessions (intra-op threads split)"


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    suffixes = (".onnx",)
    module = extra = "onnxruntime"
    device_kinds = ("cpu", "cuda")
    executes = ("fp32", "int8")
    carries_embedding = True
    exported = ("fp32",)  # the exported ONNX is its FP32 artifact
    quantized = ("int8",)  # QDQ, by edgekit quantize
    reference = True
    short = "ORT"

    @classmethod
    def devices_impl(cls) -> list[str]:
        have = require("onnxruntime", "the ONNX Runtime backend").get_available_providers()
        return ["cpu"] + (["cuda"] if "CUDAExecutionProvider" in have else [])

    @classmethod
    def describe_impl(cls) -> dict:
        return {"providers": require("onnxruntime", "the ONNX Runtime backend").get_available_providers()}

    @classmethod
    def offers(cls, target: str, explicit: bool = False) -> tuple[str, ...]:
        """fp32 (the exported ONNX itself) and int8 (QDQ), on any target: where it cannot run, its rows say so."""
        return cls.executes

    @classmethod
    def runner(cls, device: str):
        return OnnxRuntimeRunner

    def providers(self) -> list:
        ort = require("onnxruntime", "the ONNX Runtime backend")
        have = ort.get_available_providers()
        kind, idx = parse_device(self.device)
        if kind == "cuda":
            idx = idx or 0
            wanted = ["CUDAExecutionProvider"]
            if self.options.get("trt_ep"):
                wanted.insert(0, "TensorrtExecutionProvider")
            missing = [p for p in wanted if p not in have]
            if missing:
                raise ArtifactError(f"device {self.device}: ONNX Runtime here has no {missing[0]} "
                                    f"(available: {', '.join(have)}); pip install 'edgekit[onnxruntime-gpu]'")
            return [(p, {"device_id": idx}) for p in wanted] + ["CPUExecutionProvider"]
        if kind != "cpu":
            raise ArtifactError(f"device '{self.device}' is not supported by the onnxruntime backend (use cpu or cuda:N)")
        return ["CPUExecutionProvider"]

    def load_impl(self) -> None:
        ort = require("onnxruntime", "the ONNX Runtime backend")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.options.get("threads"):
            so.intra_op_num_threads = int(self.options["threads"])
        so.log_severity_level = 3
        if self.options.get("perf_counters"):  # ONNX Runtime's profiler: a JSON trace, read by end_profiling()
            import tempfile

            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tempfile.mkdtemp(prefix="edgekit-ortprof-")) / "ort")
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=self.providers())
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types
            raise ArtifactError(f"{self.path}: ONNX Runtime cannot load this model: {str(e).splitlines()[0]}") from None
        inp = self.session.get_inputs()[0]
        outs = self.session.get_outputs()
        names = [o.name for o in outs]
        det = detection_index(names, self.meta)
        emb = embedding_index(names)
        if self.meta is not None:
            from ..meta import check_io

            check_io(self.path, self.meta, inp.shape, outs[det].shape)
        self._det_name = names[det]
        self._pair = [names[det]] + ([names[emb]] if emb is not None else [])
        self.has_embedding = emb is not None
        self.input_name = inp.name
        self._dtype = np.float16 if "float16" in inp.type else np.float32
        b = inp.shape[0]
        self._batch = b if isinstance(b, int) else None

    def runtime_settings(self) -> dict:
        """Intra-op threads (0: ONNX Runtime's default, one per core) and the execution providers in use."""
        so = self.session.get_session_options()
        return {"threads": so.intra_op_num_threads, "inter_op_threads": so.inter_op_num_threads,
                "providers": self.session.get_providers()}

    def end_profiling(self) -> str | None:
        """Stop the profiler (option perf_counters=True) and return its JSON trace file; None when it was off."""
        return self.session.end_profiling() if self.options.get("perf_counters") else None

    def infer_impl(self, blob: np.ndarray) -> np.ndarray:
        return self.session.run([self._det_name], {self.input_name: blob.astype(self._dtype, copy=False)})[0]

    def infer_embed_impl(self, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        det, emb = self.session.run(self._pair, {self.input_name: blob.astype(self._dtype, copy=False)})
        return det, emb

    @property
    def input_dtype(self):
        return self._dtype

    def close_impl(self) -> None:
        del self.session
