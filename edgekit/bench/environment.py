"""The environment behind every figure: CPU and its flags, cores, governor, GPU, versions, settings, load, git SHA.

`fingerprint` keeps the parts that make two figures comparable (the machine and the installed runtimes, not the
settings being compared); `differences` says what differs between two of them.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from .._imports import version_of
from .device import cpu_info, jetson_info

# the CPU flags that change inference speed: AVX2 / AVX-512, VNNI (int8 dot products), BF16, FP16, AMX
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
         "amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "neon", "asimd", "asimddp", "sve")
RUNTIMES = ("openvino", "onnxruntime", "tensorrt", "torch", "numpy", "opencv-python-headless")


def cpu_flags() -> list[str]:
    """The FLAGS this CPU has, from /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    have = set(val.split())
                    return [x for x in FLAGS if x in have]
    except OSError:
        pass
    return []


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


def cpu_frequency() -> dict:
    """Scaling governor and current/max frequency in MHz where the kernel exposes them (not in most VMs)."""
    base = "/sys/devices/system/cpu/cpu0/cpufreq/"
    d = {"governor": _read(base + "scaling_governor"), "driver": _read(base + "scaling_driver")}
    for key, f in (("cur_mhz", "scaling_cur_freq"), ("max_mhz", "cpuinfo_max_freq")):
        v = _read(base + f)
        d[key] = round(int(v) / 1000) if v and v.isdigit() else None
    boost = _read("/sys/devices/system/cpu/cpufreq/boost")
    d["boost"] = None if boost is None else boost == "1"
    return d


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def git_sha() -> str | None:
    """The commit of the edgekit checkout this code runs from (with '+dirty'), or None for an installed wheel."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists() or not shutil.which("git"):
        return None
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("+dirty" if dirty else "")) or None


def gpu_state() -> list[dict]:
    """NVIDIA GPUs: name, driver, SM clock now and max, power limit, persistence mode; [] without nvidia-smi."""
    if not shutil.which("nvidia-smi"):
        return []
    q = "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit,persistence_mode,pstate"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    keys = q.split(",")
    return [dict(zip(keys, (p.strip() for p in line.split(",")))) for line in out.strip().splitlines()
            if line.count(",") == len(keys) - 1]


def jetson_power_mode() -> str | None:
    """nvpmodel's current power mode on a Jetson; None elsewhere."""
    if not shutil.which("nvpmodel"):
        return None
    try:
        out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return " ".join(out.split()) or None


def runtime_settings(engine) -> dict:
    """What the backend was compiled/configured with (OpenVINO hint, streams, requests, threads; ORT threads)."""
    fn = getattr(getattr(engine, "backend", None), "runtime_settings", None)
    try:
        return fn() if fn else {}
    except Exception as e:  # a plugin that will not say must not lose the benchmark
        return {"error": f"{type(e).__name__}: {e}"[:200]}


def environment(engine=None, threads: int | None = None, load_before=None, load_after=None,
                settings: dict | None = None) -> dict:
    """The environment record of one benchmark (see the module docstring)."""
    from .. import __version__

    cpu = cpu_info()
    env = {
        "cpu": {"model": cpu.get("model"), "arch": cpu.get("arch"), "flags": cpu_flags(),
                "logical_cores": cpu.get("cores"), "physical_cores": cpu.get("physical_cores"),
                "usable_cores": cpu.get("usable_cores", cpu.get("cores")), "memory_gb": cpu.get("memory_gb"),
                **cpu_frequency()},
        "threads_requested": threads,
        "os": platform.platform(), "python": platform.python_version(),
        "versions": {m: version_of(m) for m in RUNTIMES if version_of(m)},
        "edgekit": {"version": __version__, "git_sha": git_sha()},
        "gpus": gpu_state(),
        "load_avg_before": load_before, "load_avg_after": load_after,
    }
    if jetson_info():
        env["jetson"] = {**jetson_info(), "power_mode": jetson_power_mode()}
    if engine is not None:
        env["backend"] = engine.backend_name
        env["device"] = engine.device
        env["precision_executed"] = engine.precision_executed
        env["runtime"] = runtime_settings(engine)
    if settings:
        env["runtime"] = {**env.get("runtime", {}), **settings}
    return env


def fingerprint(env: dict) -> dict:
    """What must match for two figures to be compared: CPU, cores, governor, GPUs, Jetson mode, runtime versions."""
    cpu = env.get("cpu", {})
    return {
        "cpu model": cpu.get("model"), "cpu flags": " ".join(cpu.get("flags") or []) or None,
        "usable cores": cpu.get("usable_cores"), "governor": cpu.get("governor"),
        "gpus": "; ".join(f"{g.get('name')} driver {g.get('driver_version')}" for g in env.get("gpus") or []) or None,
        "jetson power mode": (env.get("jetson") or {}).get("power_mode"),
        **{f"{k} version": v for k, v in sorted((env.get("versions") or {}).items())},
    }


def differences(a: dict, b: dict) -> list[str]:
    """'key: A vs B' for each fingerprint entry that differs between two environment records."""
    fa, fb = fingerprint(a), fingerprint(b)
    return [f"{k}: {fa.get(k)} vs {fb.get(k)}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
