"""FP32 means FP32 on every backend; bf16 is a precision of its own, run where the CPU has it and refused elsewhere.

The tests asking for real bf16 execution skip on CPUs without it; the refusals are tested everywhere by making the
OpenVINO CPU plugin report no BF16 capability.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgekit.errors import ArtifactError

pytest.importorskip("ultralytics")


def _cpu_has_bf16() -> bool:
    try:
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


needs_bf16 = pytest.mark.skipif(not _cpu_has_bf16(), reason="this CPU has no bf16 (no AVX512_BF16 or AMX)")


@pytest.fixture()
def no_bf16(monkeypatch):
    """OpenVINO's CPU plugin reports what an AVX2-only CPU reports."""
    pytest.importorskip("openvino")
    from edgekit.runtime.backends import openvino as ovb

    monkeypatch.setattr(ovb, "capabilities", lambda core, dev: ["FP32", "INT8", "BIN", "EXPORT_IMPORT"])


@pytest.fixture(scope="module")
def ir_fp32(onnx160, tmp_path_factory):
    pytest.importorskip("openvino")
    from edgekit.export.openvino import onnx_to_openvino

    return onnx_to_openvino(onnx160, tmp_path_factory.mktemp("ir") / "fp32", log=lambda *a: None)


def _artifact(kind, request):
    if kind == "onnx-ort":
        pytest.importorskip("onnxruntime")
        return request.getfixturevalue("onnx160"), "onnxruntime"
    pytest.importorskip("openvino")
    name = {"onnx-ov": "onnx160", "ir-ov": "ir_fp32", "int8-ov": "int8_ir160"}[kind]
    return request.getfixturevalue(name), "openvino"


@pytest.mark.slow
@pytest.mark.parametrize("kind,executed", [("onnx-ort", "fp32"), ("onnx-ov", "fp32"), ("ir-ov", "fp32"),
                                           ("int8-ov", "int8+fp32")])
def test_fp32_and_int8_artifacts_execute_fp32_floats(kind, executed, request):
    from edgekit import Engine

    path, backend = _artifact(kind, request)
    with Engine(path, backend=backend) as eng:
        assert eng.precision_executed == executed
        if backend == "openvino":  # what the compiled model itself says, not our bookkeeping
            assert eng.backend.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    with Engine(path, backend=backend, precision="fp32") as eng:
        assert eng.precision_executed == executed


def test_openvino_fp32_ir_matches_onnxruntime(ir_fp32, onnx160, bus_jpg):
    from edgekit import Engine

    a, b = Engine(ir_fp32)(bus_jpg), Engine(onnx160, backend="onnxruntime")(bus_jpg)
    assert len(a) == len(b) and abs(a.boxes - b.boxes).max() < 0.05 and abs(a.scores - b.scores).max() < 1e-3


def test_sidecar_records_precision_executed(ir_fp32):
    doc = json.loads((ir_fp32 / "model.json").read_text())
    assert doc["precision"] == "fp32" and doc["precision_executed"] == "fp32" and doc["precision_executed_on"] == "cpu"


@pytest.mark.slow
@needs_bf16
def test_bf16_is_asked_for_and_executed(ir_fp32, onnx160, tmp_path):
    from edgekit import Engine
    from edgekit.export.openvino import onnx_to_openvino

    with Engine(ir_fp32, precision="bf16") as eng:
        assert eng.precision_executed == "bf16"
        assert eng.backend.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"
    folder = onnx_to_openvino(onnx160, tmp_path / "bf16", precision="bf16", log=lambda *a: None)
    doc = json.loads((folder / "model.json").read_text())
    assert doc["precision"] == "bf16" and doc["precision_executed"] == "bf16"
    assert (folder / "model.bin").stat().st_size == (ir_fp32 / "model.bin").stat().st_size  # FP32 weights
    with Engine(folder) as eng:
        assert eng.precision_executed == "bf16"
    with Engine(folder, precision="fp32") as eng:
        assert eng.precision_executed == "fp32"


@pytest.mark.slow
@needs_bf16
def test_eval_json_records_bf16_beside_fp32(ir_fp32, coco8):
    from edgekit.eval import evaluate

    f = evaluate(ir_fp32, coco8, progress=False)
    b = evaluate(ir_fp32, coco8, progress=False, precision="bf16")
    assert (f["precision_executed"], b["precision_executed"]) == ("fp32", "bf16")
    assert abs(f["map50_95"] - b["map50_95"]) < 0.05


@pytest.mark.slow
def test_bf16_refused_without_bf16(no_bf16, ir_fp32, onnx160, tmp_path):
    from edgekit import Engine
    from edgekit.export.openvino import onnx_to_openvino

    with pytest.raises(ArtifactError, match="bf16 execution was asked for.*this CPU has no bf16"):
        Engine(ir_fp32, precision="bf16")
    with pytest.raises(ArtifactError, match="this CPU has no bf16"):
        onnx_to_openvino(onnx160, tmp_path / "bf16", precision="bf16", log=lambda *a: None)
    assert not (tmp_path / "bf16").exists()
    with Engine(ir_fp32) as eng:  # fp32 still runs
        assert eng.precision_executed == "fp32"


@pytest.mark.parametrize("backend,precision", [("onnxruntime", "bf16"), ("onnxruntime", "int8"),
                                               ("openvino", "int8"), ("openvino", "tf32")])
def test_precision_a_backend_cannot_run_is_refused(onnx160, backend, precision):
    pytest.importorskip(backend)
    from edgekit import Engine

    with pytest.raises(ArtifactError, match=f"{precision}"):
        Engine(onnx160, backend=backend, precision=precision)


def test_substituted_precision_is_refused(monkeypatch, ir_fp32):
    """A plugin that compiles another precision than the hint (CPU: f16 -> bf16) is an error, not a figure."""
    from edgekit import Engine
    from edgekit.runtime.backends import openvino as ovb

    monkeypatch.setattr(ovb, "executed_precision", lambda compiled: "bf16")
    with pytest.raises(ArtifactError, match="asked OpenVINO CPU for fp32 execution, it compiled bf16"):
        Engine(ir_fp32)


# train-export ------------------------------------------------------------------------------------
def test_bf16_row_only_where_the_cpu_runs_it(no_bf16):
    from edgekit.sweep.variants import variants_for

    default = [(v.backend, v.precision) for v in variants_for("cpu", ["openvino"])]
    assert ("openvino", "fp32") in default and ("openvino", "int8") in default
    assert ("openvino", "bf16") not in default
    asked = [(v.backend, v.precision) for v in variants_for("cpu", ["openvino"], ["fp32", "bf16"])]
    assert ("openvino", "bf16") in asked


@needs_bf16
def test_bf16_row_by_default_on_a_bf16_cpu():
    from edgekit.sweep.variants import variants_for

    assert ("openvino", "bf16") in [(v.backend, v.precision) for v in variants_for("cpu", ["openvino"])]


@pytest.mark.slow
def test_asked_bf16_without_bf16_is_an_error_row(no_bf16, onnx160, coco8, tmp_path, monkeypatch):
    import edgekit.export
    import edgekit.train
    from edgekit.sweep.pipeline import Pipeline

    def fake_train(*a, out_dir, **k):  # the export stage keys on best.pt's content: leave one
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "best.pt").write_bytes(b"not used")
        return {"wall_s": 0.0, "epochs": 0}

    monkeypatch.setattr(edgekit.train, "train", fake_train)
    def fake_export(best, out_dir, **k):  # the run records only what lies in its folder
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for f in onnx160.parent.glob("model.*"):
            shutil.copy2(f, Path(out_dir) / f.name)
        return Path(out_dir) / onnx160.name

    monkeypatch.setattr(edgekit.export, "export_onnx", fake_export)
    pipe = Pipeline(out=tmp_path / "run", data=coco8, model=tmp_path / "unused.pt", strategies=["head"],
                    imgsz=160, backends=["openvino"], precisions=["bf16"], bench_iters=2, log=lambda *a: None)
    rows = pipe.run()["rows"]
    bf16 = [r for r in rows if r["precision"] == "bf16"]
    assert len(bf16) == 1 and bf16[0]["status"] == "error" and "this CPU has no bf16" in bf16[0]["error"]


@pytest.mark.slow
@needs_bf16
def test_bf16_build_is_gated_against_openvino_fp32(onnx160_copy, coco8, tmp_path):
    from edgekit.errors import AccuracyGateError
    from edgekit.sweep.pipeline import Pipeline
    from edgekit.sweep.variants import Variant

    pipe = Pipeline(out=tmp_path, data=coco8, model=tmp_path / "unused.pt", strategies=["head"], imgsz=160,
                    max_map_drop=5.0, log=lambda *a: None)
    built = pipe.build(onnx160_copy, Variant("openvino", "bf16"), tmp_path)
    doc = json.loads((tmp_path / "openvino_bf16" / "model.json").read_text())
    gate = doc["accuracy_gate"]
    assert doc["status"] == "PASSED" and doc["precision_executed"] == "bf16"
    assert gate["baseline"] == {"backend": "openvino", "device": "cpu", "precision_executed": "fp32"}
    assert built["accuracy"]["map50_95"] == gate["map50_95"] and built["accuracy"]["precision_executed"] == "bf16"
    pipe.max_map_drop = -101.0  # no model can pass: the row must be FAILED, with the sidecar saying so
    with pytest.raises(AccuracyGateError, match="bf16 loses"):
        pipe.build(onnx160_copy, Variant("openvino", "bf16"), tmp_path / "again")
    assert json.loads((tmp_path / "again" / "openvino_bf16" / "model.json").read_text())["status"] == "FAILED"


# the INT8 gate's baseline ----------------------------------------------------------------------------
@pytest.mark.slow
def test_int8_gate_baseline_runs_on_the_jobs_backend_in_fp32(onnx160_copy, coco8, tmp_path):
    pytest.importorskip("nncf")
    from edgekit.quantize import quantize

    res = quantize(onnx160_copy, coco8, backend="openvino", calib_size=16, force=True, max_map_drop=None,
                   out_dir=tmp_path / "ov", log=lambda *a: None)
    side = json.loads(Path(res["artifact"]).with_suffix(".json").read_text())
    assert side["accuracy_gate"]["baseline"] == {"backend": "openvino", "device": "cpu", "precision_executed": "fp32"}
    assert side["precision_executed"] == "int8+fp32"
    cache = json.loads((tmp_path / "ov" / ".fp32-baseline.json").read_text())
    assert [k.split("|")[0] for k in cache] == ["openvino@cpu"]
