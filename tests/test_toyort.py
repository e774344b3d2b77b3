"""Issue N: a backend with a build step of its own is one file (tests/toyort_backend.py) and one registration line
for Engine, eval, bench, doctor, quantize (which refuses it in one line: it declares no quantizer) and train-export
(which failed in Pipeline.build with "unknown backend" before: it now builds, evaluates and times its rows)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.cli.main import main

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def toyort():
    from edgekit.runtime import backends

    backends.register("toyort", "toyort_backend:ToyOrtBackend")  # the one registration line
    yield backends.get_backend("toyort")
    backends.REGISTRY.unregister("toyort")


@pytest.fixture(scope="module")
def artifact(toyort, onnx160, tmp_path_factory):
    return toyort.build(onnx160, "fp32", tmp_path_factory.mktemp("toyort") / "toyort_fp32", log=lambda m: None)


def test_toyort_builds_and_runs_through_engine_like_onnxruntime(artifact, onnx160, bus_jpg):
    from edgekit import Engine

    assert artifact.name == "model.toyort" and json.loads(artifact.with_suffix(".json").read_text())["backend"] == \
        "toyort"
    with Engine(artifact) as toy, Engine(onnx160, backend="onnxruntime") as ort:
        assert toy.backend_name == "toyort" and toy.precision_executed == "fp32"
        a, b = toy(str(bus_jpg)), ort(str(bus_jpg))
        assert len(a) > 0 and np.array_equal(a.class_ids, b.class_ids) and np.allclose(a.boxes, b.boxes, atol=1e-3)


def test_toyort_eval_and_bench(artifact, coco8, tmp_path):
    ev, be = tmp_path / "eval.json", tmp_path / "bench.json"
    assert main(["eval", str(artifact), "--data", str(coco8), "--json", str(ev)]) == 0
    assert json.loads(ev.read_text())["backend"] == "toyort"
    assert main(["bench", str(artifact), "--images", str(coco8.parent / "images" / "val"), "--warmup", "1",
                 "--iters", "2", "--json", str(be)]) == 0
    r = json.loads(be.read_text())
    assert r["backend"] == "toyort" and r["latency_ms"]["e2e"]["n"] == 2


def test_toyort_in_doctor_with_its_build(toyort, tmp_path):
    out = tmp_path / "doctor.json"
    assert main(["doctor", "--json", str(out)]) == 0
    b = json.loads(out.read_text())["backends"]["toyort"]
    assert b["installed"] is True and b["builds"]["precisions"] == ["fp32"] and b["builds"]["from"] == "onnx"
    assert b["makes"] == {"fp32": "build"}
    ort = json.loads(out.read_text())["backends"]["onnxruntime"]
    assert ort["makes"] == {"fp32": "exported", "int8": "quantize"}


def test_quantize_refuses_a_backend_without_a_quantizer(toyort, onnx160_copy, coco8, tmp_path, capsys):
    out = tmp_path / "Q"
    assert main(["quantize", str(onnx160_copy), "--data", str(coco8), "--backend", "toyort", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edgekit quantize: error: --backend: toyort has no quantizer (edgekit quantize builds no INT8 "
                   "artifact for it); choose from openvino, onnxruntime, tensorrt"]
    assert not out.exists()


@pytest.mark.slow
def test_train_export_gives_the_toyort_rows(toyort, coco8, weights, tmp_path):
    """`train-export --backends toyort` builds model.toyort through the backend's own build, evaluates and times it
    (its mAP is ONNX Runtime's reference row's: the same graph on the same runtime)."""
    pytest.importorskip("ultralytics")
    out = tmp_path / "run"
    assert main(["train-export", "--data", str(coco8), "--model", str(weights), "--epochs", "1", "--imgsz", "160",
                 "--strategies", "head", "--backends", "toyort", "--bench-iters", "3", "-o", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    rows = {(r["backend"], r["precision"]): r for r in doc["rows"]}
    assert set(rows) == {("toyort", "fp32"), ("onnxruntime", "fp32")}  # its own row, and the reference
    toy, ref = rows[("toyort", "fp32")], rows[("onnxruntime", "fp32")]
    assert toy["status"] == "ok" and (out / toy["artifact"]).name == "model.toyort" and toy["fps_e2e"] > 0
    assert toy["map50_95"] == pytest.approx(ref["map50_95"], abs=1e-6) and toy["speedup_vs_ref"] > 0
    assert doc["config"]["backends"] == ["toyort"]
