"""mAP through Engine agrees with Ultralytics' own val of the same file."""
from __future__ import annotations

import json

import pytest

from edgekit.cli.main import main


def test_eval_json_and_agreement_with_ultralytics_val(onnx320, coco8, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(onnx320), "--data", str(coco8), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["images"] == 8 and r["evaluator"] in ("faster-coco-eval", "pycocotools")
    assert r["precision"] == "fp32" and r["precision_executed"] == "fp32"
    assert 0.05 < r["map50_95"] < r["map50"] <= 1.0
    printed = capsys.readouterr().out
    assert f"mAP50-95 {r['map50_95']:.4f}" in printed
    pytest.importorskip("ultralytics")
    from ultralytics import YOLO

    from edgekit.data import load_dataset

    ul_yaml = load_dataset(coco8).to_ultralytics_yaml(tmp_path / "abs.yaml")
    ref = YOLO(str(onnx320), task="detect").val(data=str(ul_yaml), imgsz=320, batch=1, plots=False,
                                               verbose=False, device="cpu", project=str(tmp_path))
    # COCO-style vs Ultralytics' AP interpolation differ slightly; 8 images make it noisier than coco128
    assert abs(ref.box.map - r["map50_95"]) < 0.02
    assert abs(ref.box.map50 - r["map50"]) < 0.03


def test_eval_openvino_backend_agrees(onnx320, coco8):
    pytest.importorskip("openvino")
    from edgekit.eval import evaluate

    a = evaluate(onnx320, coco8, backend="onnxruntime", progress=False)
    b = evaluate(onnx320, coco8, backend="openvino", progress=False)
    assert a["precision_executed"] == b["precision_executed"] == "fp32"
    assert abs(a["map50_95"] - b["map50_95"]) < 0.002  # both FP32 (OpenVINO's CPU default is bf16 where it can)


def test_help_lists_commands_and_doctor(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for cmd in ("export", "eval", "doctor"):
        assert cmd in text
    out = tmp_path / "doctor.json"
    assert main(["doctor", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["backends"]["onnxruntime"]["installed"] is True
    assert r["backends"]["tensorrt"]["install"] == "pip install 'edgekit[tensorrt]'"
    assert r["cpu"]["cores"] >= 1
