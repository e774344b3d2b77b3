"""Dynamic micro-batching: a bounded queue of single-image blobs, drained in batches by worker threads."""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable, Sequence

import numpy as np


class QueueFull(Exception):
    """The queue holds max_queue requests already (or the batcher is stopping): answer 503, retry later."""


class MicroBatcher:
    """Collect up to max_batch blobs, waiting at most max_delay_s after the first, and run them as one batch.

    Each worker thread owns one infer function (one Engine), so backends need not be thread-safe.
    """

    def __init__(self, infers: Sequence[Callable[[np.ndarray], np.ndarray]], max_batch: int = 8,
                 max_delay_s: float = 0.002, max_queue: int = 64, on_batch: Callable[[int, float], None] | None = None):
        if max_batch < 1 or max_queue < 1 or max_delay_s < 0 or not infers:
            raise ValueError("max_batch and max_queue must be >= 1, max_delay_s >= 0, and one infer per worker")
        self.max_batch, self.max_delay_s = max_batch, max_delay_s
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.on_batch = on_batch
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._loop, args=(f,), name=f"edgekit-batch-{i}", daemon=True)
                         for i, f in enumerate(infers)]

    def start(self) -> "MicroBatcher":
        for t in self._threads:
            t.start()
        return self

    def depth(self) -> int:
        return self.queue.qsize()

    def submit(self, blob: np.ndarray) -> Future:
        """Queue one (1, C, H, W) blob; the Future gets its raw network output row (a tuple of rows when the infer
        function returns a tuple, e.g. Engine.infer_embed). Raises QueueFull.

        When it is done, the Future also carries queue_s (waiting for its batch) and infer_s (its batch's call).
        """
        if self._stopping.is_set():
            raise QueueFull("server is shutting down")
        fut: Future = Future()
        fut.queued_at = time.perf_counter()
        try:
            self.queue.put_nowait((blob, fut))
        except queue.Full:
            raise QueueFull(f"queue full ({self.queue.maxsize} requests waiting)") from None
        return fut

    def _collect(self) -> list:
        """Block (in short slices, to notice stop) for one item, then gather more until full or the delay ends."""
        while True:
            try:
                items = [self.queue.get(timeout=0.05)]
                break
            except queue.Empty:
                if self._stopping.is_set():
                    return []
        deadline = time.perf_counter() + self.max_delay_s
        while len(items) < self.max_batch:
            left = deadline - time.perf_counter()
            try:
                items.append(self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _loop(self, infer) -> None:
        while True:
            items = self._collect()
            if not items:
                return
            items = [(b, f) for b, f in items if f.set_running_or_notify_cancel()]
            if not items:
                continue
            t0 = time.perf_counter()
            try:
                raw = infer(np.concatenate([b for b, _ in items]))
            except BaseException as e:  # every waiter gets the error; the worker goes on
                for _, f in items:
                    f.set_exception(e)
                continue
            took = time.perf_counter() - t0
            if self.on_batch:
                self.on_batch(len(items), took)
            for k, (_, f) in enumerate(items):
                f.queue_s, f.infer_s = t0 - f.queued_at, took
                f.set_result(tuple(None if r is None else r[k] for r in raw) if isinstance(raw, tuple) else raw[k])

    def stop(self, timeout: float = 30.0) -> bool:
        """Refuse new work, finish what is queued, join the workers; True when all stopped in time."""
        self._stopping.set()
        end = time.monotonic() + timeout
        for t in self._threads:
            if t.is_alive():
                t.join(max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)
