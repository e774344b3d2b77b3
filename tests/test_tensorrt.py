"""TensorRT around the library: calibrator batching and cache (fake base class), engine/device checks, Q/DQ input.

Tests that need TensorRT itself are marked `tensorrt` and skip where it is missing (PyPI ships stubs only).
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from edgekit.data import load_dataset
from edgekit.data.calibration import calibration_set
from edgekit.errors import ArtifactError
from edgekit.quantize.tensorrt import explicit_quantization, make_calibrator
from edgekit.runtime.backends import pick_backend
from edgekit.runtime.backends.tensorrt import TensorRTBackend, check_engine, same_version


class FakeCalibratorBase:
    """Stands in for tensorrt.IInt8EntropyCalibrator2: the factory must call its __init__ and override the rest."""

    def __init__(self):
        self.base_initialized = True


class FakeDevice:
    def __init__(self):
        self.batches = []

    def __call__(self, batch):
        self.batches.append(batch.copy())
        return 0x1000 + len(self.batches)


@pytest.fixture(scope="module")
def calib(demo_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return calibration_set(load_dataset(demo_data), (64, 64), size=10, seed=0, force=True)


def test_calibrator_batches(calib, tmp_path):
    dev = FakeDevice()
    c = make_calibrator(calib, tmp_path / "calib.cache", batch_size=4, base=FakeCalibratorBase, to_device=dev,
                        log=lambda m: None)
    assert isinstance(c, FakeCalibratorBase) and c.base_initialized
    assert c.get_batch_size() == 4
    ptrs = [c.get_batch(["images"]) for _ in range(4)]
    assert ptrs[:3] == [[0x1001], [0x1002], [0x1003]] and ptrs[3] is None
    assert [b.shape for b in dev.batches] == [(4, 3, 64, 64)] * 3  # 10 images: the last batch is padded
    assert all(b.dtype == np.float32 for b in dev.batches)
    np.testing.assert_array_equal(dev.batches[0][0], calib.transform(calib.items[0])[0])
    np.testing.assert_array_equal(dev.batches[2][2], calib.transform(calib.items[0])[0])
    assert c.batches_served == 3


def test_calibrator_cache_file(calib, tmp_path):
    cache = tmp_path / "sub" / "calib.cache"
    c = make_calibrator(calib, cache, base=FakeCalibratorBase, to_device=FakeDevice(), log=lambda m: None)
    assert c.read_calibration_cache() is None
    c.write_calibration_cache(memoryview(b"TRT-8.6.1-EntropyCalibration2\nimages: 3c010a14\n"))
    assert cache.read_bytes().startswith(b"TRT-8.6.1")
    again = make_calibrator(calib, cache, base=FakeCalibratorBase, to_device=FakeDevice(), log=lambda m: None)
    assert again.read_calibration_cache() == cache.read_bytes()
    assert [p.name for p in cache.parent.iterdir()] == ["calib.cache"]  # atomic write left no temp file


def test_unknown_calibrator_algorithm_is_refused(calib, tmp_path, monkeypatch):
    import sys
    import types

    fake = types.SimpleNamespace(IInt8EntropyCalibrator2=FakeCalibratorBase, IInt8MinMaxCalibrator=FakeCalibratorBase)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    with pytest.raises(ArtifactError, match="calibrator 'legacy' is not available"):
        make_calibrator(calib, tmp_path / "c", algorithm="legacy", to_device=FakeDevice())


def test_explicit_quantization_from_tensorrt_10():
    assert explicit_quantization("10.0.1.6") and explicit_quantization("10.13.0")
    assert not explicit_quantization("8.6.1") and not explicit_quantization("9.3.0")


def _doc(version="10.3.0.26", cc="8.9", gpu="NVIDIA L4"):
    return {"tensorrt": {"version": version, "compute_capability": cc, "gpu": gpu, "hardware_compatibility": "none"}}


def test_engine_check_accepts_the_same_tensorrt_and_gpu():
    check_engine(_doc(), "10.3.0.26", "8.9", "m.engine")
    check_engine(_doc(), "10.3.0", "8.9", "m.engine")  # build number may differ
    assert same_version("10.3.0.26", "10.3.0.30") and not same_version("10.3.0", "10.4.0")


@pytest.mark.parametrize("running,cc,msg", [
    ("10.4.0", "8.9", "m.engine: engine built with TensorRT 10.3.0.26, this is TensorRT 10.4.0: rebuild it here"),
    ("10.3.0.26", "9.0", "m.engine: engine built for compute capability 8.9 (NVIDIA L4), this GPU is 9.0: rebuild"),
])
def test_engine_check_refuses_a_mismatch_in_one_line(running, cc, msg):
    with pytest.raises(ArtifactError) as e:
        check_engine(_doc(), running, cc, "m.engine")
    assert str(e.value).startswith(msg) and "\n" not in str(e.value)


def test_engine_without_provenance_warns():
    with pytest.warns(UserWarning, match="no 'tensorrt' section"):
        check_engine({}, "10.3.0", "8.9", "m.engine")


def test_backend_refuses_before_deserializing(tmp_path, monkeypatch):
    """A mismatched engine never reaches TensorRT: the check runs on the sidecar first."""
    from edgekit.runtime import Engine
    from edgekit.runtime.meta import write_sidecar

    eng = tmp_path / "model.engine"
    eng.write_bytes(b"not really a plan")
    write_sidecar(eng, {"names": ["a", "b"], "imgsz": [64, 64], "precision": "int8", "backend": "tensorrt",
                        **_doc(version="10.0.1")})
    assert pick_backend(eng) == "tensorrt"
    monkeypatch.setattr(TensorRTBackend, "running", lambda self: ("10.3.0", "8.9"))
    with pytest.raises(ArtifactError, match="built with TensorRT 10.0.1, this is TensorRT 10.3.0"):
        Engine(eng, device="cuda:0")


def test_trt_int8_input_is_symmetric_qdq(onnx160, coco8, tmp_path):
    """TensorRT >= 10 builds INT8 from this Q/DQ ONNX: int8, zero points 0, no Q/DQ on the kept-float decode."""
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import numpy_helper

    from edgekit.quantize.onnxruntime import graph_nodes, preprocess, quantize_qdq
    from edgekit.quantize.recipe import recipe_for

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cs = calibration_set(load_dataset(coco8), (160, 160), 4, force=True)
    pre = preprocess(onnx160, tmp_path / "pre.onnx")
    keep = recipe_for("yolov8").keep_float.match(graph_nodes(pre))
    q = onnx.load(str(quantize_qdq(pre, tmp_path / "q.onnx", cs, "entropy", keep, ["Conv", "MatMul"])))
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    for n in q.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2:
            assert not np.any(inits[n.input[2]]) and inits[n.input[2]].dtype == np.int8
    consumers = {i: n.name for n in q.graph.node for i in n.input}
    dq_outputs = {o for n in q.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert not any(consumers.get(o) in keep for o in dq_outputs)  # the DFL conv and decode see no Q/DQ
    producer = {o: n.op_type for n in q.graph.node for o in n.output}
    assert not any(producer.get(n.input[0]) == "Conv" for n in q.graph.node if n.op_type == "QuantizeLinear")


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_fp16_engine_roundtrip(onnx160, tmp_path):
    from edgekit.quantize.tensorrt import build_engine
    from edgekit.runtime import Engine
    from edgekit.runtime.backends.tensorrt import gpu_info
    from edgekit.runtime.meta import read_sidecar, write_sidecar

    import tensorrt as trt

    eng = build_engine(onnx160, tmp_path / "model.engine", "fp16", log=lambda m: None)
    doc = read_sidecar(onnx160)
    doc.update({"precision": "fp16", "backend": "tensorrt",
                "tensorrt": {"version": trt.__version__, **gpu_info(0), "hardware_compatibility": "none"}})
    write_sidecar(eng, {k: v for k, v in doc.items() if k != "format"})
    with Engine(eng, device="cuda:0") as e:
        blob = np.zeros((1, 3, 160, 160), np.float32)
        assert e.infer(blob).shape[:2] == (1, 84)
    assert json.loads(eng.with_suffix(".json").read_text())["tensorrt"]["version"] == trt.__version__
