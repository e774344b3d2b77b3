"""Speed: each distinct graph timed in interleaved rounds on the target, and (--sustain) its sustained run."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..io import atomic_write_json

if TYPE_CHECKING:
    from .pipeline import Pipeline


class Measuring:
    """Mixin of Pipeline: the bench and sustained stages, one per distinct graph."""

    # speed ------------------------------------------------------------------------------------
    def bench_inputs(self, key: str, backend: str, conf: float | None = None) -> dict:
        """What a graph's speed depends on; conf: the threshold its NMS runs at (the owner row's, from its sidecar)."""
        from .._imports import tool_versions

        return {"graph": key, "target": self.measured_on, "iters": self.bench_iters, "conf": conf,
                "rounds": list(self.bench_rounds),
                "versions": tool_versions("onnxruntime", "openvino", "tensorrt")}

    def measure_speed(self, rows: list[dict]) -> None:
        """Time each distinct graph (rounds interleaved across graphs until stable) and give its rows the figures.

        The first row of a graph owns its bench record; the other rows of that graph say whose measurement they show.
        """
        from .executor import TaskFailed
        from .merge import apply_speed
        from .speed import interleaved, summarize

        owners: dict = {}
        for r in rows:
            b = r.pop("_bench", None)
            if b is None:
                continue
            owners.setdefault(b["graph"], {**b, "rows": []})["rows"].append(r)
        if self.storage is not None and self.storage.is_remote:
            for o in owners.values():  # the records written by other nodes, for resume and for the report
                self.pull(Path(o["record"]).parent)
        done, todo = {}, []
        for key, o in owners.items():
            prev = self._done(o["name"], Path(o["record"]),
                              self.bench_inputs(key, o["backend"], o["rows"][0].get("threshold")))
            if prev is not None:
                self._detail(f"[resume] {o['name']}: done, skipped")
                done[key] = prev["result"]
            else:
                todo.append(key)
        if todo:
            self.log(f"timing {len(todo)} distinct graph(s), interleaved, {self.bench_rounds[0]}-{self.bench_rounds[1]} "
                     f"rounds of {self.bench_iters} iterations")

        task = self.task_pipeline()

        def measure(key):  # one round at a time: the next is submitted when this one has returned
            o = owners[key]
            return self.executor.run("bench", _task_bench, task, o["artifact"], o["backend"])

        for key in todo:
            self._detail(f"[stage] {owners[key]['name']} ...")
        lost: dict = {}  # graph -> why its device could not finish it (its rows become error rows; --resume redoes it)
        rounds = interleaved(todo, measure, *self.bench_rounds, log=self._detail, failed=lost,
                             catch=(TaskFailed,) if self.remote else ()) if todo else {}
        for key, e in lost.items():
            for r in owners.pop(key)["rows"]:
                r.update({"status": "error", "error": f"bench on {self.remote}: {e}"})
                self.log(f"  {r['model']}@{r['imgsz']} {r['strategy']} {r['backend']}-{r['precision']}: error: "
                         f"bench on {self.remote}: {e}")
        for key in todo:
            if key in lost:
                continue
            o = owners[key]
            nodes = sorted({r["bench_node"] for r in rounds[key]})
            done[key] = {**summarize(rounds[key]), "per_round": rounds[key], "bench_node": ",".join(nodes)}
            atomic_write_json(Path(o["record"]), {"stage": o["name"], "status": "done", "run": self.run_id,
                                                  "inputs": self.bench_inputs(key, o["backend"],
                                                                              o["rows"][0].get("threshold")),
                                                  "result": done[key]})
            self.push(Path(o["record"]).parent.parent)
        for key, o in owners.items():
            res = done[key]
            for r in o["rows"]:
                apply_speed(r, res, key, None if r is o["rows"][0] else o["name"].rsplit(" bench", 1)[0])
                self.log(f"  {r['model']}@{r['imgsz']} {r['strategy']} {r['backend']}-{r['precision']}: "
                         f"{r['fps_e2e']:.1f} FPS end to end (cv {res['fps_cv'] if res['fps_cv'] is not None else '-'})")
        if self.sustain:
            self.measure_sustained(owners)

    def sustain_inputs(self, key: str) -> dict:
        from .._imports import tool_versions

        return {"graph": key, "target": self.measured_on, "sustain_s": self.sustain,
                "versions": tool_versions("onnxruntime", "openvino", "tensorrt")}

    def measure_sustained(self, owners: dict) -> None:
        """--sustain: each distinct graph, after the short rounds, one request at a time for `sustain` seconds on the
        target (its own record, so a changed duration does not time the short rounds again); its rows get the last
        window's p50 (`sustained_p50_ms`), `throttled` and the p50 change from the first window to the last."""
        from .executor import TaskFailed

        task = self.task_pipeline()
        self.log(f"sustained: {len(owners)} distinct graph(s), {self.sustain:g} s each, one request at a time")
        for key, o in owners.items():
            record = Path(o["record"][:-len(".bench.json")] + ".sustain.json")
            name = o["name"].rsplit(" bench", 1)[0] + " sustained"
            prev = self._done(name, record, self.sustain_inputs(key))
            if prev is not None:
                self._detail(f"[resume] {name}: done, skipped")
                res = prev["result"]
            else:
                try:
                    res = self.executor.run("bench", _task_sustain, task, o["artifact"], o["backend"])
                except TaskFailed as e:  # the device was lost: the rows keep their short-run figures, no ranking
                    if not self.remote:
                        raise
                    for r in o["rows"]:
                        r["sustained_error"] = f"sustained bench on {self.remote}: {e}"
                    self.log(f"  {name}: error: sustained bench on {self.remote}: {e}")
                    continue
                atomic_write_json(record, {"stage": name, "status": "done", "run": self.run_id,
                                           "inputs": self.sustain_inputs(key), "result": res})
                self.push(record.parent.parent)
            last = res["windows"][-1] if res.get("windows") else {}
            for r in o["rows"]:
                r.update({"sustained_p50_ms": last.get("p50_ms"), "sustained_p90_ms": last.get("p90_ms"),
                          "sustained_p50_change": res.get("p50_change"), "throttled": res.get("throttled"),
                          "sustained_windows": len(res.get("windows") or [])})
            self.log(f"  {name}: p50 {last.get('p50_ms') or 0:.2f} ms in the last window "
                     f"({(res.get('p50_change') or 0):+.1%} vs the first)" + (", THROTTLING" if res.get("throttled")
                                                                               else ""))


def _task_bench(pipe: Pipeline, artifact: str, backend: str) -> dict:
    """Executor task: one timing round of an artifact on this node's device; says which node it ran on."""
    from ..bench import run_bench
    from .executor import node_name
    from .speed import one_round

    pipe.pull(Path(artifact))
    if pipe.remote:  # the device's edgekit times it, with the options a local round uses
        from ..target.ssh import parse_target, remote_command

        device = parse_target(pipe.remote)
        res = remote_command(device, "bench", artifact, ["--backend", backend, "--iters", str(pipe.bench_iters),
                                                         "--warmup", "5", "--warmup-ms", "0"])
        return {**one_round(res), "bench_node": device.url}
    res = one_round(run_bench(artifact, device=pipe.target, backend=backend, iters=pipe.bench_iters, warmup=5,
                              log=None))
    return {**res, "bench_node": node_name()}


def _task_sustain(pipe: Pipeline, artifact: str, backend: str) -> dict:
    """Executor task: the sustained run of an artifact (`bench --sustain`) on this node's device, or on the SSH one."""
    from ..bench.harness import resolve_images
    from ..bench.sustain import run_sustained

    pipe.pull(Path(artifact))
    if pipe.remote:  # the device's edgekit runs it: a minimal short run, then the sustained one
        from ..target.ssh import parse_target, remote_command

        device = parse_target(pipe.remote)
        res = remote_command(device, "bench", artifact, ["--backend", backend, "--iters", "1", "--warmup", "1",
                                                         "--warmup-ms", "0", "--sustain", f"{pipe.sustain:g}"])
        return res["sustained"]
    from ..runtime import Engine

    engine = Engine(artifact, device=pipe.target, backend=backend)
    try:
        return run_sustained(engine, resolve_images(None), pipe.sustain)
    finally:
        engine.close()


