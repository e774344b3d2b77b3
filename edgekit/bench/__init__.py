"""Benchmarking: timing harness, concurrency, device info, memory, power and reports (accuracy: edgekit.eval).

`run_bench` is imported on first use, so `import edgekit.bench` stays light (no torch, no backend).
"""
from __future__ import annotations

__all__ = ["run_bench"]


def __getattr__(name):
    if name == "run_bench":
        from .harness import run_bench

        return run_bench
    raise AttributeError(f"module 'edgekit.bench' has no attribute {name!r}")
