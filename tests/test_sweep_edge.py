"""Issue N: train-export sweeps the backends that declare their build (ncnn, litert, executorch, a plugin's), each
reduced precision gated against FP32 on the same backend, and refuses up front a backend that declares no build."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgekit.cli.main import main


def _needs_ncnn():
    from edgekit.runtime.backends import get_backend

    if not get_backend("ncnn").can_build("fp16"):
        pytest.skip("ncnn and pnnx are not installed (pip install 'edgekit[ncnn-build]')")
    pytest.importorskip("onnxruntime")


@pytest.mark.slow
def test_train_export_gives_ncnn_fp32_and_fp16_rows(tmp_path, coco8, weights):
    """`train-export --backends ncnn --precisions fp32,fp16` trains, builds both through NcnnBackend.build, gates
    fp16 against ncnn FP32 and gives both rows with status ok and an mAP (it was refused up front before)."""
    _needs_ncnn()
    pytest.importorskip("ultralytics")
    out = tmp_path / "run"
    assert main(["train-export", "--data", str(coco8), "--model", str(weights), "--epochs", "1", "--imgsz", "160",
                 "--strategies", "head", "--backends", "ncnn", "--precisions", "fp32,fp16", "--bench-iters", "3",
                 "-o", str(out)]) == 0
    doc = json.loads((out / "report.json").read_text())
    rows = {(r["backend"], r["precision"]): r for r in doc["rows"]}
    for p in ("fp32", "fp16"):
        r = rows[("ncnn", p)]
        assert r["status"] == "ok" and 0 < r["map50_95"] <= 1 and r["fps_e2e"] > 0
        assert (out / r["artifact"]).name == "model.ncnn.param"
        assert r["model_mb"] > 1  # the .bin beside the .param counts (the .param alone is ~0.02 MB)
    side = json.loads((out / "head" / "ncnn_fp16" / "model.ncnn.json").read_text())
    assert side["status"] == "PASSED" and side["precision"] == "fp16"
    gate = side["accuracy_gate"]
    assert gate["baseline"]["backend"] == "ncnn" and gate["baseline"]["precision_executed"] == "fp32"
    assert gate["map50_95_fp32"] == pytest.approx(rows[("ncnn", "fp32")]["map50_95"], abs=1e-4)
    assert gate["map50_95"] == pytest.approx(rows[("ncnn", "fp16")]["map50_95"], abs=1e-4)


@pytest.mark.slow
def test_reduced_precision_below_the_gate_is_a_failed_row(tmp_path, coco8, onnx160, monkeypatch):
    """A reduced precision of a declared-build backend that loses more than --max-map-drop against FP32 on the SAME
    backend is a FAILED row, its sidecar marked FAILED; the FP32 baseline is built once and evaluated once per trial
    even when the fp16 row comes first (the fp32 row then reuses that build)."""
    _needs_ncnn()
    import edgekit.eval
    import edgekit.export
    import edgekit.train
    from edgekit.sweep.pipeline import Pipeline
    from edgekit.runtime.backends.ncnn import NcnnBackend

    def fake_train(*a, out_dir, **k):  # the export stage keys on best.pt's content: leave one
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "best.pt").write_bytes(b"not used")
        return {"wall_s": 0.0, "epochs": 0}

    def fake_export(best, out_dir, **k):  # the bundled weights exported at 160, in the run's folder
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for f in onnx160.parent.glob("model.*"):
            shutil.copy2(f, Path(out_dir) / f.name)
        return Path(out_dir) / onnx160.name

    real_eval, fp32_evals, builds = edgekit.eval.evaluate, [], []

    def evaluate(artifact, *a, **k):  # fp16 evaluated 5 points below what it scores: the gate must fail it
        r = real_eval(artifact, *a, **k)
        if k.get("precision") == "fp32" and "ncnn_fp32" in str(artifact):
            fp32_evals.append(artifact)
        return {**r, "map50_95": r["map50_95"] - 0.05} if "ncnn_fp16" in str(artifact) else r

    real_build = NcnnBackend.build_impl

    def build_impl(cls, source, precision, *a, **k):
        builds.append(precision)
        return real_build(source, precision, *a, **k)

    monkeypatch.setattr(edgekit.train, "train", fake_train)
    monkeypatch.setattr(edgekit.export, "export_onnx", fake_export)
    monkeypatch.setattr(edgekit.eval, "evaluate", evaluate)
    monkeypatch.setattr(NcnnBackend, "build_impl", classmethod(build_impl))
    pipe = Pipeline(out=tmp_path / "run", data=coco8, model=tmp_path / "unused.pt", strategies=["head"], imgsz=160,
                    backends=["ncnn"], precisions=["fp16", "fp32"], bench_iters=2, log=lambda *a: None)
    rows = {(r["backend"], r["precision"]): r for r in pipe.run()["rows"]}
    fp16, fp32 = rows[("ncnn", "fp16")], rows[("ncnn", "fp32")]
    assert fp16["status"] == "FAILED" and fp16["artifact"] is None
    assert "fp16 loses 5.00 mAP50-95 points against FP32 on ncnn (max 0.5)" in fp16["error"]
    assert fp16["gate"]["drop_points"] == pytest.approx(5.0, abs=1e-6)
    assert fp32["status"] == "ok" and fp32["map50_95"] > 0
    side = json.loads((tmp_path / "run" / "head" / "ncnn_fp16" / "model.ncnn.json").read_text())
    assert side["status"] == "FAILED" and side["accuracy_gate"]["baseline"]["backend"] == "ncnn"
    assert sorted(builds) == ["fp16", "fp32"]  # the fp32 row reused the baseline's build
    assert len(fp32_evals) == 1  # the gate's baseline, once


@pytest.mark.slow
def test_gate_baseline_is_evaluated_once_per_trial(tmp_path, coco8, onnx160_copy, monkeypatch):
    """Building a reduced precision again in the same run reuses the FP32 baseline's build and evaluation."""
    _needs_ncnn()
    import edgekit.eval
    from edgekit.sweep.pipeline import Pipeline
    from edgekit.sweep.variants import Variant

    real_eval, calls = edgekit.eval.evaluate, []

    def evaluate(artifact, *a, **k):
        calls.append(Path(artifact).parent.name)
        return real_eval(artifact, *a, **k)

    monkeypatch.setattr(edgekit.eval, "evaluate", evaluate)
    pipe = Pipeline(out=tmp_path, data=coco8, model=tmp_path / "unused.pt", strategies=["head"], imgsz=160,
                    backends=["ncnn"], log=lambda *a: None)
    pipe.run_id = "one run"  # stages recorded by this run are reused by it
    for _ in range(2):
        built = pipe.build(onnx160_copy, Variant("ncnn", "fp16"), tmp_path / "head")
        assert built["accuracy"]["source"] == "fp16 accuracy gate"
    assert calls == ["ncnn_fp32", "ncnn_fp16", "ncnn_fp16"]


@pytest.fixture()
def toy():
    """The toy plugin backend (tests/toy_backend.py): it runs, and declares no build."""
    from edgekit.runtime import backends

    backends.register("toy", "toy_backend:ToyBackend")
    yield
    backends.BACKENDS.pop("toy", None)
    backends._classes.pop("toy", None)


@pytest.mark.parametrize("backend", ["toy", "torch"])
def test_backend_without_a_build_is_refused_up_front(backend, toy, tmp_path, coco8, capsys):
    """A registered backend that declares no build (a plugin's, or torch) is refused in one line before any work,
    not failed in Pipeline.build with 'unknown backend'."""
    out = tmp_path / "O"
    assert main(["train-export", "--data", str(coco8), "--backends", f"openvino,{backend}", "--epochs", "1",
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"edgekit train-export: error: --backends: {backend} declares no build (Backend.builds), "
                          f"so train-export cannot make its artifacts (it builds those of ")
    assert "ncnn" in err and len(err.splitlines()) == 1
    assert not out.exists()


@pytest.mark.slow
def test_train_export_gives_litert_and_executorch_int8_rows(tmp_path, coco8, weights):
    """LiteRT (from the ONNX) and ExecuTorch (from the trial's best.pt) INT8 are calibrated on the train split and
    gated against FP32 on their own backend; both give rows (about 200 s on 2 cores)."""
    from edgekit.runtime.backends import get_backend

    pytest.importorskip("ultralytics")
    if not (get_backend("litert").can_build("int8") and get_backend("executorch").can_build("int8")):
        pytest.skip("LiteRT or ExecuTorch converters are not installed")
    out = tmp_path / "run"
    assert main(["train-export", "--data", str(coco8), "--model", str(weights), "--epochs", "1", "--imgsz", "160",
                 "--strategies", "head", "--backends", "litert,executorch", "--precisions", "fp32,int8",
                 "--calib-size", "8", "--max-map-drop", "100", "--bench-iters", "3", "-o", str(out)]) == 0
    rows = {(r["backend"], r["precision"]): r for r in json.loads((out / "report.json").read_text())["rows"]}
    for b in ("litert", "executorch"):
        assert all(rows[(b, p)]["status"] == "ok" and rows[(b, p)]["map50_95"] > 0 for p in ("fp32", "int8"))
        side = json.loads(next((out / "head" / f"{b}_int8").glob("*.json")).read_text())
        assert side["status"] == "PASSED" and side["calibration"]["split"] == "train"
        assert side["accuracy_gate"]["baseline"]["backend"] == b
        assert side["accuracy_gate"]["map50_95_fp32"] == pytest.approx(rows[(b, "fp32")]["map50_95"], abs=1e-4)
    assert side["source"]["kind"] == "checkpoint"  # ExecuTorch builds from the trial's best.pt
