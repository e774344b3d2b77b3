"""Throughput runners: many inference requests in flight, with each backend's own concurrency.

After Polygraphy's runners: the base class owns the public `map` (ordered, bounded, timed by the caller);
each runner writes `open_impl` / `map_impl`. Every runner goes through Engine, so the code path is the
one an app runs. Each backend names its runner (Backend.runner): OpenVINO compiles with PERFORMANCE_HINT
THROUGHPUT and drives an AsyncInferQueue; ONNX Runtime, TensorRT and torch-on-CUDA run parallel sessions /
execution contexts (each with its own CUDA stream on a GPU) on threads, which release the GIL inside the
native run call; the rest run one request at a time.
"""
from __future__ import annotations

import os
import queue
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

import numpy as np

from .backends import get_backend
from .engine import Engine


def cores() -> int:
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Runner:
    """One request at a time on one Engine (the reference; also torch on CPU, which threads inside)."""

    kind = "sequential"

    def __init__(self, path, device: str = "cpu", backend: str | None = None, streams: int | None = None,
                 **options):
        self.path, self.device, self.backend, self.options = path, device, backend, options
        self.streams = streams or self.default_streams()
        self.engines: list[Engine] = []

    def default_streams(self) -> int:
        return 1

    @property
    def engine(self) -> Engine:
        """The Engine whose preprocess and postprocess the pipeline uses."""
        return self.engines[0]

    def open(self) -> "Runner":
        if not self.engines:
            self.open_impl()
        return self

    def close(self) -> None:
        for e in self.engines:
            e.close()
        self.engines = []

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def map(self, items: Iterable[tuple[np.ndarray, object]]) -> Iterator[tuple[np.ndarray, object]]:
        """(blob, context) pairs -> (raw output, context) pairs, in input order."""
        self.open()
        return self.map_impl(iter(items))

    def describe(self) -> dict:
        return {"concurrency": self.kind, "streams": self.streams}

    # to implement ------------------------------------------------------------------------------
    def open_impl(self) -> None:
        self.engines = [Engine(self.path, self.device, self.backend, **self.options)]

    def map_impl(self, items):
        for blob, ctx in items:
            yield self.engine.infer(blob), ctx


class ThreadedRunner(Runner):
    """N Engines (parallel ONNX Runtime sessions, TensorRT contexts, torch models) driven from N threads."""

    kind = "parallel sessions on threads"

    def default_streams(self) -> int:
        return 2

    def engine_options(self) -> dict:
        return dict(self.options)

    def open_impl(self) -> None:
        self.engines = [Engine(self.path, self.device, self.backend, **self.engine_options())
                        for _ in range(self.streams)]

    def map_impl(self, items):
        free: queue.SimpleQueue = queue.SimpleQueue()
        for e in self.engines:
            free.put(e)

        def work(blob):
            eng = free.get()
            try:
                return eng.infer(blob)
            finally:
                free.put(eng)

        pending: deque = deque()
        with ThreadPoolExecutor(self.streams, thread_name_prefix="edgekit-infer") as pool:
            for blob, ctx in items:
                pending.append((pool.submit(work, blob), ctx))
                while len(pending) >= 2 * self.streams or (pending and pending[0][0].done()):
                    fut, c = pending.popleft()
                    yield fut.result(), c
            while pending:
                fut, c = pending.popleft()
                yield fut.result(), c


class SplitThreadsRunner(ThreadedRunner):
    """Parallel sessions on threads, the CPU cores split between them (each session's own thread count)."""

    kind = "parallel sessions (threads split)"

    def engine_options(self) -> dict:
        opts = dict(self.options)
        if self.device.lower() == "cpu" and "threads" not in opts:
            opts["threads"] = max(1, cores() // self.streams)
        return opts


def make_runner(path, device: str, backend: str, streams: int | None = None, **options) -> Runner:
    """The throughput runner the backend names for this device."""
    return get_backend(backend).runner(device)(path, device, backend, streams, **options)
