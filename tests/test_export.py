"""ONNX export: sidecar contents, checks, parity, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.cli.main import main
from edgekit.io import sha256_file

pytest.importorskip("ultralytics")


def test_sidecar_describes_the_artifact(onnx320, weights):
    import onnx

    doc = json.loads(onnx320.with_suffix(".json").read_text())
    assert doc["format"] == "edgekit-sidecar/1"
    assert doc["arch"] == "yolov8n" and doc["family"] == "yolov8"
    assert doc["nc"] == 80 == len(doc["names"]) and doc["names"][0] == "person"
    assert doc["imgsz"] == [320, 320] and doc["stride"] == 32
    assert doc["letterbox"]["pad_value"] == 114 and doc["letterbox"]["auto"] is False
    assert doc["output"]["layout"] == "yolo" and doc["output"]["shape"] == [1, 84, 2100]
    assert doc["source"]["sha256"] == sha256_file(weights)
    assert {"edgekit", "torch", "ultralytics", "onnx"} <= set(doc["versions"])
    m = onnx.load(str(onnx320))
    onnx.checker.check_model(m)
    assert doc["opset"] == next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    assert doc["parity"]["passed"] and doc["parity"]["images"] >= 1
    assert doc["parity"]["max_abs_diff_scores"] < 1e-3 and doc["parity"]["max_abs_diff_boxes_px"] < 0.05


@pytest.mark.slow
def test_export_cli_dynamic_batch(weights, tmp_path, capsys):
    code = main(["export", str(weights), "--imgsz", "160", "--dynamic", "-o", str(tmp_path)])
    assert code == 0
    doc = json.loads((tmp_path / "model.json").read_text())
    assert doc["dynamic"] is True and doc["input"]["batch"] is None
    from edgekit import Engine

    eng = Engine(tmp_path / "model.onnx")
    blob = np.random.default_rng(0).uniform(0, 1, (3, 3, 160, 160)).astype(np.float32)
    out = eng.infer(blob)
    assert out.shape[0] == 3
    assert np.allclose(out[1:2], eng.infer(blob[1:2]), atol=1e-4)
    assert "parity vs PyTorch" in capsys.readouterr().err


def test_parity_failure_is_an_error(weights, tmp_path, capsys):
    code = main(["export", str(weights), "--imgsz", "160", "--parity-tol", "0", "-o", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "differs from PyTorch" in err and "over the tolerance 0" in err


def test_bad_weights(tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    assert main(["export", str(missing)]) == 2
    assert f"{missing}: weights file not found" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert main(["export", str(junk), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{junk}: not a loadable Ultralytics checkpoint" in err and err.count("\n") == 1


def test_openvino_conversion_keeps_sidecar_and_outputs(onnx320, tmp_path, bus_jpg):
    pytest.importorskip("openvino")
    from edgekit import Engine
    from edgekit.export.openvino import onnx_to_openvino

    folder = onnx_to_openvino(onnx320, tmp_path / "ov", log=lambda *a: None)
    doc = json.loads((folder / "model.json").read_text())
    assert doc["backend"] == "openvino" and doc["names"][0] == "person"
    assert doc["precision"] == "fp32" and doc["precision_executed"] == "fp32"  # not bf16, on any CPU
    a, b = Engine(folder)(bus_jpg), Engine(onnx320)(bus_jpg)
    assert len(a) == len(b) and np.allclose(a.boxes, b.boxes, atol=0.05)
