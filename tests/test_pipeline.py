"""train-export: strategy parsing, recommendation, report files, resume after an interruption; advise."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.sweep.pipeline import Pipeline, split_strategies
from edgekit.sweep.report import pareto_front, pareto_png, recommend, render_markdown


def test_split_strategies_keeps_schedules_whole():
    assert split_strategies("scratch,schedule:0:backbone,5:neck,10:none,full, lora:8") == [
        "scratch", "schedule:0:backbone,5:neck,10:none", "full", "lora:8"]


def _row(strategy, backend, precision, m, fps, cost=0.0, wall=10.0):
    return {"strategy": strategy, "backend": backend, "precision": precision, "map50_95": m, "map50": m + 0.2,
            "fps_e2e": fps, "cost_usd": cost, "train_wall_s": wall, "gpu_hours": 0.0, "status": "ok",
            "artifact": f"{strategy}/{backend}-{precision}"}


ROWS = [_row("scratch", "openvino", "int8", 0.01, 40), _row("full", "openvino", "fp32", 0.400, 20, cost=5),
        _row("full", "openvino", "int8", 0.397, 35, cost=5), _row("head", "openvino", "int8", 0.30, 30, cost=1),
        {"strategy": "full", "backend": "onnxruntime", "precision": "int8", "status": "FAILED", "error": "gate"}]


def test_recommendation_fastest_within_the_allowed_drop():
    rec = recommend(ROWS, max_map_drop=0.5)
    assert (rec["strategy"], rec["precision"]) == ("full", "int8")
    assert "not significantly more than the allowed 0.5" in rec["why"] and "from scratch" in rec["why"]
    assert rec["bound_by"] == ["max_map_drop"]  # scratch int8 is faster but far worse
    assert recommend(ROWS, max_map_drop=0.1)["precision"] == "fp32"  # INT8 lost 0.3 points: over 0.1
    assert recommend(ROWS, min_fps=39)["strategy"] == "scratch"
    assert recommend(ROWS, budget_usd=2)["strategy"] == "head"
    none = recommend(ROWS, min_fps=100)
    assert none["artifact"] is None and "no artifact reaches 100 FPS" in none["why"]  # a missed limit is never relaxed


def test_pareto_front_and_report_files(tmp_path):
    front = {(r["strategy"], r["precision"]) for r in pareto_front(ROWS)}
    assert front == {("scratch", "int8"), ("full", "fp32"), ("full", "int8")}  # head int8 is dominated
    rec = recommend(ROWS)
    png = pareto_png(ROWS, tmp_path / "pareto.png", rec)
    assert png.read_bytes()[:4] == b"\x89PNG"
    md = render_markdown({"rows": ROWS, "recommendation": rec,
                          "config": {"data": "d", "model": "m", "epochs": 1, "imgsz": 160, "target": "cpu",
                                     "max_map_drop": 0.5}}, png)
    assert "| full | openvino | int8 |" in md and "## Not produced" in md and "pareto.png" in md


@pytest.fixture()
def tiny_data(tmp_path, demo_data):
    """32 train / 16 val images of the demo set, to keep training short."""
    import shutil

    root = tmp_path / "tiny"
    for split, n in (("train", 32), ("val", 16)):
        for kind in ("images", "labels"):
            (root / kind / split).mkdir(parents=True)
        for img in sorted((demo_data.parent / "images" / split).glob("*.jpg"))[:n]:
            shutil.copy(img, root / "images" / split / img.name)
            lbl = demo_data.parent / "labels" / split / (img.stem + ".txt")
            if lbl.exists():
                shutil.copy(lbl, root / "labels" / split / lbl.name)
    (root / "data.yaml").write_text(demo_data.read_text())
    return root / "data.yaml"


@pytest.mark.slow
def test_interrupted_during_quantization_resumes(tiny_data, weights, tmp_path, monkeypatch):
    pytest.importorskip("ultralytics")
    pytest.importorskip("openvino")
    import edgekit.quantize as q

    logs: list[str] = []
    kw = dict(out=tmp_path / "run", data=tiny_data, model=weights, strategies=["head"], epochs=1, imgsz=160,
              batch=8, backends=["openvino"], precisions=["fp32", "int8"], calib_size=16, bench_iters=5,
              max_map_drop=100.0, log=logs.append)
    real = q.quantize

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    import edgekit.data.dataset as dsmod

    reads = []
    real_read = dsmod.load_yolo_yaml
    monkeypatch.setattr(dsmod, "load_yolo_yaml", lambda *a, **k: reads.append(a[0]) or real_read(*a, **k))
    monkeypatch.setattr(q, "quantize", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Pipeline(**kw).run()
    assert len(reads) == 1, reads  # the yaml is read once; train, eval and the content key get the loaded Dataset
    stages = tmp_path / "run" / "head" / "stages"
    assert (stages / "train.json").exists() and (stages / "export.json").exists()
    assert (stages / "openvino-fp32.eval.json").exists() and not (stages / "openvino-int8.build.json").exists()
    assert not (stages / "openvino-fp32.bench.json").exists()  # speed is timed after every trial is built
    assert not (tmp_path / "run" / "report.json").exists()

    monkeypatch.setattr(q, "quantize", real)
    logs.clear()
    doc = Pipeline(**kw, resume=True).run()
    skipped = [l for l in logs if l.startswith("[resume]")]
    assert "[resume] head: train: done, skipped" in skipped
    assert "[resume] head: export: done, skipped" in skipped
    assert "[resume] head: openvino-fp32 eval: done, skipped" in skipped
    assert any(l == "[stage] head: openvino-int8 build ..." for l in logs)
    assert not any("train ..." in l for l in logs)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [(r["backend"], r["precision"]) for r in report["rows"]] == [
        ("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "int8")]  # ONNX on ORT: the reference row
    assert all(r["status"] == "ok" for r in report["rows"]), report["rows"]
    for key in ("model", "imgsz", "strategy", "backend", "precision", "train_wall_s", "gpu_hours", "cost_usd", "map50",
                "map50_95", "map50_95_ci", "per_class", "per_size", "latency_p50_ms", "latency_p90_ms", "fps_e2e",
                "fps_cv", "model_mb", "artifact"):
        assert key in report["rows"][0]
    assert set(report["recommendation"]) >= {"model", "imgsz", "strategy", "artifact", "why", "bound_by"}
    assert (tmp_path / "run" / "pareto.png").exists() and (tmp_path / "run" / "report.md").exists()
    assert doc["rows"] == report["rows"]


def test_frechet_distance_properties():
    from edgekit.advise.domain import frechet_distance, stats

    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    mu, s = stats(a)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-6
    b = a * 2 + 3
    mu2, s2 = stats(b)
    # for covariances that commute, the distance has a closed form: |dmu|^2 + tr((sqrt(S1) - sqrt(S2))^2)
    assert abs(frechet_distance(mu, s, mu2, s2) - (((mu - mu2) ** 2).sum() + np.trace(s))) < 1e-6 * 100
    assert abs(frechet_distance(mu, s, mu2, s2) - frechet_distance(mu2, s2, mu, s)) < 1e-6


@pytest.mark.slow
def test_advise_prefers_fine_tuning_for_small_coco_like_data(demo_data, capsys, tmp_path):
    pytest.importorskip("ultralytics")
    from edgekit.cli.main import main

    out = tmp_path / "advice.json"
    assert main(["advise", "--data", str(demo_data), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["scratch_worth_it"] is False and "data are small" in r["verdict"]
    assert r["profile"]["splits"]["train"]["images"] == 96 and r["domain"]["class_name_overlap_coco"] == 0.8
    assert r["strategies"][-1] == "scratch" and r["train_export_args"].startswith("--strategies ")
    args = r["train_export_args"].split()
    assert split_strategies(args[args.index("--strategies") + 1]) == r["strategies"]
    assert [int(z) for z in args[args.index("--imgsz") + 1].split(",")] == r["imgsz"] and len(r["imgsz"]) >= 1
    assert args[args.index("--models") + 1].split(",") == r["models"]
    assert "try: edgekit train-export" in capsys.readouterr().out


@pytest.mark.slow
def test_noise_images_are_farther_from_coco_than_vehicles(demo_data, tmp_path):
    pytest.importorskip("ultralytics")
    import cv2

    from edgekit.advise.domain import domain_distance

    rng = np.random.default_rng(0)
    noise = []
    for i in range(48):  # binarized high-frequency patterns, far from natural images
        img = (rng.uniform(0, 1, (208, 208)) > 0.5).astype(np.uint8) * 255
        img = cv2.resize(img, (416, 416), interpolation=cv2.INTER_NEAREST)
        p = tmp_path / f"n{i}.png"
        cv2.imwrite(str(p), img)
        noise.append(p)
    vehicles = sorted((demo_data.parent / "images" / "train").glob("*.jpg"))[:48]
    assert domain_distance(noise)["frechet_distance"] > domain_distance(vehicles)["frechet_distance"]
