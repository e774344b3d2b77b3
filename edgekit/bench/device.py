"""What this machine is: CPU model and ISA flags, GPUs, installed backends and their devices."""
from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .. import __version__
from .._imports import version_of
from ..runtime.devices import parse_device

ISA_FLAGS = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8",
             "amx_bf16", "amx_fp16", "neon", "asimd", "asimddp", "sve"]


def cpu_info() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "Hardware") and model in ("", platform.machine(), platform.processor()):
                    model = val.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    d = {"model": model, "cores": os.cpu_count(), "arch": platform.machine(), "isa": [f for f in ISA_FLAGS if f in flags]}
    try:
        import psutil

        d["physical_cores"] = psutil.cpu_count(logical=False)
        d["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
        if hasattr(os, "sched_getaffinity"):
            d["usable_cores"] = len(os.sched_getaffinity(0))
    except Exception:
        pass
    return d


def gpu_info() -> list[dict]:
    """NVIDIA GPUs from nvidia-smi (no CUDA library import); empty when there are none."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 4:
            gpus.append({"name": parts[0], "driver": parts[1], "memory": parts[2], "compute_capability": parts[3]})
    return gpus


def cuda_driver_version() -> str | None:
    """The CUDA version the driver supports, from nvidia-smi's banner; None without an NVIDIA driver."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"CUDA Version:\s*([\d.]+)", out)
    return m.group(1) if m else None


def jetson_info() -> dict | None:
    """L4T release and module model on a Jetson; None elsewhere."""
    rel = Path("/etc/nv_tegra_release")
    if not rel.exists():
        return None
    d = {"l4t": rel.read_text(errors="replace").splitlines()[0].strip()}
    model = Path("/proc/device-tree/model")
    if model.exists():
        d["model"] = model.read_text(errors="replace").strip("\x00\n ")
    return d


def device_name(device: str) -> str | None:
    """The name a registered backend gives this device (e.g. OpenVINO's FULL_DEVICE_NAME of GPU); never raises."""
    from ..runtime.backends import registered

    for cls in registered().values():
        name = getattr(cls, "device_name", None)
        if name is not None and cls.runs_on(device) and (found := name(device)):
            return found
    return None


def _gpu_record(d: dict, device: str) -> None:
    """GPUs, the one in use, driver, CUDA and TensorRT versions into a device record."""
    d["gpus"] = gpu_info()
    idx = parse_device(device)[1] or 0
    if d["gpus"]:
        d["gpu"] = d["gpus"][min(idx, len(d["gpus"]) - 1)]
        d["name"] = d["gpu"]["name"]
    d["cuda_driver"] = cuda_driver_version()
    d["tensorrt"] = version_of("tensorrt")
    if "torch" in sys.modules:  # never import torch just to describe the machine
        d["torch_cuda"] = getattr(sys.modules["torch"].version, "cuda", None)
    if jetson_info():
        d["jetson"] = jetson_info()


def device_info(device: str = "cpu", backend: str | None = None) -> dict:
    """The machine a benchmark ran on: CPU (model, cores, ISA), GPUs, driver, CUDA and TensorRT versions."""
    from ..runtime.backends import get_backend, names

    cls = get_backend(backend) if backend in names() else None
    d = {"requested": device, "cpu": cpu_info(), "platform": platform.platform(), "python": platform.python_version()}
    kind = parse_device(device)[0]
    cuda_only = cls is not None and cls.runs_on("cuda") and not cls.runs_on("cpu")  # TensorRT
    if kind.startswith("cuda") or cuda_only:
        _gpu_record(d, device)
    elif not kind.startswith("cpu"):
        d["name"] = device_name(device)
    else:
        d["name"] = d["cpu"]["model"]
    if cls is not None:
        d.update(cls.device_facts(device))
        d["backend_version"] = version_of(cls.module) if cls.module else None
    elif backend:
        d["backend_version"] = None
    return d


def doctor_report() -> dict:
    from ..runtime.backends import registered

    pkgs = {m: version_of(m) for m in ("numpy", "onnx", "onnxslim", "ultralytics", "nncf", "faster_coco_eval",
                                       "pycocotools", "matplotlib", "super_gradients") if version_of(m)}
    return {
        "edgekit": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "gpus": gpu_info(),
        "backends": {n: _with_precisions(cls) for n, cls in registered().items()},
        "packages": pkgs,
    }


def _with_precisions(cls) -> dict:
    """A backend's doctor facts plus the precisions it executes on each of its devices here."""
    info = cls.describe()
    try:
        info["precisions"] = {d: list(cls.precisions(d)) for d in info.get("devices") or ()}
    except Exception as e:  # a plugin that cannot say must not break doctor
        info["precisions_error"] = f"{type(e).__name__}: {e}"[:200]
    return info
