"""Per-layer time table: OpenVINO's PERF_COUNT profiling info, or ONNX Runtime's profiler trace (JSON)."""
from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

from ..errors import EdgekitError


def _table(acc: dict, runs: int, top: int) -> dict:
    """Mean ms per run for each layer, the slowest first, with each layer's share of the total."""
    rows = [{"name": n, "type": d["type"], "exec_type": d.get("exec_type"), "ms": d["ms"] / runs}
            for n, d in acc.items()]
    total = sum(r["ms"] for r in rows)
    rows.sort(key=lambda r: -r["ms"])
    for r in rows:
        r["share"] = round(r["ms"] / total, 4) if total else None
        r["ms"] = round(r["ms"], 4)
    by_type = defaultdict(float)
    for r in rows:
        by_type[r["type"]] += r["ms"]
    return {"runs": runs, "total_ms": round(total, 4), "layers": len(rows), "top": rows[:top],
            "by_type_ms": {k: round(v, 4) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])}}


def openvino_layers(engine, blob, runs: int) -> dict:
    """Sum OpenVINO's per-layer real time over `runs` inferences (layers not executed are skipped)."""
    acc: dict = {}
    for _ in range(runs):
        engine.infer(blob)
        for p in engine.backend.profiling_info():
            if p["status"].endswith("NOT_RUN"):
                continue
            d = acc.setdefault(p["name"], {"type": p["type"], "exec_type": p["exec_type"], "ms": 0.0})
            d["ms"] += p["real_ms"]
    return acc


def onnxruntime_layers(engine, blob, runs: int) -> dict:
    """Sum ONNX Runtime's node kernel times (profiler trace, 'Node' events, in us) over `runs` inferences."""
    for _ in range(runs):
        engine.infer(blob)
    trace = Path(engine.backend.end_profiling())
    try:
        events = json.loads(trace.read_text())
    finally:
        shutil.rmtree(trace.parent, ignore_errors=True)
    acc: dict = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        args = e.get("args", {})
        name = e["name"][: -len("_kernel_time")]
        d = acc.setdefault(name, {"type": args.get("op_name", "?"), "exec_type": args.get("provider"), "ms": 0.0})
        d["ms"] += e.get("dur", 0) / 1e3
    return acc


def layer_profile(artifact, device: str, backend: str | None, blob_of, runs: int = 20, top: int = 25,
                  **options) -> dict:
    """Per-layer table of one artifact: a fresh Engine with profiling on, `runs` inferences of a real image."""
    from ..runtime import Engine

    with Engine(artifact, device=device, backend=backend, perf_counters=True, **options) as eng:
        blob = blob_of(eng)
        if eng.backend_name == "openvino":
            eng.infer(blob)  # first run: allocation, not counted
            acc = openvino_layers(eng, blob, runs)
            source = "OpenVINO PERF_COUNT (InferRequest.get_profiling_info, real time)"
        elif eng.backend_name == "onnxruntime":
            acc = onnxruntime_layers(eng, blob, runs)  # the profiler cannot skip the first run: it is included
            source = "ONNX Runtime profiler (SessionOptions.enable_profiling, Node kernel_time events)"
        else:
            raise EdgekitError(f"--perf-counters: the {eng.backend_name} backend has no per-layer profiler here "
                               f"(openvino and onnxruntime do)")
        return {"source": source, **_table(acc, runs, top)}


def format_layers(prof: dict) -> str:
    """The per-layer table as text: the slowest layers, their type, ms per run and share."""
    lines = [f"per-layer times ({prof['source']}; mean of {prof['runs']} runs, {prof['layers']} layers, "
             f"{prof['total_ms']:.3f} ms in all):"]
    w = max([len(r["name"]) for r in prof["top"]] + [5])
    for r in prof["top"]:
        share = "-" if r["share"] is None else f"{r['share']:.1%}"
        lines.append(f"  {r['name'][:60].ljust(min(w, 60))}  {str(r['type'])[:22]:22}  {r['ms']:9.4f} ms  {share:>6}")
    return "\n".join(lines)
