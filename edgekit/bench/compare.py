"""Side by side: several `edgekit bench --json` results as a table (text or markdown) and a PNG chart."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import EdgekitError
from ..io import atomic_path, atomic_write_text
from .timing import STAGES


def load_results(paths) -> list[dict]:
    out = []
    for p in map(Path, paths):
        try:
            doc = json.loads(p.read_text())
        except FileNotFoundError:
            raise EdgekitError(f"{p}: benchmark result not found") from None
        except json.JSONDecodeError as e:
            raise EdgekitError(f"{p}: not a JSON file ({e.msg} at line {e.lineno})") from None
        if not isinstance(doc, dict) or "latency_ms" not in doc:
            raise EdgekitError(f"{p}: not an 'edgekit bench --json' result (no latency_ms)")
        doc.setdefault("_file", str(p))
        out.append(doc)
    return out


def check_environments(results: list[dict], force: bool = False) -> list[str]:
    """Refuse (EdgekitError, one line) results from different environments, or without one, unless `force`;
    with `force`, the same findings come back as warnings."""
    from .environment import differences

    problems = []
    base = results[0]
    for r in results:
        if not isinstance(r.get("environment"), dict):
            problems.append(f"{r['_file']}: no environment record (made by an older edgekit), cannot tell "
                            f"where it was measured")
    if not problems:
        for r in results[1:]:
            diff = differences(base["environment"], r["environment"])
            if diff:
                problems.append(f"{base['_file']} vs {r['_file']}: different environments ({'; '.join(diff)})")
    if problems and not force:
        raise EdgekitError(f"{problems[0]}; pass --force to compare anyway")
    return [f"warning: {p}" for p in problems]


def labels(results: list[dict]) -> list[str]:
    """Short, unique column names: artifact name and backend, else the JSON file name."""
    names = [f"{Path(r['artifact']).name} {r['backend']}" for r in results]
    if len(set(names)) < len(names):
        names = [Path(r.get("_file", r["artifact"])).stem for r in results]
    if len(set(names)) < len(names):
        names = [f"{i + 1}:{n}" for i, n in enumerate(names)]
    return names


def _v(x, nd=1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def compare_rows(results: list[dict]) -> list[list[str]]:
    rows = [[f"{s} p50 (ms)"] + [_v(r["latency_ms"].get(s, {}).get("p50"), 2) for r in results] for s in STAGES]
    rows.append(["e2e p99 (ms)"] + [_v(r["latency_ms"].get("e2e", {}).get("p99"), 2) for r in results])
    rows.append(["fps_e2e (img/s)"] + [_v(r.get("fps_e2e")) for r in results])
    rows.append(["fps_infer_only (img/s)"] + [_v(r.get("fps_infer_only")) for r in results])
    for b in sorted({b for r in results for b in r.get("throughput", {})}, key=int):
        rows.append([f"throughput b{b} (img/s)"] + [_v(r.get("throughput", {}).get(b)) for r in results])
    rows.append(["cold start (ms)"] + [_v(r.get("cold_start_ms"), 0) for r in results])
    rows.append(["peak RSS (MB)"] + [_v(r.get("peak_rss_mb"), 0) for r in results])
    rows.append(["model (MB)"] + [_v(r.get("model_mb"), 2) for r in results])
    rows.append(["stable"] + [{True: "yes", False: "NO"}.get(r.get("stable"), "-") for r in results])
    rows.append(["p50 CV"] + [_v(100 * r["cv"], 1) + " %" if r.get("cv") is not None else "-" for r in results])
    if any(r.get("loadgen") for r in results):
        rows.append(["LoadGen"] + [_loadgen_cell(r) for r in results])
    if any(r.get("map50_95") is not None for r in results):
        rows.append(["mAP50-95"] + [_v(r.get("map50_95"), 4) for r in results])
    rows.append(["device"] + [str(r.get("device", {}).get("name") or r.get("device", {}).get("requested")) for r in results])
    return rows


def _loadgen_cell(r: dict) -> str:
    lg = r.get("loadgen")
    if not lg:
        return "-"
    return f"{lg['scenario']} {lg['validity']} {_v(lg['metric']['value'], 2)}"


def compare_table(results: list[dict]) -> str:
    rows = [["", *labels(results)]] + compare_rows(results)
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w[0]) if j == 0 else c.rjust(w[j]) for j, c in enumerate(r)) for r in rows)


def compare_markdown(results: list[dict]) -> str:
    head = ["", *labels(results)]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in compare_rows(results)]
    return "\n".join(lines) + "\n"


def plot_compare(results: list[dict], png) -> Path:
    """Grouped p50 bars per stage (left) and fps_e2e / fps_infer_only (right); Agg backend, bundled fonts."""
    from .._imports import require

    mpl = require("matplotlib", "the comparison chart")
    mpl.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = labels(results)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(9, 2.2 * len(results) + 6), 4.2),
                                   gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(STAGES))
    w = 0.8 / len(results)
    for i, (r, n) in enumerate(zip(results, names)):
        vals = [r["latency_ms"].get(s, {}).get("p50") or 0.0 for s in STAGES]
        ax1.bar(x + (i - (len(results) - 1) / 2) * w, vals, w, label=n)
    ax1.set_xticks(x, STAGES)
    ax1.set_ylabel("p50 latency (ms, batch %s)" % results[0].get("mode", {}).get("latency", {}).get("batch", 1))
    ax1.set_title("latency per stage")
    ax1.legend(fontsize=8)
    keys = [("fps_e2e", "end to end (pipelined)"), ("fps_infer_only", "inference only (latency mode)")]
    x2 = np.arange(len(keys))
    for i, (r, n) in enumerate(zip(results, names)):
        ax2.bar(x2 + (i - (len(results) - 1) / 2) * w, [r.get(k) or 0.0 for k, _ in keys], w, label=n)
    ax2.set_xticks(x2, [lbl for _, lbl in keys])
    ax2.set_ylabel("images/s")
    ax2.set_title("FPS")
    fig.tight_layout()
    png = Path(png)
    with atomic_path(png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return png


def write_markdown(path, text: str) -> Path:
    return atomic_write_text(path, text)
