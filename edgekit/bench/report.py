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


def stability_line(res: dict) -> str:
    """'stable: ...' or 'UNSTABLE: ...' over every mode of the result."""
    from .stability import label

    st = res.get("stability")
    if not st:
        return "stability: not measured"
    if "latency" not in st:  # a LoadGen scenario: one verdict
        return f"stability: {label(st)}"
    parts = [f"latency mode {label(st['latency'])}"]
    parts += [f"throughput b{b} {label(v)}" for b, v in st.get("throughput", {}).items()]
    return ("stability: " if res.get("stable") else "stability: UNSTABLE result; ") + ";  ".join(parts)


def environment_line(res: dict) -> str:
    """CPU, its flags, cores, governor, versions, executed precision, runtime settings, load before/after, SHA."""
    env = res.get("environment")
    if not env:
        return "environment: not recorded"
    cpu = env.get("cpu", {})
    vers = ", ".join(f"{k} {v}" for k, v in (env.get("versions") or {}).items())
    rt = env.get("runtime") or {}
    rts = ", ".join(f"{k} {v}" for k, v in rt.items() if k != "providers")
    gpus = "; ".join(f"{g.get('name')} (driver {g.get('driver_version')}, SM {g.get('clocks.sm')})"
                     for g in env.get("gpus") or [])
    ek = env.get("edgekit") or {}
    return (f"environment: {cpu.get('model')} [{' '.join(cpu.get('flags') or []) or 'no AVX2/AVX-512/AMX flags'}], "
            f"{cpu.get('usable_cores')} usable cores, governor {cpu.get('governor') or 'n/a'}; "
            f"{env.get('backend')} executes {env.get('precision_executed')} ({rts or 'defaults'}); "
            + (f"GPU {gpus}; " if gpus else "")
            + f"load avg {env.get('load_avg_before')} -> {env.get('load_avg_after')}; {vers}; "
            f"edgekit {ek.get('version')} {ek.get('git_sha') or ''}".rstrip())


def loadgen_lines(res: dict) -> list[str]:
    """LoadGen's verdict and figures, then edgekit's view of the same run."""
    lg = res["loadgen"]
    lat = lg.get("latency_ms", {})
    lines = [f"MLPerf LoadGen {lg.get('version', '?').split()[0]} {lg['scenario']}: result {lg['validity']}"
             + (f" ({lg['invalid_reason']})" if lg.get("invalid_reason") else "")
             + f";  {lg['metric']['name']}: {_f(lg['metric']['value'])}",
             f"LoadGen: {lg.get('query_count')} queries, {_f(lg.get('samples_per_second'))} samples/s; latency ms "
             f"p50 {_f(lat.get('p50'))}, p90 {_f(lat.get('p90'))}, p99 {_f(lat.get('p99'))}; min duration "
             f"{res.get('min_duration_s'):g} s" + ("" if res.get("rule_conforming") else " (shorter than the rules' "
                                                                                          "600 s: not rule-conforming)"),
             f"early stopping: {lg.get('early_stopping') or '-'}"]
    return lines


def summary_lines(res: dict) -> list[str]:
    if res.get("loadgen"):
        return loadgen_lines(res) + [stability_line(res), environment_line(res)] + layer_lines(res)
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
    return lines + [stability_line(res), environment_line(res)] + layer_lines(res)


def layer_lines(res: dict) -> list[str]:
    if not res.get("perf_counters"):
        return []
    from .perfcounters import format_layers

    return [format_layers(res["perf_counters"])]


def header(res: dict) -> str:
    lat = res.get("mode", {}).get("latency", {})
    head = f"{res['artifact']}  [{res['backend']} on {res['device'].get('requested')}: {device_line(res)}]\n"
    if res.get("loadgen"):
        return head + (f"LoadGen {res['loadgen']['scenario']} scenario, edgekit's ms per sample "
                       f"({res.get('workers')} worker slot(s))")
    n = res["latency_ms"].get("e2e", {}).get("n", res["iters"])
    return head + (f"latency mode, ms per request (batch {lat.get('batch', 1)}, one at a time; "
                   f"{res['warmup']} warm-up, {n} timed iterations)")


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
    how = (f"LoadGen {res['loadgen']['scenario']} scenario." if res.get("loadgen") else
           f"Warm-up {res['warmup']}, {res['latency_ms'].get('e2e', {}).get('n', res['iters'])} timed iterations.")
    flag = "" if res.get("stable", True) else " **UNSTABLE result** (see stability below)."
    out = [f"### `{res['artifact']}` ({res['backend']}, {res['device'].get('requested')})", "",
           f"Device: {device_line(res)}. {how}{flag}", "",
           "| stage (ms) | " + " | ".join(STAT_KEYS) + " |", "|---" * (len(STAT_KEYS) + 1) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in stage_rows(res)]
    out += [""] + [f"- {line}" for line in summary_lines(res)]
    return "\n".join(out) + "\n"
