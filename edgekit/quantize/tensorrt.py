"""TensorRT FP16 and INT8 engines from ONNX.

TensorRT >= 10: explicit quantization, built from the Q/DQ ONNX that the ONNX Runtime path writes (symmetric int8,
per-channel weights). Older TensorRT: implicit INT8 with an IInt8EntropyCalibrator2 / IInt8MinMaxCalibrator made by a
factory at call time (the base class lives in the lazily imported tensorrt module), fed by the same calibration set
and reading/writing a calibration cache file.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from .._imports import require
from ..data.calibration import CalibrationSet
from ..errors import ArtifactError
from ..io import atomic_path
from ..runtime.backends.tensorrt import build_engine
from .job import Job
from .quantizer import Quantizer


def torch_to_device(device: str = "cuda:0") -> Callable:
    """A function copying a numpy batch into one reusable CUDA buffer and returning its address."""
    torch = require("torch", "TensorRT calibration buffers")
    state = {}

    def copy(batch):
        t = torch.from_numpy(batch)
        buf = state.get("buf")
        if buf is None or tuple(buf.shape) != tuple(t.shape):
            buf = state["buf"] = torch.empty(t.shape, dtype=t.dtype, device=device)
        buf.copy_(t)
        return int(buf.data_ptr())

    return copy


def make_calibrator(calib: CalibrationSet, cache_path, batch_size: int = 8, algorithm: str = "entropy",
                    base=None, to_device: Callable | None = None, log=print):
    """An INT8 calibrator instance; the class is created here because its base class comes from tensorrt at run time.

    `base` and `to_device` default to tensorrt's calibrator class and a torch CUDA buffer; tests inject fakes.
    """
    if base is None:
        trt = require("tensorrt", "TensorRT INT8 calibration")
        bases = {"entropy": trt.IInt8EntropyCalibrator2, "minmax": trt.IInt8MinMaxCalibrator}
        if algorithm not in bases:
            raise ArtifactError(f"TensorRT calibrator '{algorithm}' is not available (choose entropy or minmax)")
        base = bases[algorithm]
    to_device = to_device or torch_to_device()
    cache_path = Path(cache_path)

    class Calibrator(base):
        """Feeds calibration batches of a fixed size; reads and writes the calibration cache file."""

        def __init__(self):
            base.__init__(self)
            self.batch_size, self.cache_path = batch_size, cache_path
            self.batches_served = 0
            self._batches = calib.batches(batch_size)

        def get_batch_size(self) -> int:
            return self.batch_size

        def get_batch(self, names, *args):
            batch = next(self._batches, None)
            if batch is None:
                return None
            self.batches_served += 1
            return [to_device(batch)]

        def read_calibration_cache(self, *args):
            if self.cache_path.exists():
                log(f"TensorRT calibration cache: reading {self.cache_path}")
                return self.cache_path.read_bytes()
            return None

        def write_calibration_cache(self, cache) -> None:
            with atomic_path(self.cache_path) as tmp:
                tmp.write_bytes(bytes(cache))
            log(f"TensorRT calibration cache: wrote {self.cache_path}")

    return Calibrator()


def explicit_quantization(version: str) -> bool:
    """TensorRT 10 builds INT8 from Q/DQ nodes; implicit (calibrator) INT8 is deprecated there."""
    return int(version.split(".")[0]) >= 10


class TensorRTQuantizer(Quantizer):
    """INT8 engines (Q/DQ from the ONNX Runtime path on TensorRT >= 10, a calibrator before), FP16 last."""

    name = "tensorrt"
    requires = (("tensorrt", "TensorRT engines"), ("torch", "TensorRT device buffers"))
    default_device = "cuda:0"
    float_fallback = "fp16"

    def prepare(self, job: Job) -> None:
        from ..runtime.backends.tensorrt import cuda_index, gpu_info
        from .onnxruntime import preprocess

        trt = require("tensorrt", "TensorRT engines")
        job.sidecar_extra["tensorrt"] = {"version": trt.__version__, **gpu_info(cuda_index(job.device)),
                                         "hardware_compatibility": "none"}
        self.cfg = job.recipe.backend("tensorrt")
        self.workspace_gb = float(self.cfg.get("workspace_gb", 4))
        self.explicit = explicit_quantization(trt.__version__)
        self.pre = preprocess(job.onnx, job.work / "preprocessed.onnx") if self.explicit else None

    def nodes(self, job: Job) -> list[tuple[str, str]]:
        from .onnxruntime import graph_nodes

        return graph_nodes(job.onnx)

    def methods(self, job: Job) -> list[str]:
        return [str(self.cfg.get("int8_method", "entropy"))]

    def attempt_extra(self, job: Job) -> dict:
        method = job.method if job.method != "auto" else self.methods(job)[0]
        return {"quantization": "explicit (Q/DQ)" if self.explicit else f"implicit ({method} calibrator)"}

    def build_attempt(self, job: Job, folder: Path, keep_float: list[str], method: str) -> Path:
        if self.explicit:
            from .onnxruntime import quantize_job

            qdq = quantize_job(job, self.pre, folder / "model_qdq.onnx", method, keep_float)
            return build_engine(qdq, folder / "model.engine", "int8", workspace_gb=self.workspace_gb, log=job.log)
        shared = job.work / "calibration.cache"  # computed by the first attempt, read by the fallbacks
        cal = make_calibrator(job.calib, shared, int(self.cfg.get("calib_batch", 8)),
                              "minmax" if method == "minmax" else "entropy", to_device=torch_to_device(job.device),
                              log=job.log)
        engine = build_engine(job.onnx, folder / "model.engine", "int8", cal, keep_float, self.workspace_gb, job.log)
        if shared.exists():
            shutil.copy2(shared, folder / "calibration.cache")
        return engine

    def build_float(self, job: Job, folder: Path, precision: str) -> Path:
        return build_engine(job.onnx, folder / "model.engine", precision, workspace_gb=self.workspace_gb, log=job.log)
