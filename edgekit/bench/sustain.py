"""Sustained mode (`bench --sustain 10m`): end-to-end latency over minutes, in windows, each with the CPU frequency
and the thermal-zone temperatures at its end (and a tegrastats line on a Jetson), and a throttling verdict: the p50
of the last window more than `threshold` (a fraction) over the first's. The ranking at minute 1 is not always the
ranking at minute 30 (thermal throttling on passively cooled boards)."""
from __future__ import annotations

import re
import shutil
import statistics
import subprocess
from itertools import cycle, islice
from pathlib import Path
from time import perf_counter as clock

THROTTLE_THRESHOLD = 0.10
WINDOWS = 10  # default window: a tenth of the duration (at least 1 s)


def parse_duration(text: str) -> float:
    """'10m', '30s', '1h', '90' (seconds) -> seconds (positive)."""
    import argparse

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration like 30s, 10m or 1h, got '{text}'")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def thermal_zones(root: Path = Path("/sys/class/thermal")) -> dict[str, float]:
    """Each thermal zone's temperature in °C, by its type (zone name where types repeat); {} where none is exposed."""
    out: dict[str, float] = {}
    for zone in sorted(root.glob("thermal_zone*")):
        temp = _read(zone / "temp")
        if temp is None or not temp.lstrip("-").isdigit():
            continue
        name = _read(zone / "type") or zone.name
        out[name if name not in out else f"{name}:{zone.name}"] = round(int(temp) / 1000, 1)
    return out


def cpu_mhz() -> dict | None:
    """Current CPU frequency across cores (mean, min, max MHz): cpufreq where the kernel has it, else /proc/cpuinfo."""
    vals = [int(v) / 1000 for p in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_cur_freq")
            if (v := _read(p)) and v.isdigit()]
    if not vals:
        try:
            vals = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.lower().startswith("cpu mhz")]
        except (OSError, ValueError, IndexError):
            vals = []
    if not vals:
        return None
    return {"mean": round(statistics.mean(vals)), "min": round(min(vals)), "max": round(max(vals))}


def tegrastats_line(timeout_s: float = 3.0) -> str | None:
    """One line of Jetson's tegrastats (clocks, temperatures, power); None where it is not installed."""
    exe = shutil.which("tegrastats")
    if not exe:
        return None
    proc = subprocess.Popen([exe, "--interval", "500"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline().strip() or None  # it prints every 500 ms; killed below in any case
    finally:
        proc.kill()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    return line


def _window(index: int, start: float, end: float, lat_ms: list[float]) -> dict:
    q = statistics.quantiles(lat_ms, n=10, method="inclusive") if len(lat_ms) > 1 else lat_ms * 9
    w = {"window": index, "start_s": round(start, 1), "end_s": round(end, 1), "n": len(lat_ms),
         "p50_ms": round(statistics.median(lat_ms), 3), "p90_ms": round(q[8], 3),
         "fps_e2e": round(len(lat_ms) / (end - start), 2) if end > start else None,
         "cpu_mhz": cpu_mhz(), "temps_c": thermal_zones()}
    tegra = tegrastats_line()
    if tegra:
        w["tegrastats"] = tegra
    return w


def run_sustained(engine, images: list[Path], duration_s: float, window_s: float | None = None,
                  threshold: float = THROTTLE_THRESHOLD, batch: int = 1, log=None) -> dict:
    """One request of `batch` images at a time, end to end (decode to postprocess), for `duration_s`, in windows."""
    window_s = window_s or max(duration_s / WINDOWS, 1.0)
    src = cycle(images)
    windows, lat, t_start = [], [], clock()
    w_start = t_start
    while True:
        now = clock()
        if now - w_start >= window_s or now - t_start >= duration_s:
            if lat:
                windows.append(_window(len(windows), w_start - t_start, now - t_start, lat))
                if log:
                    w = windows[-1]
                    log(f"sustain window {w['window']}: p50 {w['p50_ms']:.2f} ms, p90 {w['p90_ms']:.2f} ms")
            lat, w_start = [], clock()
            if now - t_start >= duration_s:
                break
        paths = list(islice(src, batch))
        t0 = clock()
        blob, infos = engine.preprocess([engine.decode(p) for p in paths])
        engine.postprocess(engine.infer(blob), infos)
        lat.append((clock() - t0) * 1e3)
    first, last = (windows[0]["p50_ms"], windows[-1]["p50_ms"]) if windows else (0, 0)
    change = last / first - 1 if first > 0 else None
    return {"duration_s": round(duration_s, 1), "window_s": round(window_s, 1), "batch": batch,
            "windows": windows, "p50_change": round(change, 4) if change is not None else None,
            "threshold": threshold, "throttled": change is not None and len(windows) > 1 and change > threshold}


def sustain_table(s: dict) -> str:
    """The windows as a text table, with the throttling verdict."""
    rows = [f"{'window':>6} {'from s':>7} {'to s':>7} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'FPS':>7} {'CPU MHz':>8}  "
            "temperatures °C"]
    for w in s["windows"]:
        mhz = (w.get("cpu_mhz") or {}).get("mean")
        temps = ", ".join(f"{k} {v:g}" for k, v in (w.get("temps_c") or {}).items()) or "-"
        rows.append(f"{w['window']:>6} {w['start_s']:>7.1f} {w['end_s']:>7.1f} {w['n']:>6} {w['p50_ms']:>8.2f} "
                    f"{w['p90_ms']:>8.2f} {w['fps_e2e'] or 0:>7.1f} {mhz if mhz is not None else '-':>8}  {temps}")
    change = s["p50_change"]
    verdict = "THROTTLING" if s["throttled"] else "no throttling"
    rows.append(f"{verdict}: p50 of the last window {change:+.1%} vs the first (threshold {s['threshold']:.0%})"
                if change is not None else "no verdict: no window")
    return "\n".join(rows)
