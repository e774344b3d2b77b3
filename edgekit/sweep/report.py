"""The sweep's table, its Pareto front, hard limits, the recommendation (paired statistics) and the picture."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..io import atomic_write_json, atomic_write_text
from .trial import relative_to, run_relative

COLUMNS = [("model", "model"), ("imgsz", "imgsz"), ("strategy", "strategy"), ("backend", "backend"),
           ("precision", "prec"), ("train_wall_s", "train s"), ("cost_usd", "cost $"), ("map50", "mAP50"),
           ("map50_95", "mAP50-95"), ("map50_95_ci", "95% CI"), ("threshold", "conf"),
           ("precision_at_threshold", "P"), ("recall_at_threshold", "R"), ("f1_at_threshold", "F1"),
           ("infer_p50_ms", "infer p50 ms"),
           ("latency_p50_ms", "e2e p50 ms"), ("latency_p90_ms", "e2e p90 ms"), ("fps_e2e", "FPS e2e"),
           ("fps_cv", "FPS cv"), ("speedup_vs_ref", "x ref"), ("model_mb", "MB")]
SUSTAINED_COLUMNS = [("sustained_p50_ms", "sustained p50 ms"), ("sustained_p50_change", "p50 drift"),
                     ("throttled", "throttled")]
SHORT = {"onnxruntime": "ORT", "openvino": "OV", "tensorrt": "TRT"}
# hard limits: name -> (row field, True when the row misses it, how to say it)
LIMITS = {
    "max_latency_ms": ("latency_p50_ms", lambda v, x: v > x, "e2e p50 latency {x:g} ms"),
    "min_fps": ("fps_e2e", lambda v, x: v < x, "{x:g} FPS end to end"),
    "budget_usd": ("cost_usd", lambda v, x: v > x, "training budget ${x:g}"),
    "budget_hours": ("train_wall_s", lambda v, x: v / 3600 > x, "training budget {x:g} h"),
}


def _limit_field(name: str, sustained: bool) -> str:
    """The row field a limit reads: with --sustain, the latency limit reads the sustained (last window's) p50."""
    return "sustained_p50_ms" if sustained and name == "max_latency_ms" else LIMITS[name][0]


def _fps(r: dict) -> float:
    return r["fps_e2e"]


def _sustained_rate(r: dict) -> float:
    """Requests per second at the sustained (last window's) p50, one at a time: the speed --sustain ranks by."""
    return 1e3 / r["sustained_p50_ms"]


def add_speedups(rows: list[dict]) -> None:
    """FPS of each row over its trial's FP32 ONNX Runtime row (the reference measured in the same run)."""
    def trial(r):
        return r.get("model"), r.get("imgsz"), r["strategy"]

    ref = {trial(r): r["fps_e2e"] for r in rows
           if r.get("status") == "ok" and r["backend"] == "onnxruntime" and r["precision"] == "fp32"
           and r.get("fps_e2e")}
    for r in rows:
        if r.get("status") == "ok" and ref.get(trial(r)) and r.get("fps_e2e"):
            r["speedup_vs_ref"] = round(r["fps_e2e"] / ref[trial(r)], 2)


FORMATS = {"train_wall_s": "{:.0f}", "gpu_hours": "{:.3f}", "cost_usd": "{:.2f}", "map50": "{:.4f}",
           "map50_95": "{:.4f}", "threshold": "{:.4g}", "precision_at_threshold": "{:.3f}",
           "recall_at_threshold": "{:.3f}", "f1_at_threshold": "{:.3f}", "infer_p50_ms": "{:.1f}",
           "latency_p50_ms": "{:.1f}", "latency_p90_ms": "{:.1f}",
           "e2e_p50_ms": "{:.1f}", "fps_e2e": "{:.1f}", "fps_cv": "{:.3f}", "speedup_vs_ref": "{:.2f}",
           "model_mb": "{:.2f}", "sustained_p50_ms": "{:.1f}", "sustained_p50_change": "{:+.1%}"}


def _fmt(key: str, v) -> str:
    if v is None:
        return "-"
    if key == "map50_95_ci" and isinstance(v, (list, tuple)):
        return f"{v[0]:.3f}-{v[1]:.3f}"
    return FORMATS[key].format(v) if key in FORMATS and isinstance(v, (int, float)) else str(v)


def _ok(rows, sustained: bool = False):
    """Produced and timed rows (with --sustain: timed sustained too)."""
    return [r for r in rows if r.get("status") == "ok" and r.get("fps_e2e") is not None
            and (not sustained or r.get("sustained_p50_ms"))]


def pareto_front(rows: list[dict]) -> list[dict]:
    """Rows not beaten on both mAP50-95 and end-to-end FPS by another row."""
    ok = _ok(rows)
    return [r for r in ok if not any(o is not r and o["map50_95"] >= r["map50_95"] and o["fps_e2e"] >= r["fps_e2e"]
                                     and (o["map50_95"] > r["map50_95"] or o["fps_e2e"] > r["fps_e2e"]) for o in ok)]


def mark_limits(rows: list[dict], sustained: bool = False, **limits) -> None:
    """Set each produced row's `misses`: the hard limits (max_latency_ms, min_fps, budget_usd, budget_hours) it misses
    (sustained: the latency limit on the sustained p50)."""
    for r in rows:
        if r.get("status") != "ok":
            continue
        r["misses"] = [name for name, x in limits.items() if x is not None and name in LIMITS
                       and r.get(f := _limit_field(name, sustained)) is not None and LIMITS[name][1](r[f], x)]


def _cost(r) -> float:
    return (r.get("cost_usd") or 0) or (r.get("train_wall_s") or 0) / 1e6  # wall time breaks ties when cost is 0


def _paired(a: dict, b: dict) -> dict | None:
    """mAP50-95 of a minus b in points with its paired bootstrap interval, from the rows' saved matches.

    None when a row records no matches file; a recorded file that is not there is an error, never a silent switch
    to the unpaired difference (which can change the recommendation).
    """
    if not (a.get("matches") and b.get("matches")):
        return None
    for r in (a, b):
        if not Path(r["matches"]).is_file():
            from ..errors import ArtifactError

            raise ArtifactError(f"{r['matches']}: the per-image matches of {_name(r)} are missing: the "
                                f"recommendation's paired comparison needs them (train-export --resume on its run "
                                f"evaluates it again)")
    return _paired_files(a["matches"], Path(a["matches"]).stat().st_mtime_ns, b["matches"],
                         Path(b["matches"]).stat().st_mtime_ns)


@lru_cache(maxsize=4096)
def _paired_files(a: str, a_mtime: int, b: str, b_mtime: int) -> dict:
    """paired_diff of two saved matches files, once per (file, mtime) pair in a process."""
    from ..eval.bootstrap import Matches, paired_diff

    return paired_diff(Matches.load(a), Matches.load(b))


def _choose(cands: list[dict], max_map_drop: float, paired, speed=_fps) -> tuple[dict, dict, dict]:
    """(pick, best, comparisons): the fastest candidate not significantly worse than the best by > max_map_drop.

    Comparisons are made from the fastest down, only as far as the choice needs (each is a paired bootstrap).
    """
    best = max(cands, key=lambda r: (r["map50_95"], speed(r), -_cost(r)))
    cmp: dict = {}

    def acceptable(r) -> bool:
        if r is best:
            return True
        if id(r) not in cmp:
            d = paired(best, r)
            if d is None:  # no per-image matches recorded: the point difference decides, and the report says so
                diff = (best["map50_95"] - r["map50_95"]) * 100
                d = {"diff": round(diff, 3), "ci": [diff, diff], "images": None, "unpaired": True}
            cmp[id(r)] = d
        return cmp[id(r)]["ci"][0] <= max_map_drop + 1e-9

    order = sorted(cands, key=lambda r: -speed(r))
    top = next(r for r in order if acceptable(r))
    fast = [r for r in order if _same_speed(r, top, speed) and acceptable(r)]  # inside the speed noise
    lead = max(fast, key=lambda r: (r["map50_95"], speed(r)))
    tied = [r for r in fast if r is lead or _tied(paired, lead, r)]  # and inside the mAP noise: cost decides
    pick = max(tied, key=lambda r: (-_cost(r), r["map50_95"], speed(r)))
    return pick, best, cmp


def _tied(paired, a: dict, b: dict) -> bool:
    """a is not significantly more accurate than b (paired interval of a - b reaches 0); without matches: equal."""
    d = paired(a, b)
    return d["ci"][0] <= 0 if d is not None else b["map50_95"] >= a["map50_95"]


def _same_speed(r: dict, top: dict, speed=_fps) -> bool:
    """r's speed is the top's, or below it by less than the larger of the two rows' round-to-round FPS variation
    (also the noise allowed to the sustained rate: a single sustained run has no round-to-round figure)."""
    tol = max(r.get("fps_cv") or 0.0, top.get("fps_cv") or 0.0)
    return speed(r) >= speed(top) * (1 - tol) - 1e-9


def _name(r: dict) -> str:
    m = f"{r['model']}@{r['imgsz']} " if r.get("model") else ""
    return f"{m}{r['strategy']}, {r['backend']} {r['precision']}"


def recommend(rows: list[dict], max_map_drop: float = 0.5, max_latency_ms=None, min_fps=None, budget_usd=None,
              budget_hours=None, paired=_paired, sustained: bool = False) -> dict:
    """The fastest artifact that meets every hard limit and whose mAP50-95 is not significantly (paired bootstrap)
    worse than the best's by more than max_map_drop points; ties on speed go to the cheaper training.

    bound_by: the hard limits that changed the choice (they excluded the pick or a more accurate row), else
    ['max_map_drop'] when a faster row was turned down for accuracy, else [] (the fastest row of all).
    sustained (--sustain): speed is the rate at the sustained p50 (last window) and the latency limit reads it; rows
    without a sustained figure are not candidates.
    """
    speed = _sustained_rate if sustained else _fps
    limits = {"max_latency_ms": max_latency_ms, "min_fps": min_fps, "budget_usd": budget_usd,
              "budget_hours": budget_hours}
    mark_limits(rows, sustained, **limits)
    ok = _ok(rows, sustained)
    empty = {"model": None, "imgsz": None, "strategy": None, "backend": None, "precision": None, "artifact": None,
             "bound_by": []}
    if not ok:
        return {**empty, "why": "Nothing is recommended: no produced artifact was timed on the target (untimed rows "
                "are never recommended)." if any(r.get("status") == "ok" for r in rows) else
                "No artifact was produced successfully; see the rows' errors."}
    cands = [r for r in ok if not r.get("misses")]
    if not cands:
        said = []
        for name, x in limits.items():
            if x is not None and any(name in r["misses"] for r in ok):
                field_ = _limit_field(name, sustained)
                edge = (min if name != "min_fps" else max)(r[field_] for r in ok)
                said.append(f"no artifact meets the {LIMITS[name][2].format(x=x)} (the best reaches {edge:.1f})"
                            if name != "min_fps" else f"no artifact reaches {x:g} FPS end to end; the fastest is "
                                                      f"{edge:.1f}")
        return {**empty, "bound_by": [n for n, x in limits.items() if x is not None],
                "why": "Nothing is recommended: " + "; ".join(said) + "."}
    pick, best, cmp = _choose(cands, max_map_drop, paired, speed)
    free_pick, free_best, _ = _choose(ok, max_map_drop, paired, speed) if len(cands) < len(ok) else (pick, best, cmp)
    bound = [n for n, x in limits.items() if x is not None and any(
        n in r["misses"] for r in ok if r is free_pick or r["map50_95"] > best["map50_95"])]
    rejected = [r for r in cands if speed(r) > speed(pick) and not _same_speed(pick, r, speed)]
    bound_by = bound or (["max_map_drop"] if rejected else [])
    n_img = next((c["images"] for c in cmp.values() if c.get("images")), None)
    why = [f"{_name(pick)} gives mAP50-95 {pick['map50_95']:.3f}"
           + (f" (95% CI {pick['map50_95_ci'][0]:.3f}-{pick['map50_95_ci'][1]:.3f})" if pick.get("map50_95_ci") else "")
           + f" at {pick['fps_e2e']:.1f} FPS end to end"
           + (f", e2e p50 {pick['latency_p50_ms']:.1f} ms" if pick.get("latency_p50_ms") is not None else "")
           + (f", sustained p50 {pick['sustained_p50_ms']:.1f} ms (last window)" if sustained else "")
           + " on the target." + (" Ranked by the sustained p50." if sustained else "")]
    out = {}
    if pick is best:
        why.append("It is the most accurate artifact within the limits" + (
            f"; the {len(rejected)} faster one(s) are significantly worse than it by more than the allowed "
            f"{max_map_drop:g} points." if rejected else ", and the fastest."))
    else:
        c = cmp[id(pick)]
        tied = c["ci"][0] <= 0 <= c["ci"][1]
        out["tied"] = tied
        if tied:
            why.append(f"It is tied with the most accurate artifact ({_name(best)}, {best['map50_95']:.3f}): the "
                       f"difference, {c['diff']:+.2f} points, lies inside the paired 95% interval [{c['ci'][0]:+.2f}, "
                       f"{c['ci'][1]:+.2f}]" + (f" on {n_img} val images" if n_img else "") + ", so the faster/cheaper "
                       "one wins.")
        else:
            why.append(f"The most accurate artifact ({_name(best)}) reaches {best['map50_95']:.3f}; this one is "
                       f"{c['diff']:.2f} points lower (paired 95% interval [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}]), "
                       f"not significantly more than the allowed {max_map_drop:g}, and it is the fastest such.")
    same_speed = [r for r in cands if r is not pick and _same_speed(r, pick if speed(pick) >= speed(r) else r, speed)
                  and (r is best or (id(r) in cmp and cmp[id(r)]["ci"][0] <= max_map_drop + 1e-9))]
    if same_speed:
        shared = sum(speed(r) == speed(pick) for r in same_speed)
        why.append(f"{len(same_speed)} other candidate(s) are as fast within the measurement noise"
                   + (f" ({shared} share its graph and speed measurement)" if shared else "")
                   + ("; it is significantly more accurate than the cheaper one(s)."
                      if any(_cost(r) < _cost(pick) for r in same_speed) else
                      f"; the cheapest training decided ({pick.get('train_wall_s') or 0:.0f} s, "
                      f"${pick.get('cost_usd') or 0:.2f})."))
    unresolved = [(r, cmp[id(r)]) for r in cands if id(r) in cmp and cmp[id(r)]["ci"][0] <= 0 <= cmp[id(r)]["ci"][1]
                  and abs(cmp[id(r)]["diff"]) > 1e-9 and cmp[id(r)].get("images")]
    if unresolved:
        from ..eval.bootstrap import images_to_separate

        target = next((c for r, c in unresolved if r is pick), unresolved[0][1])
        need = images_to_separate(target["diff"], target["ci"], target["images"])
        out["val_images_needed"] = need
        why.append(f"The val split ({target['images']} images) is too small to separate {len(unresolved)} of the "
                   f"{len(cmp)} candidate(s) compared from the most accurate one" + (f"; about {need} val images would separate "
                   f"a {abs(target['diff']):.2f}-point difference" if need else "") + ".")
    if bound:
        why.append("Bound by " + ", ".join(LIMITS[n][2].format(x=limits[n]) for n in bound) + ": it excluded "
                   + f"{sum(1 for r in ok if r.get('misses'))} row(s)"
                   + (f", including {_name(free_pick)} that would have been picked" if free_pick is not pick
                      and free_pick.get("misses") else "")
                   + (f" and the more accurate {_name(free_best)} ({free_best['map50_95']:.3f})"
                      if free_best.get("misses") and free_best["map50_95"] > best["map50_95"] else "") + ".")
    elif bound_by == ["max_map_drop"]:
        why.append(f"Bound by the allowed mAP drop ({max_map_drop:g} points): {len(rejected)} faster row(s) are "
                   f"significantly worse than that.")
    unpaired = sum(1 for c in cmp.values() if c.get("unpaired"))
    if unpaired:
        out["unpaired_comparisons"] = unpaired
        why.append(f"{unpaired} comparison(s) used the plain mAP difference, without a paired interval: their rows "
                   f"record no per-image matches.")
    missed = sum(1 for r in ok if r.get("misses"))
    if missed and not bound:
        why.append(f"{missed} row(s) miss a hard limit and were not considered; they would not have changed the choice.")
    scratch = [r for r in ok if r["strategy"] == "scratch"]
    if scratch and pick["strategy"] != "scratch":
        s = max(scratch, key=lambda r: r["map50_95"])
        why.append(f"Training from scratch with the same budget reached only mAP50-95 {s['map50_95']:.3f}.")
    why.append(f"Training took {pick.get('train_wall_s') or 0:.0f} s ({pick.get('gpu_hours') or 0:.3f} GPU-h, "
               f"${pick.get('cost_usd') or 0:.2f}).")
    return {"model": pick.get("model"), "imgsz": pick.get("imgsz"), "strategy": pick["strategy"],
            "backend": pick["backend"], "precision": pick["precision"], "artifact": pick["artifact"],
            "map50_95": pick["map50_95"], "map50_95_ci": pick.get("map50_95_ci"), "fps_e2e": pick["fps_e2e"],
            "latency_p50_ms": pick.get("latency_p50_ms"), "bound_by": bound_by, **out,
            **({"ranked_by": "sustained_p50_ms", "sustained_p50_ms": pick["sustained_p50_ms"]} if sustained else {}),
            "why": " ".join(why)}


def ranking_swaps(rows: list[dict]) -> list[dict]:
    """Pairs of timed rows whose order by p50 latency the sustained run reverses: a was faster than b in the short
    rounds (e2e p50) and slower in the sustained run's last window, each time by more than the noise the
    recommendation allows (the larger FPS cv of the two; ties, a shared graph included, are not swaps)."""
    ok = [r for r in _ok(rows, True) if r.get("latency_p50_ms") is not None]

    def faster(x: float, y: float, a: dict, b: dict) -> bool:
        return x < y * (1 - max(a.get("fps_cv") or 0.0, b.get("fps_cv") or 0.0)) - 1e-9

    return [{"short_faster": _name(a), "sustained_faster": _name(b),
             "latency_p50_ms": [a["latency_p50_ms"], b["latency_p50_ms"]],
             "sustained_p50_ms": [a["sustained_p50_ms"], b["sustained_p50_ms"]]}
            for a in ok for b in ok if faster(a["latency_p50_ms"], b["latency_p50_ms"], a, b)
            and faster(b["sustained_p50_ms"], a["sustained_p50_ms"], a, b)]


def render_table(rows: list[dict]) -> str:
    cols = COLUMNS + (SUSTAINED_COLUMNS if any("sustained_p50_ms" in r for r in rows) else [])
    head = "| " + " | ".join(h for _, h in cols) + " | status |"
    sep = "|" + "---|" * (len(cols) + 1)
    lines = [head, sep]
    for r in rows:
        status = r.get("status")
        if r.get("misses"):
            status = f"misses {', '.join(r['misses'])}"
        if r.get("untimed"):
            status = f"{status}, untimed (never recommended)"
        lines.append("| " + " | ".join(_fmt(k, r.get(k)) for k, _ in cols) + f" | {status} |")
    return "\n".join(lines)


def _segments(rows: list[dict]) -> list[str]:
    """Per-size and per-class AP50-95 of each produced row, as a table."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("per_class") is not None]
    if not ok:
        return []
    names = list(ok[0]["per_class"])
    head = ["row", "small", "medium", "large"] + names
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in ok:
        size = r.get("per_size") or {}
        vals = [size.get(k) for k in ("small", "medium", "large")] + [r["per_class"].get(n) for n in names]
        lines.append(f"| {_name(r)} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in vals) + " |")
    return lines


def _sustained_lines(doc: dict) -> list[str]:
    """--sustain: what ranked the rows, and whether the sustained ranking (by p50) reverses the short run's."""
    s = doc.get("sustained")
    if not s:
        return []
    lines = [f"Ranked by the sustained p50 (the last window of a {s['duration_s']:g} s run of each graph, one request "
             f"at a time); the latency limit reads it too."]
    if s["agrees_with_short_run"]:
        return lines + ["The sustained ranking by p50 agrees with the short run's.", ""]
    lines += [f"The sustained ranking by p50 disagrees with the short run's: {len(s['swaps'])} pair(s) swap, each "
              f"by more than the rows' FPS cv:", ""]
    lines += [f"- {w['short_faster']} (short p50 {w['latency_p50_ms'][0]:.2f} ms, sustained "
              f"{w['sustained_p50_ms'][0]:.2f} ms) vs {w['sustained_faster']} (short {w['latency_p50_ms'][1]:.2f} ms, "
              f"sustained {w['sustained_p50_ms'][1]:.2f} ms)" for w in s["swaps"][:MAX_SWAPS_LISTED]]
    if len(s["swaps"]) > MAX_SWAPS_LISTED:
        lines.append(f"- and {len(s['swaps']) - MAX_SWAPS_LISTED} more (report.json lists them all)")
    return lines + [""]


MAX_SWAPS_LISTED = 10
DEVICE_HOST_TOLERANCE = 0.0005  # mAP50-95 (a fraction): below it, the device and the host agree


def _device_accuracy_lines(rows: list[dict]) -> list[str]:
    """A device target: the rows whose mAP50-95 on the device differs from the host's own figure (its accuracy gate)."""
    diff = [r for r in rows if r.get("map50_95_device_minus_host") is not None
            and abs(r["map50_95_device_minus_host"]) > DEVICE_HOST_TOLERANCE]
    if not diff:
        return []
    return [f"mAP50-95 on the device differs from the host's (its accuracy gate) by more than "
            f"{DEVICE_HOST_TOLERANCE:g} for {len(diff)} row(s): " + "; ".join(
                f"{_name(r)}: device {r['map50_95']:.4f}, host {r['map50_95_host']:.4f} "
                f"({r['map50_95_device_minus_host']:+.4f})" for r in diff) + ".", ""]


def _threshold_rule(config: dict) -> str:
    """How the thresholds were chosen, in words (config 'threshold': max_f1, precision:P or recall:R)."""
    spec = str(config.get("threshold") or "max_f1")
    if spec.startswith("precision:"):
        return f"the highest recall at precision >= {spec.split(':', 1)[1]}"
    if spec.startswith("recall:"):
        return f"the highest precision at recall >= {spec.split(':', 1)[1]}"
    return "max F1"


def render_markdown(doc: dict, png: Path | None) -> str:
    c, rec = doc["config"], doc["recommendation"]
    rows = doc["rows"]
    n_eval = next((r["eval_images"] for r in rows if r.get("eval_images")), None)
    models = c.get("models") or [c.get("model")]
    limits = [LIMITS[n][2].format(x=c[n]) for n in LIMITS if c.get(n) is not None]
    parts = ["# edgekit train-export report", "",
             f"data `{c['data']}`, model(s) {', '.join(f'`{m}`' for m in models)}, {c['epochs']} epochs at "
             f"{c['imgsz']} px ({c.get('search', 'grid')} search), target `{c['target']}`, max mAP drop "
             f"{c['max_map_drop']} points" + (f", hard limits: {'; '.join(limits)}" if limits else "") + "."
             + (f" mAP on {n_eval} val images, with a per-image bootstrap 95% interval; differences inside the "
                f"paired interval are ties." if n_eval else ""), ""]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r.get("model"), r.get("imgsz")), []).append(r)
    for (m, z), rs in groups.items():
        if len(groups) > 1:
            parts += [f"## {m} at {z} px", ""]
        parts += [render_table(rs), ""]
    parts += ["FPS e2e: images/s through the whole pipeline (decode and letterbox in worker threads overlapping the "
              "backend's own concurrent inference, then decode + NMS), batch 1; the median of interleaved rounds "
              "repeated until stable, FPS cv their coefficient of variation. e2e p50/p90: one image at a time, decode "
              "to detections. Rows of the same graph (same model, size, backend and precision; weights differ) share "
              "one measurement. x ref: FPS e2e over the same trial's FP32 ONNX on ONNX Runtime. conf: the row's "
              "deployment threshold, chosen on val by " + _threshold_rule(c) + " from the row's own detections; P, R, "
              "F1: precision, recall and F1 of its boxes there (IoU 0.5); the speed runs NMS at it.", "",
              "## Recommendation", "", rec["why"], ""]
    from .confirm import markdown_lines

    parts += _sustained_lines(doc) + _device_accuracy_lines(rows) + markdown_lines(doc)
    if rec.get("artifact"):
        parts += [f"Artifact: `{rec['artifact']}`" + (f" (bound by: {', '.join(rec['bound_by'])})"
                                                      if rec.get("bound_by") else ""), ""]
    if png:
        parts += [f"![Pareto: mAP50-95 against end-to-end FPS]({png.name})", ""]
    seg = _segments(rows)
    if seg:
        parts += ["## Segments: AP50-95 by box size and by class", ""] + seg + [""]
    if doc.get("pruned"):
        parts += ["## Pruned by successive halving", ""] + [
            f"- {p['model']}@{p['imgsz']} {p['strategy']}: at rung {p['rung']} epoch(s), mAP50-95 "
            f"{p['map50_95'] if p['map50_95'] is not None else float('nan'):.4f}" for p in doc["pruned"]] + [""]
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        parts += ["## Not produced", ""] + [f"- {_name(r)}: {r.get('error')}" for r in failed]
    return "\n".join(parts) + "\n"


def pareto_png(rows: list[dict], path: Path, rec: dict | None = None, max_latency_ms=None) -> Path | None:
    """mAP50-95 (with its interval) against e2e FPS and against e2e p50 latency: marker per model, colour per imgsz,
    size per training cost; the Pareto front; the latency budget as a line; the recommendation circled."""
    ok = _ok(rows)
    if not ok:
        return None
    try:
        from .._home import import_module

        matplotlib = import_module("matplotlib")  # its caches in a private folder, not in ~/.cache, ~/.config
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from ..io import atomic_path

    use_cost = any((r.get("cost_usd") or 0) > 0 for r in ok)
    key = "cost_usd" if use_cost else "train_wall_s"
    top = max((r.get(key) or 0) for r in ok) or 1.0
    models = sorted({str(r.get("model")) for r in ok})
    sizes = sorted({r.get("imgsz") or 0 for r in ok})
    shapes = "os^Dvp*h"
    cmap = plt.get_cmap("viridis" if len(sizes) > 2 else "tab10")
    colour = {z: cmap(i / max(len(sizes) - 1, 1) if len(sizes) > 2 else i) for i, z in enumerate(sizes)}
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5), dpi=110, sharey=True)
    for ax, xkey, xlabel in ((axes[0], "fps_e2e", "end-to-end FPS on the target (batch 1)"),
                             (axes[1], "latency_p50_ms", "end-to-end p50 latency, ms (batch 1)")):
        for r in ok:
            if r.get(xkey) is None:
                continue
            y, ci = r["map50_95"], r.get("map50_95_ci")
            if ci:
                ax.errorbar(r[xkey], y, yerr=[[y - ci[0]], [ci[1] - y]], color="gray", alpha=0.5, lw=1, zorder=1)
            ax.scatter(r[xkey], y, s=50 + 450 * (r.get(key) or 0) / top, color=colour[r.get("imgsz") or 0],
                       marker=shapes[models.index(str(r.get("model"))) % len(shapes)], alpha=0.8,
                       edgecolors="red" if r.get("misses") else "black", linewidths=1.5 if r.get("misses") else 0.5,
                       zorder=2)
            ax.annotate(f"{r['strategy']} {SHORT.get(r['backend'], r['backend'])} {r['precision']}", (r[xkey], y),
                        fontsize=6, xytext=(4, 4), textcoords="offset points")
        front = pareto_front(rows)
        if front and all(r.get(xkey) is not None for r in front):
            front = sorted(front, key=lambda r: r[xkey])
            ax.plot([r[xkey] for r in front], [r["map50_95"] for r in front], "--", color="gray", label="Pareto front")
        if rec and rec.get("artifact") and rec.get(xkey) is not None:
            ax.scatter([rec[xkey]], [rec["map50_95"]], s=420, facecolors="none", edgecolors="red", linewidths=2,
                       label="recommended", zorder=3)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    if max_latency_ms is not None:
        axes[1].axvline(max_latency_ms, color="red", ls=":", label=f"latency budget {max_latency_ms:g} ms")
    for i, m in enumerate(models):
        axes[0].scatter([], [], marker=shapes[i % len(shapes)], color="white", edgecolors="black", label=m)
    for z in sizes:
        axes[0].scatter([], [], marker="s", color=colour[z], label=f"{z} px")
    axes[0].set_ylabel("mAP50-95 (val, bootstrap 95% interval)")
    axes[0].legend(fontsize=7, loc="best")
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(f"accuracy vs deploy speed (marker: model, colour: input size, size: "
                 f"{'train cost' if use_cost else 'train time'}; red edge: misses a hard limit)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def write_report(out: Path, rows: list[dict], pruned: list | None, config: dict, max_map_drop: float, limits: dict,
                 extra: dict | None = None, confirm=None) -> dict:
    """Speed-ups, the recommendation under the limits, its confirmation, then report.json, pareto.png and report.md.

    confirm(top rows) -> their figures on the test split (edgekit.sweep.confirm.confirm_on_test); None: no test split.

    rows name their files by paths this process can open; report.json (and the dict returned, its content) names
    them relative to `out`, the folder holding it, so that a moved run folder's report still points into it.
    """
    add_speedups(rows)
    sustained = bool(config.get("sustain_s"))  # --sustain: ranked by the sustained p50
    from .confirm import confirmation, pick_fields, recommendation_order, report_row, why_sentence

    rec = recommend(rows, max_map_drop=max_map_drop, sustained=sustained, **limits)
    top = recommendation_order(rows, lambda rs: recommend(rs, max_map_drop=max_map_drop, sustained=sustained,
                                                          **limits)) if rec.get("artifact") else []
    confirmed = confirmation(top, confirm, len(_ok(rows, sustained)))
    if top:
        rec.update(pick_fields(top[0], confirmed))
        rec["why"] = f"{rec['why']} {why_sentence(confirmed, top[0])}".strip()
    if rec.get("artifact"):
        rec["artifact"] = relative_to(rec["artifact"], out)
    trained = {(r["model"], r["imgsz"], r["strategy"]): r.get("train_wall_s") or 0 for r in rows}
    doc = {"rows": [report_row(run_relative(r, out), any(r is t for t in top)) for r in rows],
           "recommendation": rec, "confirmation": confirmed, "test_rank_agrees": confirmed.get("test_rank_agrees"),
           "pruned": list(pruned or []),
           "train_seconds_total": round(sum(trained.values()) + sum(p.get("train_wall_s") or 0
                                                                  for p in pruned or []), 1),
           "config": config, **(extra or {})}
    if sustained:
        swaps = ranking_swaps(rows)
        doc["sustained"] = {"duration_s": config["sustain_s"], "ranked_by": "sustained_p50_ms",
                            "agrees_with_short_run": not swaps, "swaps": swaps}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", doc)
    png = pareto_png(rows, out / "pareto.png", rec, max_latency_ms=limits.get("max_latency_ms"))
    atomic_write_text(out / "report.md", render_markdown(doc, png))
    return doc

