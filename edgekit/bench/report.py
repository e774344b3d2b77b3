"""Render one benchmark result: a plain-text table for the terminal and a markdown table for files."""
from __future__ import annotations

from .timing import STAGES, STAT_KEYS


def _f(v, nd=2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def device_line(res: dict) -> str:
    d = res.get("device", {})
    cpu = d.get("cpu", {})
    name = d.get("name") or cpu.get("model", "?")
    extra = f"{cpu.get('cores', '?')} cores, {', '.join(cpu.get('isa', [])) or 'no AVX flags'}"
    if d.get("gpu"):
        extra = f"driver {d['gpu'].get('driver')}, CUDA {d.get('cuda_driver')}, TensorRT {d.get('tensorrt') or '-'}; " \
                f"host {cpu.get('model', '?')}"
    return f"{name} ({extra})"


def stage_rows(res: dict) -> list[list[str]]:
    lat = res["latency_ms"]
    return [[s] + [_f(lat[s].get(k)) for k in STAT_KEYS] for s in STAGES if s in lat]


def summary_lines(res: dict) -> list[str]:
    m = res.get("mode", {})
    tp = m.get("throughput", {})
    lines = [
        f"fps_e2e {_f(res.get('fps_e2e'), 1)} images/s (pipelined, batch {next(iter(res['throughput']), '?')}, "
        f"{tp.get('concurrency', '?')}, streams {tp.get('streams', '?')}, {tp.get('prefetch_workers', '?')} prefetch "
        f"workers);  sequential e2e {_f(res.get('fps_e2e_sequential'), 1)};  fps_infer_only {_f(res.get('fps_infer_only'), 1)}",
        "throughput (images/s, end to end | inference only): " + ",  ".join(
            f"batch {b}: {_f(v, 1)} | {_f(res.get('throughput_infer_only', {}).get(b), 1)}"
            for b, v in res["throughput"].items()),
        f"cold start {_f(res.get('cold_start_ms'), 0)} ms (load {_f(res.get('load_ms'), 0)}, first image "
        f"{_f(res.get('first_inference_ms'), 0)});  peak RSS {_f(res.get('peak_rss_mb'), 0)} MB;  model "
        f"{_f(res.get('model_mb'), 1)} MB" + (f";  device memory {res['device_memory_mb']} MB"
                                              if res.get("device_memory_mb") else ""),
    ]
    if res.get("energy_j_per_image"):
        lines.append("energy per image (J): " + ", ".join(f"batch {b}: {v}" for b, v in res["energy_j_per_image"].items()))
    if res.get("map50") is not None:
        lines.append(f"mAP50 {res['map50']:.4f}  mAP50-95 {res['map50_95']:.4f}  "
                     f"({res.get('accuracy', {}).get('images', '?')} images)")
    return lines


def header(res: dict) -> str:
    lat = res.get("mode", {}).get("latency", {})
    return (f"{res['artifact']}  [{res['backend']} on {res['device'].get('requested')}: {device_line(res)}]\n"
            f"latency mode, ms per request (batch {lat.get('batch', 1)}, one at a time; "
            f"{res['warmup']} warm-up, {res['iters']} timed iterations)")


def format_table(res: dict) -> str:
    """The terminal table: stage latencies, then FPS, throughput, cold start, memory and size."""
    rows = [["stage", *STAT_KEYS]] + stage_rows(res)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = [header(res)]
    for i, r in enumerate(rows):
        text.append("  " + "  ".join(c.ljust(widths[0]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(r)))
        if i == 0:
            text.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(text + summary_lines(res))


def to_markdown(res: dict) -> str:
    """A markdown report of one result: the stage table and the summary as a list."""
    out = [f"### `{res['artifact']}` ({res['backend']}, {res['device'].get('requested')})", "",
           f"Device: {device_line(res)}. Warm-up {res['warmup']}, {res['iters']} timed iterations.", "",
           "| stage (ms) | " + " | ".join(STAT_KEYS) + " |", "|---" * (len(STAT_KEYS) + 1) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in stage_rows(res)]
    out += [""] + [f"- {line}" for line in summary_lines(res)]
    return "\n".join(out) + "\n"
