"""train-export --resume: records keyed on content, stale outputs rebuilt, failed gates remembered; bare schedule."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from edgekit.errors import AccuracyGateError, EdgekitError
from edgekit.io import sha256_file
from edgekit.sweep.pipeline import Pipeline
from edgekit.runtime.meta import read_sidecar
from edgekit.train.strategy import Stage, parse_strategy

TINY = dict(imgsz=64, batch=4, backends=["onnxruntime"], bench_iters=3, calib_size=16)


def _cli(out: Path, data: Path, weights: Path, epochs: int, *more: str) -> list[str]:
    return ["train-export", "--data", str(data), "--model", str(weights), "--strategies", "schedule",
            "--epochs", str(epochs), "--imgsz", "64", "--batch", "4", "--backends", "onnxruntime",
            "--precisions", "fp32", "--bench-iters", "3", "--calib-size", "16", "-o", str(out), *more]


def _records(out: Path) -> dict:
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.glob("*/stages/*.json"))}


def _weights_sha(artifact) -> str:
    """sha256 of the checkpoint an artifact was built from, as its sidecar records it."""
    src = read_sidecar(artifact)["source"]
    return src["weights"]["sha256"] if "weights" in src else src["sha256"]


@pytest.fixture()
def data(tmp_path, coco8):
    """A private copy of coco8, so a test may change a label."""
    dst = tmp_path / "coco8"
    shutil.copytree(coco8.parent, dst)
    return dst / "data.yaml"


@pytest.mark.slow
def test_resume_with_more_epochs_reports_only_the_new_model(tmp_path, data, weights, capsys):
    pytest.importorskip("ultralytics")
    pytest.importorskip("onnxruntime")
    from edgekit.cli.main import main

    out = tmp_path / "O"
    assert main(_cli(out, data, weights, 1)) == 0
    first = sha256_file(out / "schedule" / "train" / "best.pt")
    assert main(_cli(out, data, weights, 2, "--resume")) == 0
    err = capsys.readouterr().err
    assert "[resume] schedule: export: done, skipped" not in err  # best.pt changed: export and everything after rerun
    best = out / "schedule" / "train" / "best.pt"
    sha = sha256_file(best)
    assert sha != first
    report = json.loads((out / "report.json").read_text())
    assert report["rows"] and all(r["status"] == "ok" for r in report["rows"]), report["rows"]
    for r in report["rows"]:
        assert _weights_sha(out / r["artifact"]) == sha, r  # report.json names files relative to its run folder
        assert r["epochs"] == 2
    train = json.loads((out / "schedule" / "train" / "train.json").read_text())
    assert train["epochs"] == 2 and train["strategy"] == "schedule"
    # the bare 'schedule' resolved against 2 epochs: backbone frozen in epoch 1, everything trains in epoch 2
    assert train["resolved_strategy"] == "schedule:0:backbone,1:none"
    assert [s["frozen_groups"] for s in train["schedule"]] == [["backbone"], []]

    # unchanged inputs: every stage skipped, no record rewritten
    before = _records(out)
    logs: list[str] = []
    Pipeline(out=out, data=data, model=weights, strategies=["schedule"], epochs=2, precisions=["fp32"],
             resume=True, log=logs.append, **TINY).run()
    stages = [line for line in logs if line.startswith(("[stage]", "[resume]"))]
    assert stages and all(line.endswith("done, skipped") for line in stages), stages
    assert {"[resume] schedule: train: done, skipped", "[resume] schedule: export: done, skipped",
            "[resume] schedule: onnxruntime-fp32 bench: done, skipped"} <= set(stages)
    assert _records(out) == before

    # an output that disappeared or changed since its record is never trusted
    onnx = out / "schedule" / "onnx" / "model.onnx"
    onnx.unlink()
    logs.clear()
    Pipeline(out=out, data=data, model=weights, strategies=["schedule"], epochs=2, precisions=["fp32"],
             resume=True, log=logs.append, **TINY).run()
    assert "[resume] schedule: train: done, skipped" in logs
    assert f"[resume] schedule: export: {onnx} is missing or changed since it was recorded: running again" in logs
    assert "[stage] schedule: export ..." in logs and onnx.exists()

    # a label edited in place, same size and mtime, invalidates training and everything after it
    label = sorted((data.parent / "labels" / "train").glob("*.txt"))[0]
    st = label.stat()
    lines = label.read_text().splitlines()
    lines[0] = lines[0][:-1] + ("1" if lines[0][-1] != "1" else "2")
    label.write_text("\n".join(lines) + "\n")
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert label.stat().st_size == st.st_size and label.stat().st_mtime_ns == st.st_mtime_ns
    logs.clear()
    Pipeline(out=out, data=data, model=weights, strategies=["schedule"], epochs=2, precisions=["fp32"],
             resume=True, log=logs.append, **TINY).run()
    assert "[stage] schedule: train ..." in logs
    # speed is keyed on the graph, not the weights or the data: the same graph keeps its one measurement
    assert [line for line in logs if line.startswith("[resume]")] == [
        "[resume] schedule: onnxruntime-fp32 bench: done, skipped"]


@pytest.mark.slow
def test_resume_skips_a_failed_gate_unless_retry_failed(tmp_path, data, weights, monkeypatch):
    pytest.importorskip("ultralytics")
    pytest.importorskip("onnxruntime")
    import edgekit.quantize as q

    calls = []

    def failing(onnx, *a, **k):
        calls.append(onnx)
        err = AccuracyGateError(f"{tmp_path}/model_int8_onnxruntime.FAILED/model.onnx: every attempt lost more "
                                f"than 0 mAP50-95 points (best: recipe, 0.42)")
        err.result = {"artifact": "x", "status": "FAILED", "attempt": "recipe", "map50_95_fp32": 0.5,
                      "map50_95": 0.4958, "drop_points": 0.42, "max_map_drop": 0.0, "fallbacks": []}
        raise err

    monkeypatch.setattr(q, "quantize", failing)
    out = tmp_path / "run"
    kw = dict(out=out, data=data, model=weights, strategies=["head"], epochs=1, precisions=["int8"], max_map_drop=0.0,
              **TINY)
    rows = Pipeline(**kw).run()["rows"]
    assert len(calls) == 1 and [r["status"] for r in rows] == ["FAILED"]
    assert rows[0]["gate"]["drop_points"] == 0.42 and rows[0]["gate"]["max_map_drop"] == 0.0
    record = json.loads((out / "head" / "stages" / "onnxruntime-int8.build.json").read_text())
    assert record["status"] == "FAILED" and "lost more than 0 mAP50-95" in record["error"]
    assert record["gate"]["map50_95"] == 0.4958 and record["inputs"]["max_map_drop"] == 0.0

    logs: list[str] = []
    rows = Pipeline(**kw, resume=True, log=logs.append).run()["rows"]
    assert len(calls) == 1  # not rebuilt
    assert "[resume] head: onnxruntime-int8 build: failed its accuracy gate before, skipped (--retry-failed to try " \
           "again)" in logs
    assert rows[0]["status"] == "FAILED" and rows[0]["error"] == record["error"]
    assert rows[0]["gate"] == record["gate"]

    logs.clear()
    Pipeline(**kw, resume=True, retry_failed=True, log=logs.append).run()
    assert len(calls) == 2 and "[resume] head: train: done, skipped" in logs
    assert "[stage] head: onnxruntime-int8 build ..." in logs


@pytest.mark.parametrize("model", ["yolo_nas_s", "yolo_nas_s:my.ckpt"])
def test_bad_input_train_export_refuses_nas_before_training(tmp_path, coco8, capsys, model):
    from edgekit.cli.main import main

    out = tmp_path / "O"
    assert main(["train-export", "--model", model, "--data", str(coco8), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"edgekit train-export: error: {model}: train-export sweeps Ultralytics models only for now; "
                   f"the YOLO-NAS route is 'edgekit train {model} --data DATA.yaml' (it exports the ONNX too)")
    assert not out.exists()  # nothing trained, nothing written


@pytest.mark.parametrize("epochs, unfreeze", [(1, 1), (2, 1), (3, 1), (4, 1), (5, 2), (6, 2), (10, 3), (100, 33)])
def test_bare_schedule_freezes_the_backbone_for_a_third_of_the_run(epochs, unfreeze):
    s = parse_strategy("schedule")
    assert s.kind == "schedule" and s.spec == "schedule" and parse_strategy(s.spec) == s
    r = s.resolve(epochs)
    assert r.stages == (Stage(0, "backbone"), Stage(unfreeze, "none"))
    assert r.spec == f"schedule:0:backbone,{unfreeze}:none"
    assert [r.stage_at(e).freeze for e in range(epochs)] == ["backbone"] * min(unfreeze, epochs) + ["none"] * max(
        epochs - unfreeze, 0)
    assert parse_strategy("schedule:0:neck,2:none").resolve(epochs).spec == "schedule:0:neck,2:none"  # explicit: as is


def test_bare_schedule_must_be_resolved_before_use():
    with pytest.raises(EdgekitError, match="call resolve"):
        parse_strategy("schedule").stage_at(0)
    with pytest.raises(EdgekitError, match="'schedule' needs stages"):
        parse_strategy("schedule:")  # a colon with nothing after it is still a typo
