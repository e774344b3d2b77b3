"""What each backend declares (suffixes, devices, precisions, runner), and what iterates the registry."""
from __future__ import annotations

import numpy as np
import pytest

# variants_for, pinned to its outputs before the backends declared their own precisions: (target, installed
# backends, the CPU has BF16, --backends, --precisions, expected "backend:precision" rows in order)
INSTALLED = {"all": ("onnxruntime", "openvino", "tensorrt"), "ov": ("openvino",), "ort": ("onnxruntime",)}
PINNED = [
    ('cpu', 'all', True, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8 openvino:fp32 openvino:bf16 openvino:int8'),
    ('cpu', 'all', True, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'onnxruntime:fp32 onnxruntime:int8 openvino:fp32 openvino:bf16 openvino:int8'),
    ('cpu', 'all', False, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8 openvino:fp32 openvino:int8'),
    ('cpu', 'all', False, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'onnxruntime:fp32 onnxruntime:int8 openvino:fp32 openvino:bf16 openvino:int8'),
    ('cpu', 'ov', True, 'onnxruntime,openvino,tensorrt', None,
     'openvino:fp32 openvino:bf16 openvino:int8'),
    ('cpu', 'ov', True, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'openvino:fp32 openvino:bf16 openvino:int8'),
    ('cpu', 'ov', False, 'onnxruntime,openvino,tensorrt', None,
     'openvino:fp32 openvino:int8'),
    ('cpu', 'ov', False, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'openvino:fp32 openvino:bf16 openvino:int8'),
    ('cuda:0', 'all', True, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8 tensorrt:int8'),
    ('cuda:0', 'all', True, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'onnxruntime:fp32 onnxruntime:int8 tensorrt:fp16 tensorrt:int8'),
    ('cuda:0', 'all', False, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8 tensorrt:int8'),
    ('cuda:0', 'all', False, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'onnxruntime:fp32 onnxruntime:int8 tensorrt:fp16 tensorrt:int8'),
    ('cuda:0', 'ov', True, 'onnxruntime,openvino,tensorrt', None,
     ''),
    ('cuda:0', 'ov', True, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     ''),
    ('cuda:0', 'ov', False, 'onnxruntime,openvino,tensorrt', None,
     ''),
    ('cuda:0', 'ov', False, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     ''),
    ('GPU', 'all', True, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8 openvino:fp32 openvino:bf16 openvino:int8'),
    ('GPU', 'all', True, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'onnxruntime:fp32 onnxruntime:int8 openvino:fp32 openvino:fp16 openvino:bf16 openvino:int8'),
    ('GPU', 'all', False, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8 openvino:fp32 openvino:int8'),
    ('GPU', 'all', False, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'onnxruntime:fp32 onnxruntime:int8 openvino:fp32 openvino:fp16 openvino:bf16 openvino:int8'),
    ('GPU', 'ov', True, 'onnxruntime,openvino,tensorrt', None,
     'openvino:fp32 openvino:bf16 openvino:int8'),
    ('GPU', 'ov', True, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'openvino:fp32 openvino:fp16 openvino:bf16 openvino:int8'),
    ('GPU', 'ov', False, 'onnxruntime,openvino,tensorrt', None,
     'openvino:fp32 openvino:int8'),
    ('GPU', 'ov', False, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'openvino:fp32 openvino:fp16 openvino:bf16 openvino:int8'),
    ('cpu', 'all', True, 'openvino', 'bf16',
     'onnxruntime:fp32 openvino:bf16'),
    ('cpu', 'all', False, 'openvino', 'bf16',
     'onnxruntime:fp32 openvino:bf16'),
    ('cuda:0', 'all', True, 'openvino', 'bf16',
     ''),
    ('cuda:0', 'all', False, 'openvino', 'bf16',
     ''),
    ('GPU', 'all', True, 'openvino', 'bf16',
     'onnxruntime:fp32 openvino:bf16'),
    ('GPU', 'all', False, 'openvino', 'bf16',
     'onnxruntime:fp32 openvino:bf16'),
    ('cpu', 'all', True, 'tensorrt', None,
     'onnxruntime:fp32'),
    ('cpu', 'all', True, 'torch', None,
     'onnxruntime:fp32'),
    ('cpu', 'ov', True, 'tensorrt', None,
     ''),
    ('cpu', 'ov', True, 'torch', None,
     ''),
    ('cuda:0', 'all', True, 'tensorrt', None,
     'tensorrt:int8'),
    ('cuda:0', 'all', True, 'torch', None,
     ''),
    ('cuda:0', 'ov', True, 'tensorrt', None,
     ''),
    ('cuda:0', 'ov', True, 'torch', None,
     ''),
    ('GPU', 'all', True, 'tensorrt', None,
     'onnxruntime:fp32'),
    ('GPU', 'all', True, 'torch', None,
     'onnxruntime:fp32'),
    ('GPU', 'ov', True, 'tensorrt', None,
     ''),
    ('GPU', 'ov', True, 'torch', None,
     ''),
    ('cpu', 'ort', True, 'openvino', None,
     'onnxruntime:fp32'),
    ('cpu', 'ort', True, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8'),
    ('cpu', 'ort', True, 'tensorrt', None,
     'onnxruntime:fp32'),
    ('cuda:0', 'ort', True, 'openvino', None,
     ''),
    ('cuda:0', 'ort', True, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8'),
    ('cuda:0', 'ort', True, 'tensorrt', None,
     ''),
    ('GPU', 'ort', True, 'openvino', None,
     'onnxruntime:fp32'),
    ('GPU', 'ort', True, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8'),
    ('GPU', 'ort', True, 'tensorrt', None,
     'onnxruntime:fp32'),
]


@pytest.mark.parametrize("target, installed, bf16, backends, precisions, expected", PINNED)
def test_variants_for_pinned(monkeypatch, target, installed, bf16, backends, precisions, expected):
    import edgekit._imports as imports
    from edgekit.sweep.variants import variants_for
    from edgekit.runtime.backends import openvino as ovb

    pytest.importorskip("openvino")
    real = imports.available
    have = INSTALLED[installed]
    monkeypatch.setattr(imports, "available",
                        lambda m: m in have if m in INSTALLED["all"] else real(m))
    monkeypatch.setattr(ovb, "capabilities", lambda core, dev: ["FP32", "INT8"] + (["BF16"] if bf16 else []))
    got = variants_for(target, backends.split(","), precisions.split(",") if precisions else None)
    assert " ".join(f"{v.backend}:{v.precision}" for v in got) == expected


# pick_backend: every suffix each backend declares, and the device preference for .onnx ------------
@pytest.mark.parametrize("name, device, expected", [
    ("m.onnx", "cpu", "onnxruntime"), ("m.ONNX", "cpu", "onnxruntime"), ("m.onnx", "cuda:0", "onnxruntime"),
    ("m.onnx", "GPU", "openvino"), ("m.onnx", "GPU.1", "openvino"), ("m.onnx", "NPU", "openvino"),
    ("m.onnx", "AUTO", "openvino"), ("m.xml", "cpu", "openvino"), ("m.xml", "GPU", "openvino"),
    ("m.engine", "cuda:0", "tensorrt"), ("m.plan", "cuda", "tensorrt"), ("m.engine", "cpu", "tensorrt"),
    ("m.pt", "cpu", "torch"), ("m.pth", "cuda:1", "torch"),
])
def test_pick_backend_for_every_suffix(name, device, expected):
    from edgekit.runtime.backends import get_backend, pick_backend

    assert pick_backend(name, device) == expected
    assert name.lower().endswith(get_backend(expected).suffixes)


def test_pick_backend_covers_every_declared_suffix_and_folders(tmp_path):
    from edgekit.runtime.backends import pick_backend, registered

    for name, cls in registered().items():
        for s in cls.suffixes:
            assert pick_backend(f"m{s}", cls.devices_impl()[0] if name == "openvino" else "cpu") in registered()
    assert pick_backend(tmp_path) == "openvino"  # an OpenVINO IR folder


def test_pick_backend_prefers_an_installed_backend_for_onnx(monkeypatch):
    import edgekit._imports as imports
    from edgekit.runtime.backends import pick_backend

    monkeypatch.setattr(imports, "available", lambda m: m != "onnxruntime")
    assert pick_backend("m.onnx", "cpu") == "openvino"
    monkeypatch.setattr(imports, "available", lambda m: False)
    assert pick_backend("m.onnx", "cpu") == "onnxruntime"  # neither: the first registered names its extra


@pytest.mark.parametrize("name", ["m.mlmodel", "m", "m.json"])  # .tflite: the litert backend reads it (issue N)
def test_bad_input_pick_backend_unknown_suffix(name):
    from edgekit.errors import ArtifactError
    from edgekit.runtime.backends import pick_backend

    with pytest.raises(ArtifactError, match=rf"^{name}: unknown model format '.*' \(expected .*\.onnx.*\.xml"):
        pick_backend(name)


# device strings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("device, parsed", [
    ("cpu", ("cpu", None)), ("cuda", ("cuda", None)), ("cuda:1", ("cuda", 1)), ("GPU", ("gpu", None)),
    ("GPU.1", ("gpu", 1)), ("gpu:2", ("gpu", 2)), ("NPU", ("npu", None)), ("AUTO", ("auto", None)),
    ("HETERO:GPU,CPU", ("hetero:gpu,cpu", None)), ("cuda:x", ("cuda:x", None)),
])
def test_parse_device(device, parsed):
    from edgekit.runtime.devices import parse_device

    assert parse_device(device) == parsed


@pytest.mark.parametrize("device, ov", [("cpu", "CPU"), ("gpu:1", "GPU.1"), ("GPU.0", "GPU.0"), ("npu", "NPU"),
                                        ("HETERO:GPU,CPU", "HETERO:GPU,CPU")])
def test_openvino_device_names(device, ov):
    from edgekit.runtime.backends.openvino import ov_device

    assert ov_device(device) == ov


@pytest.mark.parametrize("backend, device", [("onnxruntime", "NPU"), ("onnxruntime", "cuda:x"),
                                             ("tensorrt", "cpu"), ("torch", "GPU"), ("openvino", "cuda:0")])
def test_bad_input_backend_refuses_a_device(backend, device):
    from edgekit.errors import ArtifactError
    from edgekit.runtime.backends import get_backend
    from edgekit.runtime.backends.openvino import ov_device
    from edgekit.runtime.backends.tensorrt import cuda_index
    from edgekit.runtime.backends.torch import torch_device

    cls = get_backend(backend)
    assert not cls.runs_on(device) and cls.precisions(device) == ()
    check = {"onnxruntime": lambda d: cls("m.onnx", d).providers(), "tensorrt": cuda_index, "torch": torch_device,
             "openvino": ov_device}[backend]
    with pytest.raises(ArtifactError, match=f"device '{device}'"):
        check(device)


# facts that never crash ------------------------------------------------------------------------
def test_devices_and_doctor_without_the_libraries(monkeypatch):
    import edgekit._imports as imports
    from edgekit.runtime.backends import registered

    monkeypatch.setattr(imports, "available", lambda m: False)
    for name, cls in registered().items():
        assert cls.devices() == [] and cls.installed() is False, name
        d = cls.describe()
        assert d["installed"] is False and d["install"].startswith("pip install"), name


def test_precisions_each_backend_executes():
    from edgekit.runtime.backends import get_backend

    assert get_backend("onnxruntime").precisions("cpu") == ("fp32", "int8")
    assert get_backend("tensorrt").precisions("cuda:0") == ("fp32", "fp16", "int8")
    assert get_backend("tensorrt").precisions("cpu") == ()
    assert get_backend("torch").precisions("cpu") == ("fp32",)
    assert get_backend("torch").precisions("cuda:0") == ("fp32", "fp16")


def test_openvino_bf16_follows_the_cpu(monkeypatch):
    pytest.importorskip("openvino")
    from edgekit.runtime.backends import openvino as ovb

    monkeypatch.setattr(ovb, "capabilities", lambda core, dev: ["FP32", "INT8", "BF16"])
    assert ovb.OpenVINOBackend.precisions("cpu") == ("fp32", "int8", "bf16")
    monkeypatch.setattr(ovb, "capabilities", lambda core, dev: ["FP32", "INT8"])
    assert ovb.OpenVINOBackend.precisions("cpu") == ("fp32", "int8")
    assert ovb.OpenVINOBackend.precisions("cuda:0") == ()


# batch padding, owned by Backend, used by Engine and the OpenVINO runner --------------------------------
def test_openvino_runner_fixed_batch_path(onnx160):
    """A batch-1 model: the AsyncInferQueue runner splits 3 images into 3 requests and returns them in order."""
    pytest.importorskip("openvino")
    from edgekit import Engine
    from edgekit.assets import demo_images
    from edgekit.runtime.concurrency import make_runner

    with Engine(onnx160, backend="openvino") as eng:
        assert eng.backend.fixed_batch == 1
        blobs = [eng.preprocess([eng.decode(p) for p in demo_images()[i:i + n]])[0] for i, n in ((0, 3), (3, 1),
                                                                                              (4, 2))]
        ref = [eng.infer(b) for b in blobs]
    with make_runner(onnx160, "cpu", "openvino", streams=2) as runner:
        assert type(runner).__name__ == "OpenVINORunner" and runner.engine.backend.fixed_batch == 1
        out = list(runner.map((b, i) for i, b in enumerate(blobs)))
    assert [ctx for _, ctx in out] == [0, 1, 2]
    for (raw, _), want, b in zip(out, ref, blobs):
        assert raw.shape == want.shape and raw.shape[0] == b.shape[0]
        np.testing.assert_allclose(raw, want, atol=1e-3)


def test_backend_chunks_pad_and_unpad():
    from edgekit.runtime.backends.base import Backend

    b = Backend("m.onnx")
    b._batch = 4
    blob = np.arange(6 * 3 * 2 * 2, dtype=np.float32).reshape(6, 3, 2, 2)
    chunks = b.chunks(blob)
    assert [c.shape[0] for c in chunks] == [4, 4] and not chunks[1][2:].any()
    assert np.array_equal(b.unpad(chunks, 6), blob)
    b._batch = None
    assert len(b.chunks(blob)) == 1 and b.chunks(blob)[0] is blob
