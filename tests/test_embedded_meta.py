"""Self-describing artifacts: metadata inside ONNX and OpenVINO IR files, read when no sidecar is beside them."""
from __future__ import annotations

import shutil

import numpy as np
import pytest


@pytest.mark.slow
def test_ultralytics_openvino_ir_loads_without_sidecar(weights, bus_jpg, tmp_path):
    """Ultralytics' own export(format='openvino'): no model.json, and no metadata.yaml either (rt_info only)."""
    pytest.importorskip("openvino")
    from edgekit import Engine
    from edgekit._ultralytics import ultralytics
    from edgekit.runtime.meta import load_meta

    ul = ultralytics()
    local = tmp_path / "yolov8n.pt"
    shutil.copy2(weights, local)
    ir_dir = ul.YOLO(str(local)).export(format="openvino", imgsz=160, verbose=False)
    ref = ul.YOLO(ir_dir, task="detect").predict(str(bus_jpg), imgsz=160, conf=0.25, iou=0.7, verbose=False)[0]
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("yolov8n.xml", "yolov8n.bin"):
        shutil.copy2(f"{ir_dir}/{f}", bare / f)
    assert not (bare / "metadata.yaml").exists() and not (bare / "yolov8n.json").exists()
    meta = load_meta(bare)
    assert meta.imgsz == (160, 160) and meta.nc == 80 and meta.names[0] == "person" and meta.pad_value == 114
    import openvino as ov

    from edgekit.runtime.backends.openvino import capabilities

    # Ultralytics leaves OpenVINO's default execution precision: bf16 where the CPU has it, f32 elsewhere
    default = "bf16" if "BF16" in capabilities(ov.Core(), "CPU") else None
    with Engine(bare, **({"precision": default} if default else {})) as e:
        det = e(bus_jpg)
    assert len(det) == len(ref.boxes) > 0
    order = np.argsort(-det.scores, kind="stable")
    np.testing.assert_array_equal(det.class_ids[order], ref.boxes.cls.numpy().astype(np.int64))
    np.testing.assert_allclose(det.boxes[order], ref.boxes.xyxy.numpy(), atol=0.05)


def test_exported_onnx_carries_its_sidecar(onnx160_copy):
    """edgekit export writes the sidecar into metadata_props: the file alone loads the same metadata."""
    from edgekit.runtime.embedded_meta import KEY, embed_onnx
    from edgekit.runtime.meta import from_sidecar, load_meta, read_sidecar

    import onnx

    doc = read_sidecar(onnx160_copy)
    embed_onnx(onnx160_copy)  # idempotent: the export already did it
    props = [p.key for p in onnx.load(str(onnx160_copy)).metadata_props]
    assert props.count(KEY) == 1
    onnx160_copy.with_suffix(".json").unlink()
    got = load_meta(onnx160_copy)
    assert got == from_sidecar(doc) and got.raw["source"]["sha256"] == doc["source"]["sha256"]


def test_openvino_conversion_carries_model_info(onnx160_copy, tmp_path):
    """onnx_to_openvino writes rt_info['model_info'] (Model API keys + our sidecar); the IR alone loads."""
    pytest.importorskip("openvino")
    from edgekit import Engine
    from edgekit.export.openvino import onnx_to_openvino
    from edgekit.runtime.embedded_meta import rt_info
    from edgekit.runtime.meta import load_meta

    out = onnx_to_openvino(onnx160_copy, tmp_path / "ov", log=lambda *a: None)
    info = rt_info(out / "model.xml")["model_info"]
    assert info["model_type"] == "YOLO" and info["labels"].split()[9] == "traffic_light"
    with_side = load_meta(out)
    (out / "model.json").unlink()
    alone = load_meta(out)
    assert alone == with_side and alone.names[9] == "traffic light" and alone.raw["backend"] == "openvino"
    with Engine(out) as e:
        assert len(e(np.full((64, 64, 3), 114, np.uint8))) == 0


@pytest.mark.parametrize("content,msg", [
    ('<net><layers/><rt_info><model_info><labels value="a b"/></model_info></rt_info></net>', "no fixed image size"),
    ('<net><layers/><rt_info><model_info><edgekit_sidecar value="{oops"/></model_info></rt_info></net>',
     "malformed embedded metadata"),
    ("<net><layers", "not a readable OpenVINO IR"),
])
def test_bad_input_embedded_ir_metadata(tmp_path, content, msg):
    from edgekit.errors import ArtifactError
    from edgekit.runtime.meta import load_meta

    xml = tmp_path / "model.xml"
    xml.write_text(content)
    with pytest.raises(ArtifactError, match=msg) as e:
        load_meta(xml)
    assert str(xml) in str(e.value) and e.value.exit_code == 2


def test_ovc_ir_of_an_edgekit_onnx_inherits_names_not_precision(onnx160_copy, tmp_path):
    """ovc carries the ONNX metadata_props into rt_info['framework']: names come along, precision is not claimed."""
    ov = pytest.importorskip("openvino")
    from edgekit.runtime.meta import load_meta

    ov.save_model(ov.convert_model(str(onnx160_copy)), str(tmp_path / "ovc" / "model.xml"))
    meta = load_meta(tmp_path / "ovc")
    assert meta.names == load_meta(onnx160_copy).names and meta.imgsz == (160, 160)
    assert meta.precision == "unknown"
