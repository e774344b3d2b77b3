"""Host and device memory: peak RSS of this process, and GPU memory where a CUDA library can tell."""
from __future__ import annotations

import sys

from ..runtime.devices import parse_device


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
    """The CUDA device index of a device string ('cuda' is 0); None for any other device."""
    kind, idx = parse_device(device)
    return (idx or 0) if kind == "cuda" else None


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
