"""Where a sweep's tasks run: in this process (local) or as Ray tasks on a cluster (ray).

The sweep (edgekit.sweep.pipeline) submits three kinds of task and waits for whichever finishes first:
- "train": train one trial (to a halving rung, or fully);
- "trial": export -> build -> evaluate each backend/precision of a trained trial;
- "bench": one timing round of one graph on the target device.
A task is a module-level function and its arguments (picklable); its result or its exception comes back through
`result`. Stage records make every task idempotent: a task that is run again (Ray retries one whose worker died)
skips the stages it already finished in this run.

Ray: on a CUDA target every task asks for one GPU. Train and trial tasks take `task_cpus` CPUs each (Ray sets OMP_NUM_THREADS to that, so concurrent trainings do
not oversubscribe a node) and are retried `max_retries` times when their worker dies. Bench tasks run one at a time
(the sweep submits the next one when the last has returned) on the node that holds the device: the one with the
custom resource `bench_resource` (e.g. `ray start --resources '{"jetson0": 1}' --num-cpus 0`: with no CPUs to offer,
that node takes no other task, so nothing shares the device while it is timed), else the driver's own node.
"""
from __future__ import annotations

import socket
import traceback

PRIORITY = {"bench": 0, "trial": 1, "train": 2}  # local order: finish a trial before training the next


class TaskFailed(Exception):
    """A task that raised (after Ray's retries): `error` is the one-line message, `cause` the original exception."""

    def __init__(self, error: str, cause: BaseException | None = None, detail: str = ""):
        super().__init__(error)
        self.error, self.cause, self.detail = error, cause, detail


def node_name() -> str:
    """This process's node: the Ray node id inside a Ray worker, else 'local:<hostname>'."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return f"local:{socket.gethostname()}"


def _one_line(e: BaseException) -> str:
    from ..errors import EdgekitError

    msg = " ".join(str(e).split())
    return msg if isinstance(e, EdgekitError) else f"{type(e).__name__}: {msg}"


class LocalExecutor:
    """Runs each task in this process when waited for: bench first, then trial, then train; FIFO within a kind."""

    name = "local"

    def __init__(self):
        self._queue: list = []
        self._n = 0

    def submit(self, kind: str, fn, *args):
        self._n += 1
        handle = (PRIORITY[kind], self._n)
        self._queue.append((handle, fn, args))
        return handle

    def wait(self, handles: list):
        """Run the queued task that comes first among `handles`; return its handle and (ok, value)."""
        pick = min((q for q in self._queue if q[0] in handles), key=lambda q: q[0])
        self._queue.remove(pick)
        handle, fn, args = pick
        try:
            return handle, (True, fn(*args))
        except Exception as e:  # noqa: BLE001 - a trial's failure is reported in its row, with its message
            return handle, (False, TaskFailed(_one_line(e), e, traceback.format_exc()))

    def run(self, kind: str, fn, *args):
        """Submit and wait for one task; raise TaskFailed if it failed."""
        h = self.submit(kind, fn, *args)
        _, (ok, value) = self.wait([h])
        if not ok:
            raise value
        return value

    def describe(self) -> dict:
        return {"executor": "local", "nodes": 1}

    def close(self) -> None:
        self._queue.clear()


class RayExecutor(LocalExecutor):
    """Tasks on a Ray cluster (`address`: 'auto', host:port, or None for a local one-node cluster started here)."""

    name = "ray"

    def __init__(self, address: str | None = None, bench_resource: str | None = None, gpu: bool = False,
                 task_cpus: float = 1, max_retries: int = 3, verbose: bool = False):
        import os

        from .._imports import require

        if address is None:  # a Ray started here for this sweep only: every process binds the loopback address
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        require("ray", "train-export --executor ray")
        import ray

        self.ray, self._pending = ray, {}
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address, log_to_driver=verbose, include_dashboard=False, configure_logging=verbose,
                     logging_level="INFO" if verbose else "ERROR")
        self.bench_resource, self.gpu, self.task_cpus, self.max_retries = bench_resource, gpu, task_cpus, max_retries
        if bench_resource and not any(n.get("Alive") and n["Resources"].get(bench_resource)
                                      for n in ray.nodes()):
            from ..errors import EdgekitError

            self.close()
            raise EdgekitError(f"--bench-resource: no node of the Ray cluster at {address or 'this machine'} offers "
                               f"the resource '{bench_resource}' (start the device's node with "
                               f"ray start --resources '{{\"{bench_resource}\": 1}}')")
        self.driver_node = ray.get_runtime_context().get_node_id()

    def options(self, kind: str) -> dict:
        """Ray task options for a kind of task."""
        gpus = {"num_gpus": 1} if self.gpu else {}  # on a CUDA target every kind of task runs on a GPU
        if kind == "bench":
            if self.bench_resource:
                return {"num_cpus": 0, "resources": {self.bench_resource: 1}, "max_retries": self.max_retries, **gpus}
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            return {"num_cpus": 0, "max_retries": self.max_retries, **gpus,
                    "scheduling_strategy": NodeAffinitySchedulingStrategy(self.driver_node, soft=False)}
        return {"num_cpus": self.task_cpus, "max_retries": self.max_retries, **gpus}

    def submit(self, kind: str, fn, *args):
        ref = self.ray.remote(fn).options(name=f"edgekit-{kind}", **self.options(kind)).remote(*args)
        self._pending[ref] = kind
        return ref

    def wait(self, handles: list):
        ready, _ = self.ray.wait(list(handles), num_returns=1)
        ref = ready[0]
        self._pending.pop(ref, None)
        try:
            return ref, (True, self.ray.get(ref))
        except self.ray.exceptions.RayTaskError as e:
            cause = e.as_instanceof_cause() if hasattr(e, "as_instanceof_cause") else e
            inner = getattr(e, "cause", None) or cause
            return ref, (False, TaskFailed(_one_line(inner), inner, str(e)))
        except self.ray.exceptions.RayError as e:  # the worker died more often than max_retries, the node left, ...
            return ref, (False, TaskFailed(f"{type(e).__name__}: {' '.join(str(e).split())[:300]}", e))

    def describe(self) -> dict:
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        return {"executor": "ray", "nodes": len(nodes), "bench_resource": self.bench_resource,
                "cluster_resources": {k: v for k, v in self.ray.cluster_resources().items()
                                      if not k.startswith("node:")}}

    def close(self) -> None:
        for ref in list(self._pending):
            self.ray.cancel(ref, force=True)
        self._pending.clear()
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()


def make_executor(name: str, address: str | None = None, bench_resource: str | None = None, gpu: bool = False,
                  task_cpus: float = 1, verbose: bool = False):
    """The executor a `--executor` name asks for."""
    from ..errors import EdgekitError

    if name == "local":
        if address or bench_resource:
            raise EdgekitError("--ray-address/--bench-resource: these need --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, bench_resource, gpu=gpu, task_cpus=task_cpus, verbose=verbose)
    raise EdgekitError(f"--executor: '{name}' is not one of local, ray")
