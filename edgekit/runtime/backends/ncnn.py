"""NCNN backend (Tencent ncnn, the runtime of Raspberry Pi and other ARM boards): model.ncnn.param + model.ncnn.bin.

Precision: ncnn turns fp16 storage and arithmetic on by default wherever it can, so the backend sets them from the
artifact (fp32: off; fp16: on) and reads the options back. ncnn executes fp16 only on ARM CPUs with fp16 arithmetic
(ARMv8.2 asimdhp); elsewhere (x86) an fp16 artifact is fp16 weights in the file, run in fp32 (checked on x86: the
output is identical with the fp16 options on and off).

Build: pnnx converts the exported ONNX (fp16=0: fp32 weights, fp16=1: fp16 weights). INT8 is not built: ncnn's
calibration tools (ncnn2table, ncnn2int8) are in neither the ncnn nor the pnnx wheel.

The model takes one image per call (ncnn.Mat is C x H x W): a batch is run image by image; for throughput the
runner opens parallel nets with the cores split between them. Option `threads` sets ncnn's OpenMP threads (default:
its physical core count); on a CPU other processes keep busy, its static split waits for the slowest thread
(measured: 2 threads 10x slower than 1 at 640 on 2 oversubscribed cores).
"""
from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import numpy as np

from ..._imports import require
from ...errors import ArtifactError
from ..devices import parse_device
from .base import Backend

FP16_OPTIONS = ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic")


def pnnx_executable() -> Path:
    """The pnnx binary the pnnx wheel ships (found without importing pnnx, which imports torch)."""
    spec = importlib.util.find_spec("pnnx")
    exe = Path(next(iter(spec.submodule_search_locations))) / "pnnx" if spec else None
    if exe is None or not exe.is_file():
        raise ArtifactError("the pnnx converter binary was not found: pip install 'edgekit[ncnn-build]'")
    return exe


def blob_names(param: Path) -> tuple[str, str]:
    """(input blob, output blob) of a .param: the Input layer's blob and the last layer's first output."""
    rows = [ln.split() for ln in Path(param).read_text().splitlines()[2:] if ln.strip()]
    inputs = [r[4] for r in rows if r[0] == "Input"]
    if len(inputs) != 1 or not rows:
        raise ArtifactError(f"{param}: expected one Input layer, found {len(inputs)}")
    last = rows[-1]
    n_in = int(last[2])
    return inputs[0], last[4 + n_in]


class NcnnBackend(Backend):
    name = "ncnn"
    suffixes = (".param",)
    reads_folders = True  # an Ultralytics ncnn export folder (model.ncnn.param, .bin, metadata.yaml)
    module = extra = "ncnn"
    device_kinds = ("cpu",)
    executes = ("fp32",)  # and fp16 on ARM CPUs with fp16 arithmetic: see extra_precisions()
    builds = ("fp32", "fp16")
    build_modules = ("pnnx",)
    build_extra = "ncnn-build"

    @classmethod
    def fp16_here(cls) -> bool:
        """This CPU runs ncnn's fp16 arithmetic (ARM asimdhp); never raises."""
        if not cls.installed():
            return False
        try:
            return bool(require("ncnn", "the NCNN backend").cpu_support_arm_asimdhp())
        except Exception:
            return False

    @classmethod
    def extra_precisions(cls, device: str) -> tuple[str, ...]:
        return ("fp16",) if cls.fp16_here() else ()

    @classmethod
    def offers(cls, target: str, explicit: bool = False) -> tuple[str, ...]:
        """fp32 and fp16 (half the file; fp16 execution where the CPU has it) on the CPU."""
        return cls.builds if cls.runs_on(target) else ()

    @classmethod
    def describe_impl(cls) -> dict:
        ncnn = require("ncnn", "the NCNN backend")
        return {"fp16_arithmetic": bool(ncnn.cpu_support_arm_asimdhp()), "cpu_count": ncnn.get_cpu_count()}

    @classmethod
    def runner(cls, device: str):
        from ..concurrency import SplitThreadsRunner

        return SplitThreadsRunner

    @classmethod
    def build_impl(cls, source: Path, precision: str, folder: Path, meta, calib=None, log=print, work=None,
                   **opts) -> tuple[Path, dict]:
        """pnnx: ONNX -> model.ncnn.param/.bin (fp16 weights for fp16); pnnx's own side files stay in `work`."""
        h, w = meta.imgsz
        side = {k: str(Path(work) / f"model.{k}") for k in ("pnnx.param", "pnnx.bin", "pnnx.onnx")}
        model = folder / "model.ncnn.param"
        cmd = [str(pnnx_executable()), str(source), f"inputshape=[1,3,{h},{w}]f32",
               f"fp16={1 if precision == 'fp16' else 0}", f"ncnnparam={model}", f"ncnnbin={model.with_suffix('.bin')}",
               f"pnnxparam={side['pnnx.param']}", f"pnnxbin={side['pnnx.bin']}", f"pnnxonnx={side['pnnx.onnx']}",
               f"pnnxpy={Path(work) / 'model_pnnx.py'}", f"ncnnpy={Path(work) / 'model_ncnn.py'}"]
        res = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
        if res.returncode != 0 or not model.is_file():
            tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ArtifactError(f"{source.name}: pnnx failed to convert it to ncnn (exit {res.returncode}): {tail[0]}")
        inp, out = blob_names(model)
        return model, {"input": {"name": inp}, "output": {"name": out},
                       "ncnn": {"weights": precision, "converter": "pnnx"}}

    def model_files(self) -> tuple[Path, Path]:
        """(.param, .bin) of the artifact: a .param file, or the folder holding one."""
        p = Path(self.path)
        if p.is_dir():
            hits = sorted(p.glob("*.param"))
            if not hits:
                raise ArtifactError(f"{p}: no ncnn .param file in this folder")
            p = hits[0]
        binary = p.with_suffix(".bin")
        if not binary.is_file():
            raise ArtifactError(f"{p}: its weights {binary.name} are missing beside it")
        return p, binary

    def load_impl(self) -> None:
        ncnn = require("ncnn", "the NCNN backend")
        kind, _ = parse_device(self.device)
        if kind != "cpu":
            raise ArtifactError(f"device '{self.device}' is not supported by the ncnn backend (use cpu)")
        param, binary = self.model_files()
        net = ncnn.Net()
        fp16 = self.wants_fp16()
        for opt in FP16_OPTIONS:
            setattr(net.opt, opt, fp16)
        net.opt.use_bf16_storage = net.opt.use_bf16_packed = False
        net.opt.use_vulkan_compute = False
        if self.options.get("threads"):
            net.opt.num_threads = int(self.options["threads"])
        if net.load_param(str(param)) != 0 or net.load_model(str(binary)) != 0:
            raise ArtifactError(f"{param}: ncnn cannot load this model (.param/.bin)")
        self.net, self.ncnn = net, ncnn
        self.input_name, self.output_name = blob_names(param)
        self._batch = 1

    def wants_fp16(self) -> bool:
        """fp16 options on for an fp16 artifact or when asked for (option precision='fp16'); off otherwise."""
        asked = self.options.get("precision")
        artifact = self.meta.precision if self.meta is not None else "fp32"
        return (asked or artifact) == "fp16"

    def infer_impl(self, blob: np.ndarray) -> np.ndarray:
        ex = self.net.create_extractor()
        ex.input(self.input_name, self.ncnn.Mat(np.ascontiguousarray(blob[0], np.float32)))
        ret, out = ex.extract(self.output_name)
        if ret != 0:
            raise ArtifactError(f"{self.path}: ncnn extraction of '{self.output_name}' failed (code {ret})")
        return np.array(out)[None]

    @property
    def precision_executed(self) -> str:
        """fp16 when the loaded net has fp16 arithmetic on and this CPU runs it; fp32 otherwise."""
        on = bool(self.net.opt.use_fp16_arithmetic) if self.loaded else self.wants_fp16()
        return "fp16" if on and self.fp16_here() else "fp32"

    def info(self) -> dict:
        d = super().info()
        d.update(ncnn=self.ncnn.__version__, threads=self.net.opt.num_threads,
                 fp16_options={o: bool(getattr(self.net.opt, o)) for o in FP16_OPTIONS})
        return d

    def close_impl(self) -> None:
        self.net.clear()
        del self.net
