"""Throughput runners, as bench uses them: they live in runtime.concurrency, each backend naming its own."""
from __future__ import annotations

from ..runtime.concurrency import Runner, ThreadedRunner, make_runner

__all__ = ["Runner", "ThreadedRunner", "make_runner"]
