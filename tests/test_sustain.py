"""Issue S, sustained mode: `bench --sustain D` reports p50/p90 per window with CPU frequency and thermal-zone
temperatures, and flags throttling (the last window's p50 more than --throttle-threshold over the first's)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _edgekit(*args):
    return subprocess.run([sys.executable, "-m", "edgekit", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def test_durations_parse():
    """S: --sustain takes 10m, 30s, 1h or plain seconds."""
    from edgekit.bench.sustain import parse_duration

    assert [parse_duration(x) for x in ("10m", "30s", "1h", "90", "2.5s")] == [600, 30, 3600, 90, 2.5]


@pytest.mark.parametrize("bad", ["10x", "5d", "0", "m"])
def test_bad_duration_is_one_line(bad, tmp_path):
    """S: a malformed duration is refused by the parser with the option named, exit 2."""
    r = _edgekit("bench", tmp_path / "m.onnx", "--sustain", bad)
    assert r.returncode == 2
    assert f"--sustain: expected a duration like 30s, 10m or 1h, got '{bad}'" in r.stderr


def test_throttling_verdict():
    """S: the verdict compares the last window's p50 with the first's against the threshold."""
    from edgekit.bench.sustain import sustain_table

    windows = [{"window": i, "start_s": i, "end_s": i + 1, "n": 10, "p50_ms": p, "p90_ms": p, "fps_e2e": 1.0,
                "cpu_mhz": None, "temps_c": {}} for i, p in enumerate((10.0, 12.0))]
    s = {"windows": windows, "p50_change": 0.2, "threshold": 0.1, "throttled": True}
    assert "THROTTLING: p50 of the last window +20.0% vs the first (threshold 10%)" in sustain_table(s)


def test_thermal_zones_read(tmp_path):
    """S: thermal zones in millidegrees are read by type; unreadable ones are left out."""
    from edgekit.bench.sustain import thermal_zones

    for i, (kind, temp) in enumerate((("cpu-thermal", "48312"), ("gpu-thermal", "bad"), ("cpu-thermal", "50000"))):
        z = tmp_path / f"thermal_zone{i}"
        z.mkdir()
        (z / "type").write_text(kind + "\n")
        (z / "temp").write_text(temp + "\n")
    assert thermal_zones(tmp_path) == {"cpu-thermal": 48.3, "cpu-thermal:thermal_zone2": 50.0}


@pytest.mark.slow
def test_bench_sustain_windows(onnx160, tmp_path):
    """S: a few-second sustained run gives its windows (p50 <= p90, frequency where readable) and the verdict."""
    out = tmp_path / "r.json"
    r = _edgekit("bench", onnx160, "--iters", "5", "--sustain", "3s", "--sustain-window", "1", "--json", out)
    assert r.returncode == 0, r.stderr
    from edgekit.bench.schema import check

    res = json.loads(out.read_text())
    assert check(res) == []
    s = res["sustained"]
    assert s["duration_s"] == 3 and s["window_s"] == 1 and s["threshold"] == 0.1
    assert len(s["windows"]) >= 2
    for w in s["windows"]:
        assert w["n"] > 0 and 0 < w["p50_ms"] <= w["p90_ms"] and isinstance(w["temps_c"], dict)
    change = s["windows"][-1]["p50_ms"] / s["windows"][0]["p50_ms"] - 1
    assert s["throttled"] == (change > 0.1)
    assert "p50 of the last window" in r.stdout
