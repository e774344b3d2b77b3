"""Issue S, train-export side: `--sustain D` runs each distinct graph sustained on the target and ranks by the sustained
p50 (the report says where that reverses the short run's ranking); for a device target, a row's mAP measured on the
device is set against the host's own figure (its accuracy gate) where the host measured it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COCO8 = ROOT / "tests" / "assets" / "coco8" / "data.yaml"


def _row(strategy: str, p50: float, sustained: float, fps: float, map50_95: float = 0.5, **extra) -> dict:
    return {"model": "m", "imgsz": 160, "strategy": strategy, "backend": "onnxruntime", "precision": "fp32",
            "status": "ok", "map50_95": map50_95, "map50": map50_95 + 0.2, "fps_e2e": fps, "fps_cv": 0.01,
            "latency_p50_ms": p50, "sustained_p50_ms": sustained, "throttled": sustained > p50 * 1.1,
            "artifact": f"/x/{strategy}.onnx", "train_wall_s": 10, "cost_usd": 0, **extra}


def test_swaps_name_the_rows_whose_order_reverses():
    """S: the sustained ranking (by p50) disagrees with the short run's: the pairs that swap are named; equal
    figures (a shared graph), differences inside the rows' noise and pairs in the same order are not swaps."""
    from edgekit.sweep.report import ranking_swaps

    rows = [_row("a", 10.0, 20.0, 100), _row("b", 12.0, 13.0, 80), _row("c", 15.0, 16.0, 60),
            _row("d", 12.0, 13.0, 80)]
    swaps = ranking_swaps(rows)
    assert [(w["short_faster"], w["sustained_faster"]) for w in swaps] == [
        ("m@160 a, onnxruntime fp32", "m@160 b, onnxruntime fp32"),
        ("m@160 a, onnxruntime fp32", "m@160 c, onnxruntime fp32"),
        ("m@160 a, onnxruntime fp32", "m@160 d, onnxruntime fp32")]
    assert swaps[0]["latency_p50_ms"] == [10.0, 12.0] and swaps[0]["sustained_p50_ms"] == [20.0, 13.0]
    assert ranking_swaps([_row("a", 10.0, 11.0, 100), _row("b", 12.0, 13.0, 80)]) == []
    # inside the rows' noise (FPS cv 1 %): 12.9 ms is not faster than 13.0 ms, nor 10.0 than 10.05
    assert ranking_swaps([_row("a", 10.0, 13.0, 100), _row("b", 12.0, 12.9, 80)]) == []
    assert ranking_swaps([_row("a", 10.0, 20.0, 100), _row("b", 10.05, 13.0, 80)]) == []


def test_sustained_ranking_and_latency_limit(tmp_path):
    """S: with --sustain the recommendation ranks by the sustained p50 and --max-latency-ms reads it; report.json and
    report.md say that the rankings disagree and which rows swap. Without it, the short run decides."""
    from edgekit.sweep.report import write_report

    def rows():  # equal mAP: speed decides; a is fastest in the short run but throttles
        return [_row("a", 10.0, 20.0, 100), _row("b", 12.0, 13.0, 80)]

    limits = {"max_latency_ms": None, "min_fps": None, "budget_usd": None, "budget_hours": None}
    config = {"data": "d", "model": "m", "epochs": 1, "imgsz": [160], "target": "cpu", "max_map_drop": 0.5}
    short = write_report(tmp_path / "short", rows(), [], config, 0.5, limits)
    assert short["recommendation"]["strategy"] == "a" and "sustained" not in short
    doc = write_report(tmp_path / "sus", rows(), [], {**config, "sustain_s": 2.0}, 0.5, limits)
    rec = doc["recommendation"]
    assert rec["strategy"] == "b" and rec["ranked_by"] == "sustained_p50_ms" and rec["sustained_p50_ms"] == 13.0
    assert doc["sustained"]["agrees_with_short_run"] is False
    assert [(w["short_faster"], w["sustained_faster"]) for w in doc["sustained"]["swaps"]] == [
        ("m@160 a, onnxruntime fp32", "m@160 b, onnxruntime fp32")]
    assert json.loads((tmp_path / "sus" / "report.json").read_text())["sustained"] == doc["sustained"]
    md = (tmp_path / "sus" / "report.md").read_text()
    assert "The sustained ranking by p50 disagrees with the short run's: 1 pair(s) swap" in md
    assert "sustained p50 ms" in md and "throttled" in md
    # the latency limit reads the sustained p50: 15 ms passes both rows' short p50 but excludes a's sustained one
    doc = write_report(tmp_path / "lim", rows(), [], {**config, "sustain_s": 2.0}, 0.5,
                       {**limits, "max_latency_ms": 15.0})
    assert [r["misses"] for r in doc["rows"]] == [["max_latency_ms"], []]
    # a row without a sustained figure (its sustained run was lost) is never recommended under --sustain
    lost = rows()
    lost[1].pop("sustained_p50_ms")
    assert write_report(tmp_path / "lost", lost, [], {**config, "sustain_s": 2.0}, 0.5,
                        limits)["recommendation"]["strategy"] == "a"


def test_device_minus_host_map(tmp_path):
    """S: on a device target, a row the host also measured (its INT8/bf16 gate) gets map50_95_host and
    map50_95_device_minus_host; report.md names the rows whose difference exceeds 0.0005, and only those."""
    from edgekit.sweep.report import write_report
    from edgekit.sweep.steps import host_accuracy

    gate = {"map50": 0.7, "map50_95": 0.5, "source": "accuracy gate of edgekit quantize"}
    assert host_accuracy({"map50_95": 0.4972}, gate) == {
        "map50_95_host": 0.5, "map50_95_host_source": "accuracy gate of edgekit quantize",
        "map50_95_device_minus_host": -0.0028}
    assert host_accuracy({"map50_95": 0.5}, None) == {}  # FP32: the host measured nothing
    rows = [_row("a", 10, 10, 100, 0.4972, **host_accuracy({"map50_95": 0.4972}, gate)),
            _row("b", 10, 10, 100, 0.5003, **host_accuracy({"map50_95": 0.5003}, gate)), _row("c", 10, 10, 100)]
    limits = {"max_latency_ms": None, "min_fps": None, "budget_usd": None, "budget_hours": None}
    config = {"data": "d", "model": "m", "epochs": 1, "imgsz": [160], "target": "ssh://u@h/cpu", "max_map_drop": 0.5}
    doc = write_report(tmp_path, rows, [], config, 0.5, limits)
    assert [r.get("map50_95_device_minus_host") for r in doc["rows"]] == [-0.0028, 0.0003, None]
    md = (tmp_path / "report.md").read_text()
    assert ("mAP50-95 on the device differs from the host's (its accuracy gate) by more than 0.0005 for 1 row(s): "
            "m@160 a, onnxruntime fp32: device 0.4972, host 0.5000 (-0.0028).") in md
    rows[0].update(host_accuracy({"map50_95": 0.5002}, gate), map50_95=0.5002)
    write_report(tmp_path, rows, [], config, 0.5, limits)
    assert "on the device differs" not in (tmp_path / "report.md").read_text()


def test_train_export_sustain_bad_duration_is_one_line(tmp_path):
    """S: train-export --sustain takes bench's durations; a bad one is refused by the parser, exit 2."""
    r = subprocess.run([sys.executable, "-m", "edgekit", "train-export", "--sustain", "5d", "-o", tmp_path / "o"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2
    assert "--sustain: expected a duration like 30s, 10m or 1h, got '5d'" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_train_export_sustain_local_run(tmp_path):
    """S: train-export --sustain 2s on a tiny local run: each row has its sustained p50 (last window), the throttling
    flag and the p50 drift; the recommendation is ranked by the sustained p50; report.json says whether the rankings
    agree; a --resume reuses the sustained record; the user's dataset is unchanged."""
    pytest.importorskip("ultralytics")
    pytest.importorskip("onnxruntime")

    from treesum import tree_sha256

    before = tree_sha256(COCO8.parent)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "edgekit", "train-export", "--data", COCO8, "--epochs", "1", "--imgsz", "160",
            "--batch", "4", "--strategies", "head", "--backends", "onnxruntime", "--precisions", "fp32",
            "--bench-iters", "3", "--sustain", "2s", "-o", out]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1"}
    r = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert tree_sha256(COCO8.parent) == before
    doc = json.loads((out / "report.json").read_text())
    (row,) = doc["rows"]
    assert row["status"] == "ok" and row["sustained_p50_ms"] > 0 and row["sustained_windows"] >= 2
    assert isinstance(row["throttled"], bool)
    assert row["throttled"] == (row["sustained_p50_change"] > 0.10)
    assert doc["config"]["sustain_s"] == 2.0
    assert doc["recommendation"]["ranked_by"] == "sustained_p50_ms"
    assert doc["recommendation"]["sustained_p50_ms"] == row["sustained_p50_ms"]
    assert doc["sustained"] == {"duration_s": 2.0, "ranked_by": "sustained_p50_ms", "agrees_with_short_run": True,
                                "swaps": []}
    for key in ("map50_95", "fps_e2e", "latency_p50_ms", "fps_cv", "bench_node"):  # the contract's fields stay
        assert key in row
    assert "sustained p50" in (out / "report.md").read_text()
    record = next(out.rglob("onnxruntime-fp32.sustain.json"))
    stamp = record.stat().st_mtime_ns
    r = subprocess.run(argv + ["--resume", "-v"], capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "onnxruntime-fp32 sustained: done, skipped" in r.stderr
    assert record.stat().st_mtime_ns == stamp
    assert json.loads((out / "report.json").read_text())["rows"][0]["sustained_p50_ms"] == row["sustained_p50_ms"]
