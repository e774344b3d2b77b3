"""OpenVINO backend: IR (.xml/.bin or its folder) or ONNX on CPU, GPU, NPU, AUTO.

Precision: the plugin's own default is not FP32 everywhere (the CPU plugin runs bf16 wherever the CPU has
AVX512_BF16 or AMX; GPU runs f16), so the backend always sets INFERENCE_PRECISION_HINT: f32 for fp32 and int8
artifacts (the float part of an INT8 IR), bf16 only when asked for (option `precision`, or a sidecar saying
`precision: bf16`), and reads back what the compiled model executes.

Threads: each call takes its own infer request from a pool sized to OPTIMAL_NUMBER_OF_INFER_REQUESTS (blocking while
every request is busy) and copies the output before handing the request back.
"""
from __future__ import annotations

import queue
import warnings
from collections import deque
from pathlib import Path

import numpy as np

from ..._imports import require
from ...errors import ArtifactError
from ..concurrency import Runner
from ..devices import parse_device
from ..embedding import detection_index, embedding_index
from .base import Backend

_DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU", "auto": "AUTO"}
# edgekit precision name <-> OpenVINO element type name, and the OPTIMIZATION_CAPABILITIES entry that allows it
OV_TYPES = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_FROM_OV = {v: k for k, v in OV_TYPES.items()}
CAPABILITY = {"fp32": "FP32", "bf16": "BF16", "fp16": "FP16"}


def ov_device(device: str) -> str:
    """edgekit's device string as OpenVINO names it: cpu -> CPU, gpu:1 -> GPU.1, HETERO:GPU,CPU unchanged."""
    kind, idx = parse_device(device)
    if kind.startswith("cuda"):
        raise ArtifactError(f"device '{device}' is not an OpenVINO device (use cpu, GPU, NPU or AUTO)")
    name = _DEVICES.get(kind, kind.upper())
    return name if idx is None else f"{name}.{idx}"


def ov_reason(e: Exception) -> str:
    """The meaningful line of an OpenVINO error, not its 'Exception from src/...cpp:N:' header."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception from src", "Check '")) and not ln.endswith(".cpp")]
    return (useful or lines or [type(e).__name__])[0][:300]


def capabilities(core, dev: str) -> list[str]:
    """OPTIMIZATION_CAPABILITIES of an OpenVINO device ('BF16', 'FP16', 'FP32', 'INT8', ...); [] when unknown."""
    try:
        return [str(c).upper() for c in core.get_property(dev, "OPTIMIZATION_CAPABILITIES")]
    except Exception:  # AUTO/MULTI and some plugins do not report it
        return []


def float_precision(precision: str | None) -> str:
    """The floating-point part of an artifact precision: int8 -> fp32, fp32/bf16/fp16 unchanged."""
    p = (precision or "fp32").lower()
    if p in ("int8", "fp32"):
        return "fp32"
    if p not in OV_TYPES:
        raise ArtifactError(f"unknown precision '{precision}' (choose fp32, bf16 or fp16)")
    return p


def execution_hint(core, dev: str, artifact_precision: str, requested: str | None, path) -> str | None:
    """The INFERENCE_PRECISION_HINT value for this device, or None to leave the plugin's default (AUTO, NPU).

    An explicit request the device cannot run is an error; so is a bf16 artifact on a device without bf16.
    An fp16 artifact (FP16 weights) runs f16 where the device has it, else f32.
    """
    want = float_precision(requested or artifact_precision)
    caps = capabilities(core, dev)
    if not caps:
        return OV_TYPES[want]  # cannot check here; compile and read back
    if CAPABILITY[want] in caps:
        return OV_TYPES[want]
    if want == "fp16" and not requested:
        return "f32"
    if requested or want == "bf16":
        no_bf16 = " (this CPU has no bf16)" if want == "bf16" and dev == "CPU" else ""
        raise ArtifactError(f"{path}: {want} execution was asked for, but OpenVINO {dev} here cannot run it"
                            f"{no_bf16}; its capabilities: {', '.join(caps)}")
    warnings.warn(f"{path}: OpenVINO {dev} does not list {CAPABILITY[want]}; it runs its own default precision",
                  stacklevel=3)
    return None


def executed_precision(compiled) -> str | None:
    """The float precision a compiled model runs in ('fp32', 'bf16', 'fp16'); None when the device won't say."""
    try:
        t = compiled.get_property("INFERENCE_PRECISION_HINT")
    except Exception:  # AUTO does not expose it
        return None
    name = t.to_string() if hasattr(t, "to_string") else str(t)
    return _FROM_OV.get(name, name)


def has_fake_quantize(model) -> bool:
    return any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


class OpenVINOBackend(Backend):
    name = "openvino"
    suffixes = (".xml", ".onnx")
    reads_folders = True
    module = extra = "openvino"
    device_kinds = ("cpu", "gpu", "npu", "auto")

    @classmethod
    def runs_on(cls, device: str) -> bool:
        """Its devices, and OpenVINO's virtual ones over a list of them (AUTO:GPU,CPU, HETERO:..., MULTI:...)."""
        kind = parse_device(device)[0]
        return super().runs_on(device) or kind.startswith(("auto:", "hetero:", "multi:"))
    executes = ("fp32", "int8")  # and bf16 / fp16 where the device lists them: see extra_precisions()
    builds = ("fp32", "fp16", "bf16")  # the IR: FP32 or FP16 weights, or FP32 weights executed in bf16 (see build)
    build_modules = ("openvino",)
    quantized = ("int8",)  # NNCF, by edgekit quantize
    short = "OV"
    carries_embedding = True

    @classmethod
    def devices_impl(cls) -> list[str]:
        return list(require("openvino", "the OpenVINO backend").Core().available_devices)

    @classmethod
    def capabilities_of(cls, device: str) -> list[str] | None:
        """OPTIMIZATION_CAPABILITIES of a device (BF16, FP16, INT8, ...); None when unknown; never raises."""
        if not cls.installed():
            return None
        try:
            return capabilities(require("openvino").Core(), ov_device(device)) or None
        except Exception:
            return None

    @classmethod
    def device_name(cls, device: str) -> str | None:
        """FULL_DEVICE_NAME of a device (GPU, NPU, ...); None when unknown; never raises."""
        if not cls.installed():
            return None
        try:
            return str(require("openvino").Core().get_property(ov_device(device), "FULL_DEVICE_NAME"))
        except Exception:
            return None

    @classmethod
    def extra_precisions(cls, device: str) -> tuple[str, ...]:
        caps = cls.capabilities_of(device) or []
        return tuple(p for p in ("bf16", "fp16") if CAPABILITY[p] in caps)

    @classmethod
    def offers(cls, target: str, explicit: bool = False) -> tuple[str, ...]:
        """fp32, int8; fp16 off the CPU (FP16 weights run as FP32 there: nothing to learn); bf16 where the target
        runs it, or wherever it was asked for (its row then says why it was not built)."""
        if not cls.runs_on(target):
            return ()
        out = cls.executes + (("fp16",) if parse_device(target)[0] != "cpu" else ())
        return out + (("bf16",) if explicit or "bf16" in cls.precisions(target) else ())

    @classmethod
    def device_facts(cls, device: str) -> dict:
        return {"openvino_capabilities": cls.capabilities_of(device)}

    @classmethod
    def build(cls, onnx_path, precision: str = "fp32", out_dir=None, calib=None, checkpoint=None, log=print,
              device: str = "cpu", carry=None, **opts) -> Path:
        """model.onnx -> out_dir/model.xml (+ .bin, model.json); returns the model.xml.

        carry(onnx, xml, doc) -> doc, when given, brings the ONNX's drift profile over (the same graph), inside the
        atomic folder; without it the IR has none of its own until one is attached (edgekit.drift).

        precision: fp32 (default), fp16 (FP16 weights) or bf16 (FP32 weights, executed in bf16: refused where
        `device` cannot run bf16). The sidecar (the ONNX's, carried over) records the precision the IR executed on
        `device`, and the IR carries it too (rt_info model_info).
        """
        from ..._imports import tool_versions
        from ...io import atomic_dir
        from ..embedded_meta import set_model_info
        from ..meta import read_sidecar, write_sidecar

        ov = require("openvino", "OpenVINO conversion")
        if precision not in cls.builds:
            raise ArtifactError(f"unknown OpenVINO precision '{precision}' (choose {', '.join(cls.builds)})")
        onnx_path = Path(onnx_path)
        out_dir = Path(out_dir) if out_dir else onnx_path.parent / f"{cls.name}_{precision}"
        doc = read_sidecar(onnx_path)
        model = ov.convert_model(str(onnx_path))
        with atomic_dir(out_dir) as tmp:
            doc.update({"precision": precision, "backend": "openvino", "converted_from": str(onnx_path),
                        "versions": {**doc.get("versions", {}), **tool_versions("openvino")}})
            doc.pop("parity", None)
            doc.pop("accuracy", None)  # the ONNX's cached FP32 baselines describe the ONNX, not this IR
            doc.pop("threshold", None)  # so does its deployment threshold: this IR gets its own
            profile = doc.pop("drift_profile", None)  # its file is beside the ONNX: only `carry` brings it over
            ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=precision == "fp16")
            doc["precision_executed"] = cls.executed_on(tmp / "model.xml", doc, device)
            doc["precision_executed_on"] = device
            if carry is not None and profile:
                doc = carry(onnx_path, tmp / "model.xml", {**doc, "drift_profile": profile})
            set_model_info(model, doc)  # the sidecar's content inside the IR too (rt_info model_info): saved again
            ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=precision == "fp16")
            write_sidecar(tmp / "model.xml", doc)
        log(f"wrote {out_dir}/model.xml ({precision.upper()}{' weights' if precision != 'bf16' else ' execution'}, "
            f"runs {doc['precision_executed']} on {device})")
        return out_dir / "model.xml"

    @classmethod
    def executed_on(cls, xml: Path, doc: dict, device: str = "cpu") -> str | None:
        """Compile the saved IR as Engine would and return the precision it executes (raises if it can't run it)."""
        from ..meta import from_sidecar

        backend = cls(xml, device, from_sidecar(doc)).load()
        try:
            return backend.precision_executed
        finally:
            backend.close()

    @classmethod
    def runner(cls, device: str):
        return OpenVINORunner

    @classmethod
    def from_compiled(cls, compiled, path, meta, device: str = "CPU", int8: bool = False) -> "OpenVINOBackend":
        """A loaded backend over an ov.CompiledModel compiled elsewhere (NNCF's accuracy control hands one over)."""
        b = cls(path, device, meta)
        b.int8 = int8
        b.adopt(compiled)
        b.loaded = True
        return b

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
        self.int8 = has_fake_quantize(model) or (self.meta is not None and self.meta.precision == "int8")
        requested = self.options.get("precision")
        artifact_precision = self.meta.precision if self.meta is not None else "fp32"
        config = {"PERFORMANCE_HINT": str(self.options.get("hint") or "LATENCY").upper()}
        hint = execution_hint(core, dev, artifact_precision, requested, path)
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        if self.options.get("streams"):
            config["NUM_STREAMS"] = str(self.options["streams"])
        if self.options.get("threads"):
            config["INFERENCE_NUM_THREADS"] = int(self.options["threads"])
        if self.options.get("perf_counters"):
            config["PERF_COUNT"] = True
        self.adopt(core.compile_model(model, dev, config))
        if hint and self.executed and self.executed != _FROM_OV[hint]:  # a plugin may substitute (f16 -> bf16)
            raise ArtifactError(f"{path}: asked OpenVINO {dev} for {_FROM_OV[hint]} execution, it compiled "
                                f"{self.executed}: refusing to report {self.executed} figures as {_FROM_OV[hint]}")
        self.core = core

    def adopt(self, compiled) -> None:
        """Run this compiled model: its batch, the precision it executes, a pool of infer requests."""
        shape = compiled.inputs[0].get_partial_shape()
        self._batch = shape[0].get_length() if shape[0].is_static else None
        self.compiled = compiled
        names = [set(o.get_names()) for o in compiled.outputs]
        self._det, self._emb = detection_index(names, self.meta), embedding_index(names)
        self.has_embedding = self._emb is not None
        self.executed = executed_precision(compiled)
        self._requests = self._request_pool()

    def _request_pool(self) -> queue.Queue:
        try:
            n = int(self.options.get("nireq") or self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        except Exception:
            n = 1
        pool: queue.Queue = queue.Queue()
        for _ in range(max(1, n)):
            pool.put(self.compiled.create_infer_request())
        return pool

    def infer_impl(self, blob: np.ndarray) -> np.ndarray:
        req = self._requests.get()  # blocks while every request is busy
        try:
            req.infer({0: blob}, share_inputs=True)
            return req.get_output_tensor(self._det).data.copy()
        finally:
            self._requests.put(req)

    def infer_embed_impl(self, blob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        req = self._requests.get()
        try:
            req.infer({0: blob}, share_inputs=True)
            return req.get_output_tensor(self._det).data.copy(), req.get_output_tensor(self._emb).data.copy()
        finally:
            self._requests.put(req)

    def runtime_settings(self) -> dict:
        """PERFORMANCE_HINT, NUM_STREAMS, infer requests, INFERENCE_NUM_THREADS and precision as compiled."""
        d = {"infer_requests": self._requests.qsize()}
        for key, prop in (("hint", "PERFORMANCE_HINT"), ("streams", "NUM_STREAMS"), ("threads", "INFERENCE_NUM_THREADS"),
                          ("optimal_infer_requests", "OPTIMAL_NUMBER_OF_INFER_REQUESTS"),
                          ("inference_precision", "INFERENCE_PRECISION_HINT"), ("execution_devices", "EXECUTION_DEVICES")):
            try:
                v = self.compiled.get_property(prop)
            except Exception:
                continue
            if isinstance(v, (list, tuple)):
                v = [str(x) for x in v]
            elif not isinstance(v, (int, float, bool)):
                v = v.to_string() if hasattr(v, "to_string") else str(v)
            d[key] = v
        return d

    def profiling_info(self) -> list[dict]:
        """Per-layer times of the most recently finished request (option perf_counters=True): name, type, ms."""
        req = self._requests.queue[-1]
        return [{"name": p.node_name, "type": p.node_type, "exec_type": p.exec_type, "status": str(p.status),
                 "real_ms": p.real_time.total_seconds() * 1e3, "cpu_ms": p.cpu_time.total_seconds() * 1e3}
                for p in req.get_profiling_info()]

    @property
    def precision_executed(self) -> str | None:
        if self.executed is None:
            return None
        return f"int8+{self.executed}" if self.int8 else self.executed

    def info(self) -> dict:
        d = super().info()
        try:
            d["ov_device"] = self.compiled.get_property("EXECUTION_DEVICES")
        except Exception:
            pass
        return d

    def close_impl(self) -> None:
        del self._requests, self.compiled


class OpenVINORunner(Runner):
    """PERFORMANCE_HINT THROUGHPUT and an AsyncInferQueue sized by OPTIMAL_NUMBER_OF_INFER_REQUESTS."""

    kind = "openvino AsyncInferQueue (PERFORMANCE_HINT THROUGHPUT)"

    def default_streams(self) -> int:
        return 0  # 0: let the plugin choose

    def open_impl(self) -> None:
        ov = require("openvino", "the OpenVINO backend")
        from ..engine import Engine

        opts = dict(self.options)
        opts["hint"] = opts.get("hint") or "THROUGHPUT"
        if self.streams:
            opts["streams"] = self.streams
        eng = Engine(self.path, self.device, "openvino", **opts)
        self.engines = [eng]
        compiled = eng.backend.compiled
        self.nreq = int(self.options.get("nireq") or compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        try:
            self.streams = int(compiled.get_property("NUM_STREAMS"))
        except Exception:
            self.streams = self.streams or self.nreq
        self.queue = ov.AsyncInferQueue(compiled, self.nreq)

    def describe(self) -> dict:
        return {"concurrency": self.kind, "streams": self.streams, "infer_requests": getattr(self, "nreq", None)}

    def map_impl(self, items):
        backend = self.engine.backend
        done: dict = {}
        det = backend._det
        self.queue.set_callback(lambda req, key: done.__setitem__(key, req.get_output_tensor(det).data.copy()))
        jobs: deque = deque()  # (job id, number of chunks, rows asked for, ctx)

        def ready():
            j, n, _, _ = jobs[0]
            return all((j, i) in done for i in range(n))

        def pop():
            j, n, rows, ctx = jobs.popleft()
            return backend.unpad([done.pop((j, i)) for i in range(n)], rows), ctx

        for job, (blob, ctx) in enumerate(items):
            chunks = backend.chunks(blob)  # the fixed batch the compiled model takes, the last one padded
            for i, c in enumerate(chunks):
                self.queue.start_async({0: c}, (job, i))  # blocks while every request is busy
            jobs.append((job, len(chunks), blob.shape[0], ctx))
            while jobs and ready():
                yield pop()
        self.queue.wait_all()
        while jobs:
            yield pop()

    def close(self) -> None:
        self.queue = None
        super().close()
