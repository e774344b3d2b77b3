"""The shared runtime: letterbox, decode + NMS and Engine, checked against Ultralytics and torchvision."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgekit import Engine
from edgekit.runtime.postprocess import nms, postprocess
from edgekit.runtime.preprocess import letterbox, preprocess

BACKENDS = [b for b in ("onnxruntime", "openvino") if __import__("importlib").util.find_spec(b)]


def test_import_pulls_no_torch_or_ultralytics():
    code = "import sys, edgekit; from edgekit import Engine; print(sorted(m for m in ('torch','ultralytics') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("shape", [(480, 640), (640, 480), (427, 640), (333, 500), (1080, 810), (100, 100)])
def test_letterbox_matches_ultralytics(shape):
    pytest.importorskip("ultralytics")
    from ultralytics.data.augment import LetterBox

    img = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    ours, info = letterbox(img, (320, 320))
    theirs = LetterBox((320, 320), auto=False, stride=32)(image=img)
    assert ours.shape == theirs.shape == (320, 320, 3)
    assert np.array_equal(ours, theirs)
    assert info.gain == pytest.approx(min(320 / shape[0], 320 / shape[1]))  # scaled up too: (100, 100) -> 3.2
    assert info.pad_left + round(shape[1] * info.gain) <= 320 and info.pad_top + round(shape[0] * info.gain) <= 320


def test_nms_matches_torchvision():
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 300, (500, 2)).astype(np.float32)
    wh = rng.uniform(5, 80, (500, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.uniform(0, 1, 500).astype(np.float32)
    ours = nms(boxes, scores, 0.5)
    ref = tv.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).numpy()
    assert np.array_equal(ours, ref)
    assert np.array_equal(nms(boxes, scores, 0.5, max_keep=7), ref[:7])


@pytest.mark.parametrize("multi_label", [False, True])
def test_postprocess_matches_ultralytics_nms(multi_label):
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from ultralytics.utils.nms import non_max_suppression

    rng = np.random.default_rng(2)
    n, nc = 2100, 6
    raw = np.zeros((1, 4 + nc, n), np.float32)
    raw[0, :2] = rng.uniform(0, 320, (2, n))
    raw[0, 2:4] = rng.uniform(4, 90, (2, n))
    raw[0, 4:] = rng.uniform(0, 1, (nc, n)) ** 6
    _, info = letterbox(np.zeros((320, 320, 3), np.uint8), (320, 320))
    ours = postprocess(raw, [info], [str(i) for i in range(nc)], conf=0.05, iou=0.6, max_det=100,
                       multi_label=multi_label)[0]
    ref = non_max_suppression(torch.from_numpy(raw), 0.05, 0.6, multi_label=multi_label, max_det=100)[0].numpy()
    assert len(ours) == len(ref) > 10
    assert np.allclose(ours.boxes, ref[:, :4].clip(0, 320), atol=1e-3)  # ours are clipped to the image
    assert np.allclose(ours.scores, ref[:, 4], atol=1e-6)
    assert np.array_equal(ours.class_ids, ref[:, 5].astype(int))


@pytest.mark.slow
def test_engine_on_bus_matches_ultralytics_predict(onnx640, bus_jpg):
    from ultralytics import YOLO

    dets = Engine(onnx640)(bus_jpg)
    assert dets.labels.count("bus") == 1 and dets.labels.count("person") >= 4
    ref = YOLO(str(onnx640), task="detect").predict(str(bus_jpg), verbose=False)[0].boxes
    assert len(ref) == len(dets)
    # match each reference box to ours by class and overlap; within 2 px
    for box, c in zip(ref.xyxy.numpy(), ref.cls.numpy().astype(int)):
        same = dets.boxes[dets.class_ids == c]
        assert np.abs(same - box).max(1).min() <= 2.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_engine_inputs_and_backends_agree(onnx320, bus_jpg, backend):
    import cv2

    eng = Engine(onnx320, backend=backend)
    img = cv2.imread(str(bus_jpg))
    a, b = eng(bus_jpg), eng(img)
    assert np.array_equal(a.boxes, b.boxes)
    many = eng([bus_jpg, img, img[:, ::-1].copy()])
    assert len(many) == 3 and np.allclose(many[0].boxes, a.boxes, atol=0.5)
    ref = Engine(onnx320, backend="onnxruntime")(img)
    assert len(ref) == len(a) and np.allclose(np.sort(ref.scores), np.sort(a.scores), atol=2e-3)
    assert (a.boxes[:, 2] <= img.shape[1]).all() and (a.boxes[:, 3] <= img.shape[0]).all()


def test_engine_rejects_bad_arrays(onnx320):
    eng = Engine(onnx320)
    with pytest.raises(ValueError, match="HWC uint8 BGR"):
        eng(np.zeros((10, 10, 3), np.float32))


def test_preprocess_blob_layout():
    img = np.zeros((100, 200, 3), np.uint8)
    img[..., 2] = 255  # red in BGR
    blob, infos = preprocess([img], (64, 64))
    assert blob.shape == (1, 3, 64, 64) and blob.dtype == np.float32
    assert blob[0, 0, 32, 32] == 1.0 and blob[0, 2, 32, 32] == 0.0  # RGB order
    assert abs(blob[0, 0, 0, 0] - 114 / 255) < 1e-6  # padding
    assert infos[0].gain == 0.32 and infos[0].pad_top == 16


def test_missing_backend_names_the_extra(onnx320, monkeypatch, capsys):
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "onnxruntime":
            raise ModuleNotFoundError("No module named 'onnxruntime'")
        return real(name, *a, **k)

    monkeypatch.setattr("edgekit._imports.importlib.import_module", fake)
    from edgekit.cli.main import main

    code = main(["eval", str(onnx320), "--data", "tests/assets/coco8/data.yaml", "--backend", "onnxruntime"])
    err = capsys.readouterr().err
    assert code == 3
    assert "onnxruntime is not installed (needed for the ONNX Runtime backend): pip install 'edgekit[onnxruntime]'" in err


def test_engine_falls_back_to_ultralytics_onnx_metadata(onnx320, tmp_path):
    import shutil

    bare = tmp_path / "bare.onnx"
    shutil.copy(onnx320, bare)  # no sidecar beside it: names/imgsz come from Ultralytics' metadata_props
    eng = Engine(bare)
    assert eng.meta.imgsz == (320, 320) and eng.meta.names[0] == "person" and eng.meta.nc == 80


def test_help_and_engine_work_without_torch_and_ultralytics(onnx320, bus_jpg):
    """An environment with only the runtime extra: torch and ultralytics cannot be imported."""
    code = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['ultralytics'] = None  # any import of them now fails\n"
        "from edgekit import Engine\n"
        f"d = Engine({str(onnx320)!r})({str(bus_jpg)!r}); assert 'bus' in d.labels, d\n"
        "from edgekit.cli.main import main\n"
        "main(['--help'])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for cmd in ("advise", "train", "export", "quantize", "eval", "bench", "train-export", "report", "doctor"):
        assert f"    {cmd}" in r.stdout, cmd


def test_commands_needing_torch_say_which_extra(weights, demo_data):
    code = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['ultralytics'] = None\n"
        "from edgekit.cli.main import main\n"
        f"codes = [main(['train', {str(weights)!r}, '--data', {str(demo_data)!r}, '--strategy', 'full']),\n"
        f"         main(['export', {str(weights)!r}])]\n"
        "print(codes)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "[3, 3]", r.stderr
    lines = [l for l in r.stderr.splitlines() if "error:" in l]
    assert len(lines) == 2 and all("pip install 'edgekit[train]'" in l for l in lines), r.stderr
