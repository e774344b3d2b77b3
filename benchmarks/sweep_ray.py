"""Issue G's measurement: the vehicles sweep of issue F on one node (the local executor) and on a two-node local Ray
cluster (`--executor ray`), with Ray's own per-task overhead and the trials' durations. Writes
benchmarks/results/G_ray.md (and DIR/G_ray.json).

    python benchmarks/sweep_ray.py --local runs/F -o runs/G          # reuse F's 1-node run (benchmarks/sweep_vehicles.py)
    python benchmarks/sweep_ray.py --data ../shared/data/vehicles_openimages/data.yaml --subset 48,125 -o runs/G

The cluster is Ray's multi-node harness on this machine (ray.cluster_utils.Cluster, every process on 127.0.0.1): a head
with 1 CPU and a second node with 1 CPU and the custom resource `target0` (the device: bench tasks run only there, one
at a time, after the trials). Each train/export task reserves 1 CPU, so two trials run at once, one thread each, where
the local executor runs one trial at a time on every core. Not imported by the tests.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def task_overhead(n: int = 200) -> dict:
    """Ray's per-task cost on this cluster: a no-op task's round trip (submit -> result), one after another, and the
    same tasks submitted at once (throughput); plus a round trip to the device node (custom resource)."""
    import ray

    @ray.remote(num_cpus=1)
    def noop(x):
        return x

    @ray.remote(num_cpus=0, resources={"target0": 1})
    def on_device(x):
        return x

    ray.get([noop.remote(0) for _ in range(4)] + [on_device.remote(0)])  # workers started
    rt = []
    for i in range(n):
        t = time.perf_counter()
        ray.get(noop.remote(i))
        rt.append((time.perf_counter() - t) * 1000)
    dev = []
    for i in range(n // 4):
        t = time.perf_counter()
        ray.get(on_device.remote(i))
        dev.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    ray.get([noop.remote(i) for i in range(n)])
    burst = (time.perf_counter() - t) * 1000 / n
    return {"roundtrip_ms_p50": round(statistics.median(rt), 2), "roundtrip_ms_p90": round(sorted(rt)[int(.9 * n)], 2),
            "device_roundtrip_ms_p50": round(statistics.median(dev), 2), "burst_ms_per_task": round(burst, 2),
            "tasks": n}


def stage_seconds(run: Path) -> dict:
    """Per trial: seconds of each finished stage (from the stage records), and their sum."""
    out = {}
    for rec in sorted(run.rglob("stages/*.json")):
        if rec.name in ("rows.json",) or rec.name.endswith(".started.json"):
            continue
        doc = json.loads(rec.read_text())
        if doc.get("status") != "done" or "seconds" not in doc:
            continue
        trial = rec.parent.parent.relative_to(run).as_posix()
        out.setdefault(trial, {})[rec.stem] = doc["seconds"]
    return out


def key(r):
    return (r["model"], r["imgsz"], r["strategy"], r["backend"], r["precision"])


def main(argv=None) -> int:
    from sweep_vehicles import subset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--local", default=None, help="a finished benchmarks/sweep_vehicles.py output folder (its "
                   "budget/ run and F_sweep.json are the 1-node reference; its data/ subset is reused)")
    p.add_argument("--data", default=None, help="Vehicles-OpenImages data.yaml, when --local is not given")
    p.add_argument("--weights", default=None)
    p.add_argument("--subset", default=None, help="TRAIN,VAL seeded subset (with --data)")
    p.add_argument("--reduced", action="store_true", help="prove the script in a minute or two: one model, imgsz "
                   "64,96, head,full, 1 epoch, ONNX Runtime FP32 (with --data and --models NAME)")
    p.add_argument("--models", default="yolov8n_coco.pt,yolo11n_coco.pt")
    p.add_argument("--imgsz", default="320,640")
    p.add_argument("--strategies", default="head,full")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--backends", default="openvino")
    p.add_argument("--precisions", default=None)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "G_ray.md"))
    p.add_argument("-o", "--output", default="runs/G")
    a = p.parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # loopback only
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    from edgekit.bench.device import cpu_info
    from edgekit.sweep.pipeline import Pipeline
    from edgekit.sweep.executor import LocalExecutor, RayExecutor

    out = Path(a.output).absolute()
    out.mkdir(parents=True, exist_ok=True)
    if a.local:
        f = json.loads((Path(a.local) / "F_sweep.json").read_text())
        fa = f["args"]
        local_dir = Path(a.local) / "budget"
        data = Path(a.local) / "data" / "data.yaml" if fa.get("subset") else Path(fa["data"])
        local_doc = json.loads((local_dir / "report.json").read_text())
        local_wall = f["budget"]["wall_s"]
    else:
        fa = {"models": a.models, "imgsz": a.imgsz, "strategies": a.strategies, "epochs": a.epochs, "batch": 16,
              "backends": a.backends, "precisions": a.precisions, "calib_size": 300, "bench_iters": 30,
              "subset": a.subset}
        if a.reduced:
            fa.update(imgsz="64,96", strategies="head,full", epochs=1, backends="onnxruntime", precisions="fp32",
                      bench_iters=5, batch=4, calib_size=16)
        data = Path(a.data)
        fa["weights"] = a.weights or str(data.parent.parent / "weights")
        if a.subset:
            data = subset(data, *(int(x) for x in a.subset.split(",")), out / "data")
        local_doc = local_wall = None
    from edgekit.sweep.pipeline import split_strategies

    models = [str(Path(fa["weights"]) / m) for m in fa["models"].split(",")]
    cfg = dict(data=data.absolute(), model=Path(models[0]), models=models,
               imgsz=[int(x) for x in str(fa["imgsz"]).split(",")], strategies=split_strategies(fa["strategies"]),
               epochs=int(fa["epochs"]), batch=int(fa["batch"]), backends=fa["backends"].split(","),
               precisions=fa["precisions"].split(",") if fa.get("precisions") else None,
               calib_size=int(fa["calib_size"]), bench_iters=int(fa["bench_iters"]), log=lambda m: None)
    if local_doc is None:
        t = time.time()
        local_doc = Pipeline(out=out / "local", executor=LocalExecutor(), **cfg).run()
        local_wall = round(time.time() - t, 1)
        local_dir = out / "local"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "object_store_memory": 200_000_000})
    cluster.add_node(num_cpus=1, resources={"target0": 1}, object_store_memory=200_000_000)
    cluster.wait_for_nodes()
    try:
        ex = RayExecutor(cluster.address, bench_resource="target0")
        try:
            import ray

            device = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("target0"))
            overhead = task_overhead()
            t = time.time()
            ray_doc = Pipeline(out=out / "ray", executor=ex, **cfg).run()
            ray_wall = round(time.time() - t, 1)
        finally:
            ex.close()
    finally:
        cluster.shutdown()
    lrows = {key(r): r for r in local_doc["rows"]}
    rrows = {key(r): r for r in ray_doc["rows"]}
    diffs = {k: abs(lrows[k]["map50_95"] - rrows[k]["map50_95"]) for k in lrows
             if k in rrows and lrows[k].get("map50_95") is not None and rrows[k].get("map50_95") is not None}
    fps_ratio = [rrows[k]["fps_e2e"] / lrows[k]["fps_e2e"] for k in lrows
                 if k in rrows and lrows[k].get("fps_e2e") and rrows[k].get("fps_e2e")]
    on_device = all(r.get("bench_node") == device for r in ray_doc["rows"] if r.get("status") == "ok")
    lsec, rsec = stage_seconds(local_dir), stage_seconds(out / "ray")
    trial_s = {t: round(sum(v.values()), 1) for t, v in rsec.items()}
    local_s = {t: round(sum(v.values()), 1) for t, v in lsec.items()}
    cpu = cpu_info()
    res = {"cpu": cpu, "config": {k: str(v) for k, v in cfg.items() if k != "log"}, "local_wall_s": local_wall,
           "ray_wall_s": ray_wall, "overhead": overhead, "map_abs_diff_max": max(diffs.values()) if diffs else None,
           "rows_equal_4dp": sum(round(d, 4) == 0 for d in diffs.values()), "rows": len(diffs),
           "fps_ray_over_local_median": round(statistics.median(fps_ratio), 3) if fps_ratio else None,
           "bench_on_device_node": on_device, "trial_seconds_ray": trial_s,
           "trial_seconds_local": local_s}
    (out / "G_ray.json").write_text(json.dumps(res, indent=1, default=str))
    n_trials = len(trial_s)
    md = ["# G · the same sweep on a two-node local Ray cluster (benchmarks/sweep_ray.py)", "",
          f"Machine: {cpu.get('model')}, {cpu.get('cores')} cores, {cpu.get('memory_gb')} GB; ISA flags: "
          f"{', '.join(cpu.get('isa') or [])}. Ray {__import__('ray').__version__}, every process on 127.0.0.1.",
          f"Command: `python benchmarks/sweep_ray.py {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
          f"Sweep: issue F's vehicles configuration (`--models {fa['models']} --imgsz {fa['imgsz']} --strategies "
          f"{fa['strategies']} --epochs {fa['epochs']}`, backends {fa['backends']}"
          + (f", seeded subset {fa['subset']} of train,val" if fa.get("subset") else "") + f"): {n_trials} trials, "
          f"{len(ray_doc['rows'])} rows.", "",
          "| executor | nodes | wall s | trials at once | threads per training |", "|---|---:|---:|---:|---:|",
          f"| local | 1 | {local_wall:.0f} | 1 | all cores |",
          f"| ray | 2 (1 CPU each; the second holds `target0`) | {ray_wall:.0f} | 2 | 1 |", "",
          f"- Ray / local wall time: **{ray_wall / local_wall:.2f}**.",
          f"- Same rows: {res['rows_equal_4dp']} of {res['rows']} rows have the same mAP50-95 to 4 decimals; the "
          f"largest difference is {res['map_abs_diff_max'] if res['map_abs_diff_max'] is not None else float('nan'):.4f}"
          " (training on 1 thread per task vs all cores can change float summation order; the tests train both on 1 "
          "thread and see equal rows).",
          f"- Every bench task ran on the device node ({device[:12]}…): {'yes' if on_device else 'NO'}. FPS of the "
          f"same graph, Ray bench task / local: median {res['fps_ray_over_local_median']}.",
          f"- Ray's per-task overhead here: no-op round trip p50 {overhead['roundtrip_ms_p50']} ms (p90 "
          f"{overhead['roundtrip_ms_p90']} ms), to the device node {overhead['device_roundtrip_ms_p50']} ms, "
          f"{overhead['burst_ms_per_task']} ms per task when {overhead['tasks']} are submitted at once.",
          f"- Trials' durations on Ray (sum of their stage records): median "
          f"{statistics.median(trial_s.values()):.0f} s, range {min(trial_s.values()):.0f}-{max(trial_s.values()):.0f} s"
          " per trial. A sweep submits about 2 tasks per trial plus one per bench round, so Ray's cost is "
          f"{2 * overhead['roundtrip_ms_p50'] / 1000 / statistics.median(trial_s.values()) * 100:.4f} % of a "
          "median trial.", "",
          "What two cores can and cannot show: both 'nodes' share the same two cores. "
          + (f"The Ray run is faster here because two single-thread trials at once keep both cores busier than one "
             f"trial on two threads (a trial's own stages take longer on Ray: median "
             f"{statistics.median(trial_s.values()):.0f} s vs {statistics.median(local_s.values()):.0f} s locally, "
             f"from the stage records), not because a second machine was added; it "
             if ray_wall < local_wall else "The Ray run cannot be faster than the machine; it ")
          + "shows that the sweep runs unchanged as Ray tasks (same rows, bench pinned to the device's node) and what "
          "Ray costs per task. The scaling claim for more machines rests on the trials' "
          "independence (a trial needs only the shared config, the dataset and its own stage folder; promotions "
          "in halving wait only for their own model x imgsz group) and on the overhead above: milliseconds per "
          "task against trials of tens of seconds here and hours in a real sweep, so N nodes with a core budget "
          "each finish N trials at a time until the number of trials, or the bench device (one at a time), bounds "
          "the sweep.", ""]
    Path(a.results).write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
