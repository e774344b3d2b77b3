"""Host and device memory: peak RSS of this process, and GPU memory where a CUDA library can tell."""
from __future__ import annotations

import sys


def rss_mb() -> float | None:
    """Current resident set size of this process in MB (psutil); None if unknown."""
    try:
        import psutil

        return round(psutil.Process().memory_info().rss / 2**20, 1)
    except Exception:
        return None


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process so far in MB (getrusage; psutil's peak_wset on Windows)."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes on macOS, KiB on Linux
    except (ImportError, OSError):
        pass
    try:
        import psutil

        info = psutil.Process().memory_info()
        return round(getattr(info, "peak_wset", info.rss) / 2**20, 1)
    except Exception:
        return None


def cuda_index(device: str) -> int | None:
    d = device.lower()
    if not d.startswith("cuda"):
        return None
    return int(d.split(":")[1]) if ":" in d and d.split(":")[1].isdigit() else 0


def reset_device_peak(device: str) -> None:
    idx = cuda_index(device)
    torch = sys.modules.get("torch")  # only when the backend already imported it
    if idx is not None and torch is not None and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(idx)


def device_memory_mb(device: str) -> dict | None:
    """GPU memory of this process: torch's allocator peak and/or NVML's per-process figure; None on CPU."""
    idx = cuda_index(device)
    if idx is None:
        return None
    out = {}
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                out["torch_max_allocated"] = round(torch.cuda.max_memory_allocated(idx) / 2**20, 1)
        except Exception:
            pass
    used = nvml_process_memory_mb(idx)
    if used is not None:
        out["nvml_process_used"] = used
    return out or None


def nvml_process_memory_mb(index: int) -> float | None:
    """Device memory NVML attributes to this process (includes the CUDA context); None without pynvml."""
    try:
        import os

        import pynvml

        pynvml.nvmlInit()
        try:
            h = pynvml.nvmlDeviceGetHandleByIndex(index)
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
                if p.pid == os.getpid() and p.usedGpuMemory is not None:
                    return round(p.usedGpuMemory / 2**20, 1)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None
    return None
