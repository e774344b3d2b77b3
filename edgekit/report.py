"""The strategy table, its Pareto front, the recommendation and the picture."""
from __future__ import annotations

from pathlib import Path

COLUMNS = [("strategy", "strategy"), ("backend", "backend"), ("precision", "prec"), ("train_wall_s", "train s"),
           ("gpu_hours", "GPU-h"), ("cost_usd", "cost $"), ("map50", "mAP50"), ("map50_95", "mAP50-95"),
           ("latency_p50_ms", "infer p50 ms"), ("e2e_p50_ms", "e2e p50 ms"), ("fps_e2e", "FPS e2e"),
           ("speedup_vs_ref", "x ref"), ("model_mb", "MB")]
SHORT = {"onnxruntime": "ORT", "openvino": "OV", "tensorrt": "TRT"}


def add_speedups(rows: list[dict]) -> None:
    """FPS of each row over its strategy's FP32 ONNX Runtime row (the reference measured in the same run)."""
    ref = {r["strategy"]: r["fps_e2e"] for r in rows
           if r.get("status") == "ok" and r["backend"] == "onnxruntime" and r["precision"] == "fp32"}
    for r in rows:
        if r.get("status") == "ok" and ref.get(r["strategy"]):
            r["speedup_vs_ref"] = round(r["fps_e2e"] / ref[r["strategy"]], 2)


FORMATS = {"train_wall_s": "{:.0f}", "gpu_hours": "{:.3f}", "cost_usd": "{:.2f}", "map50": "{:.4f}",
           "map50_95": "{:.4f}", "latency_p50_ms": "{:.1f}", "e2e_p50_ms": "{:.1f}", "fps_e2e": "{:.1f}",
           "speedup_vs_ref": "{:.2f}", "model_mb": "{:.2f}"}


def _fmt(key: str, v) -> str:
    if v is None:
        return "-"
    return FORMATS[key].format(v) if key in FORMATS and isinstance(v, (int, float)) else str(v)


def pareto_front(rows: list[dict]) -> list[dict]:
    """Rows not beaten on both mAP50-95 and end-to-end FPS by another row."""
    ok = [r for r in rows if r.get("status") == "ok"]
    return [r for r in ok if not any(o is not r and o["map50_95"] >= r["map50_95"] and o["fps_e2e"] >= r["fps_e2e"]
                                     and (o["map50_95"] > r["map50_95"] or o["fps_e2e"] > r["fps_e2e"]) for o in ok)]


def recommend(rows: list[dict], min_fps=None, max_map_drop: float = 0.5, budget_usd=None) -> dict:
    """The fastest artifact within max_map_drop points of the most accurate one, honouring FPS and budget limits."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return {"strategy": None, "artifact": None, "why": "No artifact was produced successfully; see the rows' errors."}
    notes = []
    if budget_usd is not None:
        within = [r for r in ok if (r.get("cost_usd") or 0) <= budget_usd]
        if within:
            if len(within) < len(ok):
                notes.append(f"{len(ok) - len(within)} row(s) over the ${budget_usd:g} training budget were left out")
            ok = within
        else:
            notes.append(f"no strategy trained within ${budget_usd:g}; the budget was ignored")
    if min_fps is not None:
        fast = [r for r in ok if r["fps_e2e"] >= min_fps]
        if fast:
            ok = fast
        else:
            notes.append(f"no artifact reaches {min_fps:g} FPS end to end; the fastest is "
                         f"{max(r['fps_e2e'] for r in ok):.1f}")
    best = max(ok, key=lambda r: r["map50_95"])
    tol = max_map_drop / 100.0
    near = [r for r in ok if r["map50_95"] >= best["map50_95"] - tol]
    pick = max(near, key=lambda r: (r["fps_e2e"], r["map50_95"]))
    why = (f"Strategy '{pick['strategy']}' exported to {pick['backend']} {pick['precision'].upper()} gives "
           f"mAP50-95 {pick['map50_95']:.3f} at {pick['fps_e2e']:.1f} FPS end to end on the target. "
           f"The most accurate artifact ({best['strategy']}, {best['backend']} {best['precision']}) reaches "
           f"{best['map50_95']:.3f}; within the allowed drop of {max_map_drop:g} mAP points this one is the fastest"
           f"{' of ' + str(len(near)) + ' candidates' if len(near) > 1 else ''}. Training took "
           f"{pick.get('train_wall_s') or 0:.0f} s ({pick.get('gpu_hours') or 0:.3f} GPU-h, ${pick.get('cost_usd') or 0:.2f})"
           + (". " + "; ".join(notes) + "." if notes else "."))
    scratch = [r for r in rows if r.get("status") == "ok" and r["strategy"] == "scratch"]
    if scratch and pick["strategy"] != "scratch":
        s = max(scratch, key=lambda r: r["map50_95"])
        why += f" Training from scratch with the same budget reached only mAP50-95 {s['map50_95']:.3f}."
    return {"strategy": pick["strategy"], "backend": pick["backend"], "precision": pick["precision"],
            "artifact": pick["artifact"], "map50_95": pick["map50_95"], "fps_e2e": pick["fps_e2e"], "why": why}


def render_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(h for _, h in COLUMNS) + " | status |"
    sep = "|" + "---|" * (len(COLUMNS) + 1)
    lines = [head, sep]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(k, r.get(k)) for k, _ in COLUMNS) + f" | {r.get('status')} |")
    return "\n".join(lines)


def render_markdown(doc: dict, png: Path | None) -> str:
    c, rec = doc["config"], doc["recommendation"]
    n_eval = next((r["eval_images"] for r in doc["rows"] if r.get("eval_images")), None)
    parts = ["# edgekit train-export report", "",
             f"data `{c['data']}`, model `{c['model']}`, {c['epochs']} epochs at {c['imgsz']} px, target `{c['target']}`, "
             f"max mAP drop {c['max_map_drop']} points" + (f", min FPS {c['min_fps']}" if c.get("min_fps") else "") + "."
             + (f" mAP on {n_eval} val images: with few images, differences of a point or two are noise." if n_eval else ""),
             "",
             render_table(doc["rows"]), "",
             "FPS e2e: images/s through the whole pipeline (decode and letterbox in worker threads overlapping the "
             "backend's own concurrent inference, then decode + NMS), batch 1. infer p50: inference-only latency of one "
             "request; e2e p50: one image at a time, decode to detections. x ref: FPS e2e over the same strategy's FP32 "
             "ONNX on ONNX Runtime, measured in the same run.", "",
             "## Recommendation", "", rec["why"], ""]
    if rec.get("artifact"):
        parts += [f"Artifact: `{rec['artifact']}`", ""]
    if png:
        parts += [f"![Pareto: mAP50-95 against end-to-end FPS]({png.name})", ""]
    failed = [r for r in doc["rows"] if r.get("status") != "ok"]
    if failed:
        parts += ["## Not produced", ""] + [f"- {r['strategy']} {r['backend']} {r['precision']}: {r.get('error')}" for r in failed]
    return "\n".join(parts) + "\n"


def pareto_png(rows: list[dict], path: Path, rec: dict | None = None) -> Path | None:
    """mAP50-95 against FPS, marker size from training cost (wall time when cost is 0), the front drawn."""
    ok = [r for r in rows if r.get("status") == "ok"]
    if not ok:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from .io import atomic_path

    use_cost = any((r.get("cost_usd") or 0) > 0 for r in ok)
    key = "cost_usd" if use_cost else "train_wall_s"
    top = max((r.get(key) or 0) for r in ok) or 1.0
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    strategies = sorted({r["strategy"] for r in ok})
    cmap = plt.get_cmap("tab10")
    markers = {"fp32": "o", "fp16": "s", "int8": "^"}
    for r in ok:
        color = cmap(strategies.index(r["strategy"]) % 10)
        size = 60 + 500 * (r.get(key) or 0) / top
        ax.scatter(r["fps_e2e"], r["map50_95"], s=size, color=color, marker=markers.get(r["precision"], "o"),
                   alpha=0.75, edgecolors="black", linewidths=0.5)
        ax.annotate(f"{SHORT.get(r['backend'], r['backend'])} {r['precision']}", (r["fps_e2e"], r["map50_95"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    front = sorted(pareto_front(rows), key=lambda r: r["fps_e2e"])
    ax.plot([r["fps_e2e"] for r in front], [r["map50_95"] for r in front], "--", color="gray", label="Pareto front")
    if rec and rec.get("artifact"):
        ax.scatter([rec["fps_e2e"]], [rec["map50_95"]], s=400, facecolors="none", edgecolors="red", linewidths=2,
                   label="recommended")
    for i, s in enumerate(strategies):
        ax.scatter([], [], color=cmap(i % 10), label=s)
    ax.set_xlabel("end-to-end FPS on the target (batch 1)")
    ax.set_ylabel("mAP50-95 (val)")
    ax.set_title(f"strategies: accuracy vs deploy speed (marker size: {'train cost' if use_cost else 'train time'})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
