"""train-export as a sweep: ties within the paired interval, hard limits and bound_by, halving bookkeeping, the
INT8 gate on a collapsed class, and models x imgsz rows on a tiny real run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.eval.bootstrap import Matches
from edgekit.sweep.report import mark_limits, recommend
from edgekit.sweep import Trial, rungs, survivors

from test_eval import synth


def _row(model, imgsz, strategy, m, fps, lat, cost=0.0, wall=10.0, precision="fp32", **more):
    return {"model": model, "imgsz": imgsz, "strategy": strategy, "backend": "openvino", "precision": precision,
            "map50_95": m, "map50": m + 0.2, "fps_e2e": fps, "latency_p50_ms": lat, "cost_usd": cost,
            "train_wall_s": wall, "gpu_hours": 0.0, "status": "ok", "artifact": f"{model}/{imgsz}/{strategy}", **more}


def test_rows_inside_the_paired_interval_are_tied_and_the_faster_wins(tmp_path):
    images, anns, dets = synth(40, seed=5)
    other = dets.copy()
    other[:, 5] = np.clip(other[:, 5] + np.random.default_rng(1).normal(0, 0.05, len(dets)), 0, 1)  # rescored
    ma, mb = Matches.build(images, anns, dets, 3), Matches.build(images, anns, other, 3)
    a_map, b_map = ma.map50_95(), mb.map50_95()
    slow_best, fast = (ma, mb) if a_map >= b_map else (mb, ma)
    rows = [_row("v8n", 640, "full", max(a_map, b_map), 20, 50, matches=str(slow_best.save(tmp_path / "a.npz"))),
            _row("v8n", 320, "full", min(a_map, b_map), 60, 16, matches=str(fast.save(tmp_path / "b.npz")))]
    assert rows[0]["map50_95"] > rows[1]["map50_95"]
    rec = recommend(rows, max_map_drop=0.0)  # no drop allowed: only a tie lets the faster, less accurate row win
    assert rec["imgsz"] == 320 and rec["tied"] is True
    assert "tied with the most accurate" in rec["why"] and "inside the paired 95% interval" in rec["why"]
    assert "too small to separate" in rec["why"] and rec["val_images_needed"] > 40


def test_equal_speed_goes_to_the_cheaper_training():
    rows = [_row("v8n", 320, "full", 0.400, 50, 20, cost=5.0), _row("v8n", 320, "head", 0.399, 50, 20, cost=1.0)]
    tie = {"diff": 0.1, "ci": [-1.0, 1.2], "images": 100}
    rec = recommend(rows, max_map_drop=0.5, paired=lambda a, b: tie)
    assert rec["strategy"] == "head" and "cheapest training decided" in rec["why"]
    rec = recommend(rows, max_map_drop=0.5, paired=lambda a, b: {**tie, "ci": [0.05, 0.2]})
    assert rec["strategy"] == "full"  # significantly more accurate at the same speed: cost does not decide


ROWS = [_row("v8n", 640, "full", 0.50, 20, 48.0), _row("v8n", 320, "full", 0.44, 60, 15.0),
        _row("v8n", 320, "full", 0.43, 90, 10.0, precision="int8"), _row("v11n", 320, "head", 0.46, 55, 17.0, cost=3)]


@pytest.mark.parametrize("limits, pick, bound_by", [
    ({}, ("v8n", 640, "fp32"), ["max_map_drop"]),  # the faster rows are 6+ points worse: accuracy decides
    ({"max_latency_ms": 30}, ("v11n", 320, "fp32"), ["max_latency_ms"]),  # the 640 row is too slow
    ({"max_latency_ms": 30, "budget_usd": 2}, ("v8n", 320, "fp32"), ["max_latency_ms", "budget_usd"]),
    ({"min_fps": 80}, ("v8n", 320, "int8"), ["min_fps"]),
])
def test_hard_limits_mark_rows_and_say_what_bound_the_choice(limits, pick, bound_by):
    rows = [dict(r) for r in ROWS]
    rec = recommend(rows, max_map_drop=0.5, paired=lambda a, b: None, **limits)
    assert (rec["model"], rec["imgsz"], rec["precision"]) == pick and rec["bound_by"] == bound_by
    chosen = next(r for r in rows if r["artifact"] == rec["artifact"] and r["precision"] == rec["precision"])
    assert chosen["misses"] == []
    if "max_latency_ms" in limits:
        assert rows[0]["misses"] == ["max_latency_ms"] and "Bound by e2e p50 latency 30 ms" in rec["why"]


def test_nothing_meets_the_limits_nothing_is_recommended():
    rows = [dict(r) for r in ROWS]
    rec = recommend(rows, max_latency_ms=5, paired=lambda a, b: None)
    assert rec["artifact"] is None and "no artifact meets the e2e p50 latency 5 ms" in rec["why"]
    mark_limits(rows, max_latency_ms=12)
    assert [r["misses"] for r in rows] == [["max_latency_ms"]] * 2 + [[]] + [["max_latency_ms"]]


def test_halving_rungs_and_survivors_per_group():
    assert rungs(9) == [1, 3, 9] and rungs(3) == [1, 3] and rungs(1) == [1]
    t = [Trial(m, z, s) for m in ("a.pt", "b.pt") for z in (320, 640) for s in ("head", "full", "sched")]
    scores = {x: 0.1 * i for i, x in enumerate(t)}  # within each group the last strategy is best
    scores[t[1]] = None  # a trial without a score ranks last
    kept, pruned = survivors(scores, {x: x.group for x in t})
    assert kept == [x for x in t if x.strategy == "sched"]  # ceil(3/3) = 1 per model x imgsz group: 4 speed classes
    assert len(pruned) == 8 and {x.group for x in kept} == {x.group for x in t}
    kept, _ = survivors({x: 1.0 for x in t[:4]}, {x: "g" for x in t[:4]})
    assert kept == t[:2]  # ceil(4/3) = 2, ties keep the earlier trials


@pytest.mark.slow
def test_int8_gate_fails_naming_a_class_that_collapses_while_the_mean_holds(onnx160_copy, coco8, tmp_path,
                                                                            monkeypatch):
    pytest.importorskip("onnxruntime")
    import edgekit.quantize.job as job
    from edgekit.errors import AccuracyGateError
    from edgekit.quantize import quantize

    def fake_evaluate(artifact, ds, precision=None, **k):
        """FP32: person 0.60, car 0.40; every INT8 attempt: the mean drops 0.2 points but car loses 8."""
        fp32 = precision == "fp32"
        return {"map50": 0.7, "map50_95": 0.500 if fp32 else 0.498, "images": 4, "boxes": 60, "backend": "onnxruntime",
                "device": "cpu", "precision_executed": "fp32" if fp32 else "int8", "evaluator": "fake",
                "per_class": {"person": 0.60, "car": 0.40 if fp32 else 0.32},
                "per_class_instances": {"person": 40, "car": 25},
                "threshold": {"conf": 0.25, "per_class": {}, "chosen_by": "max_f1"},
                "at_threshold": {"conf": 0.25, "per_class": {}}}

    monkeypatch.setattr(job, "evaluate", fake_evaluate)
    with pytest.raises(AccuracyGateError) as e:
        quantize(onnx160_copy, coco8, backend="onnxruntime", calib_size=4, force=True, max_map_drop=0.5,
                 out_dir=tmp_path / "q", log=lambda *a: None)
    assert "class 'car' lost 8.0 points (max 3)" in str(e.value)
    assert e.value.result["status"] == "FAILED" and e.value.result["drop_points"] == pytest.approx(0.2)
    assert len(e.value.result["fallbacks"]) > 1  # the fallback chain ran as for a mean drop
    res = quantize(onnx160_copy, coco8, backend="onnxruntime", calib_size=4, force=True, max_map_drop=0.5,
                   max_class_drop=10.0, out_dir=tmp_path / "q2", log=lambda *a: None)
    assert res["status"] == "PASSED"


@pytest.mark.slow
def test_models_times_imgsz_rows_on_a_tiny_run(tmp_path, coco8, weights, capsys):
    pytest.importorskip("ultralytics")
    pytest.importorskip("onnxruntime")
    from edgekit.cli.main import main

    out = tmp_path / "O"
    assert main(["train-export", "--data", str(coco8), "--models", f"{weights},yolov8n.yaml", "--imgsz", "64,96",
                 "--strategies", "full", "--epochs", "1", "--batch", "4", "--backends", "onnxruntime",
                 "--precisions", "fp32", "--bench-iters", "3", "-o", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    rows = doc["rows"]
    assert sorted((r["model"], r["imgsz"]) for r in rows) == sorted(
        (m, z) for m in (weights.name, "yolov8n.yaml") for z in (64, 96))
    for r in rows:
        assert r["status"] == "ok", r
        assert r["map50_95_ci"][0] <= r["map50_95"] <= r["map50_95_ci"][1]
        assert {"latency_p90_ms", "fps_cv", "per_class", "per_size"} <= set(r)
    for z in (64, 96):  # the same architecture at one size is one graph: one measurement, shown on both rows
        a, b = [r for r in rows if r["imgsz"] == z]
        assert a["bench_graph"] == b["bench_graph"] and a["fps_e2e"] == b["fps_e2e"]
        assert b.get("speed_shared_with") or a.get("speed_shared_with")
    assert len({r["bench_graph"] for r in rows}) == 2
    assert (out / "yolov8n-coco-64" / "full" / "stages" / "train.json").exists()
    md = (out / "report.md").read_text()
    assert f"## {weights.name} at 64 px" in md and "## yolov8n.yaml at 96 px" in md
    assert set(doc["recommendation"]) >= {"model", "imgsz", "bound_by"}


@pytest.mark.parametrize("argv, message", [
    (["--imgsz", "64,abc"], "--imgsz: '64,abc' is not a comma-separated list of ints"),
    (["--imgsz", "100"], "--imgsz: 100: every size must be a positive multiple of 32"),
    (["--models", " , "], "--models: empty list"),
    (["--model", "a.pt", "--models", "b.pt"], "--model and --models: give one of them"),
    (["--models", "a/best.pt,b/best.pt"], "--models: a/best.pt: two models would share the name 'best'"),
    (["--backends", "openvino,opnvino"], "--backends: 'opnvino' is not one of executorch, litert, ncnn, onnxruntime, "
                                         "openvino, tensorrt, torch"),
    (["--backends", " , "], "--backends: ' , ' is not one of executorch, litert, ncnn, onnxruntime, openvino, "
                            "tensorrt, torch"),
    (["--backends", "openvino,torch"], "--backends: torch declares no build (Backend.builds), so train-export cannot "
                                       "make its artifacts (it builds those of executorch, litert, ncnn, onnxruntime, "
                                       "openvino, tensorrt)"),
])
def test_bad_input_train_export_lists(argv, message, tmp_path, coco8, capsys, monkeypatch):
    from edgekit.cli.main import main

    monkeypatch.chdir(tmp_path)
    for d in ("a", "b"):  # models are checked to exist and be readable: the name clash is what is left to refuse
        (tmp_path / d).mkdir()
        (tmp_path / d / "best.pt").write_bytes(b"x")
    assert main(["train-export", "--data", str(coco8), "-o", str(tmp_path / "O"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "O").exists()


@pytest.mark.slow
def test_halving_continues_the_survivor_from_its_rung_checkpoint(tmp_path, coco8, weights):
    pytest.importorskip("ultralytics")
    pytest.importorskip("onnxruntime")
    from edgekit.sweep.pipeline import Pipeline

    logs: list[str] = []
    doc = Pipeline(out=tmp_path / "H", data=coco8, model=weights, strategies=["head", "full"], epochs=3, imgsz=64,
                   batch=4, backends=["onnxruntime"], precisions=["fp32"], bench_iters=3, search="halving",
                   log=logs.append).run()
    assert len(doc["pruned"]) == 1 and doc["pruned"][0]["rung"] == 1  # ceil(2/3) = 1 survivor in the one group
    (survivor,) = {r["strategy"] for r in doc["rows"]}
    assert survivor != doc["pruned"][0]["strategy"]
    train = json.loads((tmp_path / "H" / survivor / "train" / "train.json").read_text())
    assert train["status"] == "done" and train["epochs"] == 3 and train["epochs_requested"] == 3
    assert [e["epoch"] for e in train["epoch_records"]] == [1, 2, 3]  # one run continued, epoch 1 not trained twice
    assert sum("edgekit: training" in line for line in logs) == 2  # both to rung 1, then only continued
    assert sum("edgekit: resuming" in line for line in logs) == 1
    assert doc["train_seconds_total"] >= train["wall_s"]
