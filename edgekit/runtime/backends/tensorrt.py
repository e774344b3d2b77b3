"""TensorRT backend (TensorRT 10 tensor API): .engine files, device buffers through torch, checked before loading.

An execution context (its tensor addresses and input shape) is not thread-safe: calls on one Engine are serialized
by a lock; parallel inference uses one Engine (context and stream) per thread (TensorRTRunner below).
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np

from ..._imports import available, require
from ...errors import ArtifactError
from ...io import atomic_path
from ..concurrency import ThreadedRunner
from ..devices import parse_device
from ..embedding import detection_index, embedding_index
from .base import Backend


def same_version(built: str, running: str) -> bool:
    """Engines are tied to major.minor.patch of the TensorRT that built them (the build number may differ)."""
    return built.split(".")[:3] == running.split(".")[:3]


def check_engine(doc: dict, trt_version: str, compute_capability: str, path) -> None:
    """Raise a one-line ArtifactError when the sidecar says the engine was built for another TensorRT or GPU."""
    info = (doc or {}).get("tensorrt")
    if not info:
        warnings.warn(f"{path}: sidecar has no 'tensorrt' section; cannot check the engine matches this TensorRT/GPU",
                      stacklevel=3)
        return
    built_v, built_cc = str(info.get("version", "")), str(info.get("compute_capability", ""))
    problems = []
    if built_v and not same_version(built_v, trt_version):
        problems.append(f"built with TensorRT {built_v}, this is TensorRT {trt_version}")
    if built_cc and built_cc != str(compute_capability) and info.get("hardware_compatibility", "none") == "none":
        gpu = f" ({info['gpu']})" if info.get("gpu") else ""
        problems.append(f"built for compute capability {built_cc}{gpu}, this GPU is {compute_capability}")
    if problems:
        raise ArtifactError(f"{path}: engine {'; '.join(problems)}: rebuild it here with 'edgekit quantize "
                            f"--backend tensorrt'")


def cuda_index(device: str) -> int:
    kind, idx = parse_device(device)
    if kind == "cuda" or (kind == "gpu" and idx is None):
        return idx or 0
    raise ArtifactError(f"device '{device}' is not a CUDA device: TensorRT engines run on cuda:N")


def gpu_info(index: int = 0) -> dict:
    """Compute capability ('8.9') and name of a CUDA device, through torch."""
    torch = require("torch", "TensorRT device buffers")
    if not torch.cuda.is_available():
        raise ArtifactError("TensorRT needs a CUDA GPU, and torch sees none here")
    major, minor = torch.cuda.get_device_capability(index)
    return {"compute_capability": f"{major}.{minor}", "gpu": torch.cuda.get_device_name(index)}


def build_engine(onnx_path: Path, engine_path: Path, precision: str, calibrator=None, float_layers=(),
                 workspace_gb: float = 4, log=print) -> Path:
    """Parse ONNX, set FP16/INT8 flags (and layers pinned to float), build and write the serialized engine."""
    trt = require("tensorrt", "TensorRT engines")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ArtifactError(f"{onnx_path}: TensorRT cannot parse this ONNX: {errs.splitlines()[0] if errs else '?'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        if calibrator is not None:
            config.int8_calibrator = calibrator
    pinned = set(float_layers)
    if pinned:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.name in pinned:
                layer.precision = trt.float16 if precision != "fp32" else trt.float32
    log(f"TensorRT {trt.__version__}: building {precision} engine from {onnx_path.name}")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ArtifactError(f"{onnx_path}: TensorRT failed to build a {precision} engine (see the log above)")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(plan))
    return engine_path


class TensorRTRunner(ThreadedRunner):
    """One TensorRT execution context and CUDA stream per Engine, enqueued from its own thread."""

    kind = "tensorrt execution contexts on CUDA streams"


class TensorRTBackend(Backend):
    name = "tensorrt"
    suffixes = (".engine", ".plan")
    module = extra = "tensorrt"
    device_kinds = ("cuda",)
    carries_embedding = True
    executes = ("fp32", "fp16", "int8")
    builds = ("fp16",)  # an FP16 engine, built on the target GPU (see build_impl)
    quantized = ("int8",)  # by edgekit quantize
    baseline_backend = "onnxruntime"  # no FP32 engine is built: the FP32 ONNX on ONNX Runtime CPU stands in
    short = "TRT"

    @classmethod
    def devices_impl(cls) -> list[str]:
        """CUDA devices torch sees (TensorRT's buffers go through torch); [] without torch."""
        if not available("torch"):
            return []
        torch = require("torch", "TensorRT device buffers")
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]

    @classmethod
    def describe_impl(cls) -> dict:
        return {"version": require("tensorrt", "the TensorRT backend").__version__}

    @classmethod
    def offers(cls, target: str, explicit: bool = False) -> tuple[str, ...]:
        """fp16 and int8 engines (an FP32 engine is not built by train-export)."""
        return tuple(p for p in cls.precisions(target) if p != "fp32")

    @classmethod
    def runner(cls, device: str):
        return TensorRTRunner

    @classmethod
    def build_impl(cls, source: Path, precision: str, folder: Path, meta, calib=None, log=print, device="cuda:0",
                   **opts) -> tuple[Path, dict]:
        """An engine for this GPU and TensorRT; the sidecar says which (checked before an engine is loaded)."""
        trt = require("tensorrt", "TensorRT engines")
        engine = build_engine(source, folder / "model.engine", precision, log=log)
        return engine, {"tensorrt": {"version": trt.__version__, **gpu_info(cuda_index(device)),
                                     "hardware_compatibility": "none"}}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()

    def running(self) -> tuple[str, str]:
        """(TensorRT version, compute capability) of this process and device."""
        trt = require("tensorrt", "the TensorRT backend")
        return trt.__version__, gpu_info(cuda_index(self.device))["compute_capability"]

    def load_impl(self) -> None:
        doc = self.meta.raw if self.meta is not None else {}
        version, cc = self.running()
        check_engine(doc, version, cc, self.path)  # before deserializing: a mismatched plan can crash the process
        trt = require("tensorrt", "the TensorRT backend")
        torch = require("torch", "TensorRT device buffers")
        self.torch, self.dev = torch, torch.device("cuda", cuda_index(self.device))
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise ArtifactError(f"{self.path}: TensorRT {version} could not deserialize this engine")
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._det = self.outputs[detection_index(self.outputs, self.meta)] if self.outputs else None
        emb = embedding_index(self.outputs)
        self._emb = None if emb is None else self.outputs[emb]
        self.has_embedding = self._emb is not None
        if len(self.inputs) != 1:
            raise ArtifactError(f"{self.path}: expected one input tensor, the engine has {len(self.inputs)}")
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        b = engine.get_tensor_shape(self.inputs[0])[0]
        self._batch = int(b) if b > 0 else None
        self.stream = torch.cuda.Stream(self.dev)

    def infer_impl(self, blob: np.ndarray) -> np.ndarray:
        with self.lock:
            return self._infer(blob)[self._det].float().cpu().numpy()

    def infer_embed_impl(self, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            outs = self._infer(blob)
            return outs[self._det].float().cpu().numpy(), outs[self._emb].float().cpu().numpy()

    def _infer(self, blob: np.ndarray) -> dict:
        torch, ctx = self.torch, self.context
        name = self.inputs[0]
        x = torch.from_numpy(np.ascontiguousarray(blob.astype(self.dtypes[name], copy=False))).to(self.dev)
        ctx.set_input_shape(name, tuple(x.shape))
        ctx.set_tensor_address(name, x.data_ptr())
        outs = {}
        for n in self.outputs:
            shape = tuple(ctx.get_tensor_shape(n))
            outs[n] = torch.empty(shape, dtype=_torch_dtype(torch, self.dtypes[n]), device=self.dev)
            ctx.set_tensor_address(n, outs[n].data_ptr())
        with torch.cuda.stream(self.stream):
            if not ctx.execute_async_v3(self.stream.cuda_stream):
                raise ArtifactError(f"{self.path}: TensorRT execution failed")
        self.stream.synchronize()
        return outs

    @property
    def precision_executed(self) -> str:
        """From the sidecar: INT8 engines are built with FP16 allowed; FP32 ones use TF32 on compute capability 8+."""
        p = self.meta.precision if self.meta is not None else "fp32"
        if p == "int8":
            return "int8+fp16"
        cc = str((self.meta.raw if self.meta is not None else {}).get("tensorrt", {}).get("compute_capability", "0"))
        if p == "fp32" and cc.split(".")[0].isdigit() and int(cc.split(".")[0]) >= 8:
            return "tf32"
        return p

    def info(self) -> dict:
        d = super().info()
        d.update({"tensorrt": self.running()[0]})
        return d

    def close_impl(self) -> None:
        del self.context, self.engine, self.runtime


def _torch_dtype(torch, dt: np.dtype):
    return {np.dtype(np.float32): torch.float32, np.dtype(np.float16): torch.float16, np.dtype(np.int32): torch.int32,
            np.dtype(np.int64): torch.int64, np.dtype(np.int8): torch.int8, np.dtype(np.uint8): torch.uint8,
            np.dtype(np.bool_): torch.bool}[np.dtype(dt)]
