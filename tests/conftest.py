"""Shared fixtures: small real data and one export of the bundled YOLOv8n per test session."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")

ASSETS = Path(__file__).parent / "assets"
COCO8 = ASSETS / "coco8" / "data.yaml"


def _has(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


def pytest_collection_modifyitems(config, items):
    """Skip marked tests whose requirement is absent, with the reason."""
    skip_trt = pytest.mark.skip(reason="TensorRT library not installed (pip install 'edgekit[tensorrt]')")
    cuda = False
    if _has("torch"):
        try:
            import torch

            cuda = torch.cuda.is_available()
        except Exception:
            cuda = False
    skip_gpu = pytest.mark.skip(reason="no CUDA GPU on this machine")
    trt_ok = False
    if _has("tensorrt"):
        try:
            import tensorrt  # noqa: F401  (PyPI stubs fail here)

            trt_ok = True
        except Exception:
            trt_ok = False
    for item in items:
        if "tensorrt" in item.keywords and not trt_ok:
            item.add_marker(skip_trt)
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def coco8() -> Path:
    return COCO8


@pytest.fixture(scope="session")
def demo_data() -> Path:
    from edgekit.assets import demo_data

    return demo_data()


@pytest.fixture(scope="session")
def weights() -> Path:
    from edgekit.assets import demo_weights

    return demo_weights()


@pytest.fixture(scope="session")
def bus_jpg() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")
    if spec is None:
        pytest.skip("ultralytics not installed")
    return Path(spec.origin).parent / "assets" / "bus.jpg"


def _export(tmp_path_factory, weights, imgsz):
    pytest.importorskip("ultralytics")
    from edgekit.export import export_onnx

    out = tmp_path_factory.mktemp(f"onnx{imgsz}")
    return export_onnx(weights, out, imgsz=imgsz, log=lambda *a: None)


@pytest.fixture(scope="session")
def onnx320(tmp_path_factory, weights) -> Path:
    """The bundled COCO YOLOv8n exported at 320 (fixed batch 1), with its sidecar."""
    return _export(tmp_path_factory, weights, 320)


@pytest.fixture(scope="session")
def onnx640(tmp_path_factory, weights) -> Path:
    return _export(tmp_path_factory, weights, 640)


@pytest.fixture()
def copy_dataset(tmp_path):
    """Copy a dataset folder into tmp so a test can break it."""

    def _copy(yaml_path: Path) -> Path:
        dst = tmp_path / yaml_path.parent.name
        shutil.copytree(yaml_path.parent, dst)
        return dst / yaml_path.name

    return _copy


@pytest.fixture(scope="session")
def onnx160(tmp_path_factory, weights) -> Path:
    """The bundled COCO YOLOv8n exported at 160: the fastest model for quantization tests."""
    return _export(tmp_path_factory, weights, 160)


@pytest.fixture()
def onnx160_copy(onnx160, tmp_path) -> Path:
    """A private copy of the 160 export (model.onnx + model.json) that a test may write beside."""
    dst = tmp_path / "fp32"
    dst.mkdir()
    for p in onnx160.parent.glob("model.*"):
        shutil.copy2(p, dst / p.name)
    return dst / onnx160.name


@pytest.fixture(scope="session")
def int8_ir160(onnx160, tmp_path_factory) -> Path:
    """A tiny OpenVINO INT8 IR of the 160 export: nncf.quantize on 4 coco8 images, no accuracy gate."""
    pytest.importorskip("nncf")
    import json
    import warnings

    import nncf
    import openvino as ov

    from edgekit.data import load_dataset
    from edgekit.data.calibration import calibration_set

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cs = calibration_set(load_dataset(COCO8), (160, 160), size=4, force=True)
        q = nncf.quantize(ov.convert_model(str(onnx160)), cs.to_nncf(), subset_size=len(cs))
    out = tmp_path_factory.mktemp("int8_ir160")
    ov.save_model(q, str(out / "model.xml"), compress_to_fp16=False)
    doc = json.loads(onnx160.with_suffix(".json").read_text())
    doc["precision"] = "int8"
    (out / "model.json").write_text(json.dumps(doc))
    return out
