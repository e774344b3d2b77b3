"""Throughput runners, as bench uses them: they live in runtime.concurrency, each backend naming its own."""
from __future__ import annotations

from ..runtime.concurrency import Runner, ThreadedRunner, make_runner
from ..runtime.concurrency import cores as _cores  # benchmarks/serve_overhead.py (on main) imports this name

__all__ = ["Runner", "ThreadedRunner", "make_runner", "_cores"]
