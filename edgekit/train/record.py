"""train.json: the one record of a training run (both trainers write it here), its cost and the GPUs it used."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from ..io import atomic_write_json
from ..runtime.devices import parse_device

TRAIN_JSON = "train.json"


def gpu_indices(device) -> list[int] | None:
    """CUDA indices a training run uses: [] on cpu/mps, [0, 1] for Ultralytics' '0,1'; None when unspecified."""
    d = str(device if device is not None else "").strip().lower()
    if not d:
        return None
    ids = d.removeprefix("cuda:").split(",")
    if len(ids) > 1 or ids[0].isdigit():  # Ultralytics' train form: '0', '0,1', 'cuda:0,1'
        return [int(x) for x in ids if x.strip().isdigit()]
    kind, index = parse_device(d)
    return [] if kind in ("cpu", "mps") else [index or 0]


def n_gpus(device) -> int:
    """GPUs a training run uses (unspecified: one if torch sees CUDA)."""
    ids = gpu_indices(device)
    if ids is not None:
        return len(ids)
    try:
        import torch

        return 1 if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def device_name(device) -> str:
    """The GPU's name when the run uses one, else the CPU's."""
    ids = gpu_indices(device)
    if ids != []:
        try:
            import torch

            if torch.cuda.is_available():
                return torch.cuda.get_device_name((ids or [0])[0])
        except Exception:  # a driver or index problem: the CPU name is still a true statement about the host
            pass
    return platform.processor() or platform.machine() or os.uname().machine


def cost(wall_s: float, gpus: int, gpu_hour_usd: float, cpu_hour_usd: float = 0.0) -> dict:
    """Wall time, GPU-hours (CPU-hours on CPU) and their price."""
    hours = wall_s / 3600
    gpu_h, cpu_h = hours * gpus, (hours if gpus == 0 else 0.0)
    return {"wall_s": round(wall_s, 2), "gpu_hours": round(gpu_h, 6), "cpu_hours": round(cpu_h, 6),
            "gpu_hour_usd": gpu_hour_usd, "cpu_hour_usd": cpu_hour_usd,
            "cost_usd": round(gpu_h * gpu_hour_usd + cpu_h * cpu_hour_usd, 4)}


def write_train_json(out_dir, doc: dict) -> Path:
    """Write out_dir/train.json atomically; returns its path."""
    path = Path(out_dir) / TRAIN_JSON
    atomic_write_json(path, doc)
    return path


def read_train_json(out_dir) -> dict:
    """out_dir/train.json, or {} when it is missing or unreadable (a run that never wrote one)."""
    try:
        doc = json.loads((Path(out_dir) / TRAIN_JSON).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}
