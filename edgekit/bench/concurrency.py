"""Throughput runners: many inference requests in flight, with each backend's own concurrency.

After Polygraphy's runners: the base class owns the public `map` (ordered, bounded, timed by the caller);
each backend writes `open_impl` / `map_impl`. Every runner goes through Engine, so the code path is the
one an app runs: OpenVINO compiles with PERFORMANCE_HINT THROUGHPUT and drives an AsyncInferQueue;
ONNX Runtime, TensorRT and torch-on-CUDA run parallel sessions / execution contexts (each with its own
CUDA stream on a GPU) on threads, which release the GIL inside the native run call.
"""
from __future__ import annotations

import os
import queue
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

import numpy as np

from ..runtime import Engine


def _cores() -> int:
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


class OnnxRuntimeRunner(ThreadedRunner):
    """Parallel ONNX Runtime sessions; on CPU the cores are split between them (intra-op threads each)."""

    kind = "onnxruntime parallel sessions (intra-op threads split)"

    def engine_options(self) -> dict:
        opts = dict(self.options)
        if self.device.lower() == "cpu" and "threads" not in opts:
            opts["threads"] = max(1, _cores() // self.streams)
        return opts


class TensorRTRunner(ThreadedRunner):
    """One TensorRT execution context and CUDA stream per Engine, enqueued from its own thread."""

    kind = "tensorrt execution contexts on CUDA streams"


class OpenVINORunner(Runner):
    """PERFORMANCE_HINT THROUGHPUT and an AsyncInferQueue sized by OPTIMAL_NUMBER_OF_INFER_REQUESTS."""

    kind = "openvino AsyncInferQueue (PERFORMANCE_HINT THROUGHPUT)"

    def default_streams(self) -> int:
        return 0  # 0: let the plugin choose

    def open_impl(self) -> None:
        import openvino as ov

        opts = dict(self.options, hint="THROUGHPUT")
        if self.streams:
            opts["streams"] = self.streams
        eng = Engine(self.path, self.device, "openvino", **opts)
        self.engines = [eng]
        compiled = eng.backend.compiled
        self.nreq = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        try:
            self.streams = int(compiled.get_property("NUM_STREAMS"))
        except Exception:
            self.streams = self.streams or self.nreq
        self.queue = ov.AsyncInferQueue(compiled, self.nreq)

    def describe(self) -> dict:
        return {"concurrency": self.kind, "streams": self.streams, "infer_requests": getattr(self, "nreq", None)}

    def map_impl(self, items):
        fb = self.engine.backend.fixed_batch
        done: dict = {}
        self.queue.set_callback(lambda req, key: done.__setitem__(key, req.get_output_tensor(0).data.copy()))
        jobs: deque = deque()  # (job id, number of chunks, rows in the last chunk, ctx)

        def ready():
            j, n, _, _ = jobs[0]
            return all((j, i) in done for i in range(n))

        def pop():
            j, n, k, ctx = jobs.popleft()
            parts = [done.pop((j, i)) for i in range(n)]
            out = parts[0] if n == 1 else np.concatenate(parts)
            return out[: out.shape[0] - (fb - k if fb and k < fb else 0)], ctx

        for job, (blob, ctx) in enumerate(items):
            chunks = [blob] if not fb or blob.shape[0] == fb else [blob[s:s + fb] for s in range(0, blob.shape[0], fb)]
            last = chunks[-1].shape[0]
            if fb and last < fb:
                chunks[-1] = np.concatenate([chunks[-1], np.zeros((fb - last, *blob.shape[1:]), blob.dtype)])
            for i, c in enumerate(chunks):
                self.queue.start_async({0: c}, (job, i))  # blocks while every request is busy
            jobs.append((job, len(chunks), last, ctx))
            while jobs and ready():
                yield pop()
        self.queue.wait_all()
        while jobs:
            yield pop()

    def close(self) -> None:
        self.queue = None
        super().close()


def make_runner(path, device: str, backend: str, streams: int | None = None, **options) -> Runner:
    """The throughput runner for a backend and device."""
    if backend == "openvino":
        return OpenVINORunner(path, device, backend, streams, **options)
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(path, device, backend, streams, **options)
    if backend == "tensorrt":
        return TensorRTRunner(path, device, backend, streams, **options)
    if backend == "torch" and device.lower().startswith("cuda"):
        return ThreadedRunner(path, device, backend, streams, **options)
    return Runner(path, device, backend, streams, **options)
