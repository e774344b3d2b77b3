"""Bad artifacts and sidecars end in one line naming the file and the key, with exit code 2."""
from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("onnx")

GOOD = {"names": ["a", "b"], "imgsz": [64, 64], "stride": 32, "output": {"layout": "yolo"}, "input": {"batch": 1}}


def run_cli(capsys, *argv):
    from edgekit.cli.main import main

    code = main(list(map(str, argv)))
    out = capsys.readouterr()
    return code, out.out, out.err


def _flatten_onnx(path):
    """A valid ONNX that is not a detector: (1, 3, 64, 64) -> Flatten -> (1, 12288)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 12288])
    graph = helper.make_graph([helper.make_node("Flatten", ["images"], ["output0"])], "flat", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _case(name, tmp, onnx160):
    """Build the broken artifact for a case; returns its path."""
    d = tmp / name
    d.mkdir()
    m = d / "model.onnx"
    side = d / "model.json"
    real = json.loads(onnx160.with_suffix(".json").read_text())
    if name == "not-a-detector":
        _flatten_onnx(m)
        side.write_text(json.dumps(GOOD))
    elif name == "garbage-onnx-no-sidecar":
        m.write_bytes(b"\x08\x07 this is not protobuf \xff\xfe" * 10)
    elif name == "openvino-garbage-xml":
        m = d / "model.xml"
        m.write_text("<net name='x'><layers>garbage")
        (d / "model.bin").write_bytes(b"\0" * 16)
        side.write_text(json.dumps(GOOD))
    else:
        shutil.copy2(onnx160, m)
        doc = {"imgsz-mismatch": dict(real, imgsz=[320, 320]), "imgsz-zero": dict(real, imgsz=0),
               "names-null": dict(real, names=None), "sidecar-list": [real],
               "names-mismatch": {k: v for k, v in dict(real, names=["a", "b", "c"]).items() if k != "nc"},
               "layout-unknown": dict(real, output={"layout": "ssd"}),
               "sidecar-not-json": None}[name]
        side.write_text("{names: [" if doc is None else json.dumps(doc))
    return m


CASES = [  # case, command, message fragment (after the file name)
    ("not-a-detector", "bench", "model.onnx: output shape (1, 12288) has rank 2, a detector's has rank 3"),
    ("garbage-onnx-no-sidecar", "eval", "model.onnx: not a readable ONNX model ("),
    ("imgsz-mismatch", "bench",
     "model.onnx: the model's input is 160x160 but its metadata says imgsz 320x320 (key 'imgsz')"),
    ("imgsz-zero", "eval", "model.json: key 'imgsz': expected a positive integer, got 0"),
    ("names-null", "bench", "model.json: key 'names': expected a non-empty list of class names, got null"),
    ("sidecar-list", "eval", "model.json: expected a JSON object (edgekit sidecar), got a JSON list"),
    ("names-mismatch", "bench", "does not fit layout 'yolo' with 3 classes (key 'names'): expected 7 on axis 1"),
    ("layout-unknown", "bench", "model.json: key 'output.layout': expected one of yolo, end2end, rtdetr, nas, got 'ssd'"),
    ("sidecar-not-json", "eval", "model.json: malformed sidecar (not JSON:"),
    ("openvino-garbage-xml", "bench", "model.xml: OpenVINO cannot read this model: Unable to read the model"),
]


@pytest.mark.parametrize("case, command, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_artifact(capsys, tmp_path, onnx160, coco8, case, command, message):
    if case.startswith("openvino"):
        pytest.importorskip("openvino")
    artifact = _case(case, tmp_path, onnx160)
    extra = ["--data", coco8] if command == "eval" else ["--iters", "1", "--warmup", "0"]
    if case.startswith("openvino"):
        extra += ["--backend", "openvino"]
    code, _, err = run_cli(capsys, command, artifact, *extra)
    line = err.strip().splitlines()[-1] if err.strip() else ""
    assert code == 2, err
    assert line.startswith(f"edgekit {command}: error: {artifact.parent}") and message in line, line
    assert "Exception from src" not in line


def test_good_sidecar_still_loads(onnx160):
    from edgekit import Engine

    eng = Engine(onnx160)
    assert eng.meta.imgsz == (160, 160) and eng.meta.nc == 80
