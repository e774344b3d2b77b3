"""What this machine is: CPU model and ISA flags, GPUs, installed backends and their devices."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess

from .. import __version__
from .._imports import available, install_hint, version_of

ISA_FLAGS = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "neon", "asimd"]


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
    return {"model": model, "cores": os.cpu_count(), "arch": platform.machine(),
            "isa": [f for f in ISA_FLAGS if f in flags]}


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


def backend_info(name: str) -> dict:
    """Installed version and devices of one backend; never raises."""
    mod = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt", "torch": "torch"}[name]
    info = {"installed": available(mod), "version": version_of(mod), "install": install_hint(mod)}
    if not info["installed"]:
        return info
    try:
        if name == "onnxruntime":
            import onnxruntime as ort

            info["devices"] = ort.get_available_providers()
        elif name == "openvino":
            import openvino as ov

            info["devices"] = ov.Core().available_devices
        elif name == "torch":
            import torch

            info["devices"] = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
            info["cuda"] = torch.version.cuda
        elif name == "tensorrt":
            import tensorrt as trt

            info["version"] = trt.__version__
    except Exception as e:  # a broken install is reported, not raised
        info["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return info


def device_info(device: str = "cpu") -> dict:
    d = {"requested": device, "cpu": cpu_info(), "platform": platform.platform()}
    if not device.lower().startswith("cpu"):
        d["gpus"] = gpu_info()
    return d


def doctor_report() -> dict:
    pkgs = {m: version_of(m) for m in ("numpy", "onnx", "onnxslim", "ultralytics", "nncf", "faster_coco_eval",
                                       "pycocotools", "matplotlib", "super_gradients") if version_of(m)}
    return {
        "edgekit": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "gpus": gpu_info(),
        "backends": {n: backend_info(n) for n in ("onnxruntime", "openvino", "tensorrt", "torch")},
        "packages": pkgs,
    }
