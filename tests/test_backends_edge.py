"""Issue N: the runtimes edge devices run (NCNN, LiteRT, ExecuTorch) as backends that declare how their artifact is
built, through Engine's shared pre/post-processing, eval and bench; and a plugin that fails to import is one warning.

Each test skips, with the reason, where the backend's runtime or converter is not installed here.
"""
from __future__ import annotations

import hashlib
import json
import sys
import warnings

import numpy as np
import pytest

from edgekit.cli.main import main

SLOW = pytest.mark.slow  # onnx2tf (LiteRT) and torch.export (ExecuTorch) builds take 1-3 minutes on 2 cores
EDGE = ["ncnn", pytest.param("litert", marks=SLOW), pytest.param("executorch", marks=SLOW)]
# reduced precisions each backend builds, and what its precision_executed may then say on this CPU
REDUCED = [("ncnn", "fp16", {"fp16", "fp32"}), pytest.param("litert", "fp16", {"fp32", "fp16"}, marks=SLOW),
           pytest.param("litert", "int8-dynamic", {"int8+fp32"}, marks=SLOW),
           pytest.param("litert", "int8", {"int8"}, marks=SLOW),
           pytest.param("executorch", "int8", {"int8+fp32", "int8"}, marks=SLOW)]


def _backend(name: str, precision: str = "fp32"):
    """The backend class, or a skip naming what to install."""
    from edgekit.runtime.backends import get_backend, names

    if name not in names():
        pytest.skip(f"backend '{name}' is not registered in this checkout")
    cls = get_backend(name)
    if not cls.installed():
        pytest.skip(f"{name} runtime not installed ({cls.install_hint()})")
    if precision not in cls.builds:
        pytest.skip(f"{name} does not build {precision} here")
    if not cls.can_build(precision):
        pytest.skip(f"{name} converters {cls.build_modules} not installed (pip install 'edgekit[{cls.build_extra}]')")
    return cls


@pytest.fixture(scope="module")
def calib(coco8):
    """coco8's train images as a calibration set (forced: 4 images), at the export's 320."""
    from edgekit.data import load_dataset
    from edgekit.data.calibration import calibration_set

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return calibration_set(load_dataset(coco8), (320, 320), size=8, force=True)


@pytest.fixture(scope="module")
def built(onnx320, calib, tmp_path_factory):
    """backend, precision -> the artifact built from the 320 export (built once per module)."""
    cache = {}

    def get(name: str, precision: str = "fp32"):
        if (name, precision) not in cache:
            cls = _backend(name, precision)
            out = tmp_path_factory.mktemp(f"{name}-{precision}") / "artifact"
            cache[name, precision] = cls.build(onnx320, precision, out, calib=calib if precision in cls.calibrated
                                               else None, log=lambda *a: None)
        return cache[name, precision]

    return get


def _images(coco8, bus_jpg):
    return [bus_jpg] + sorted((coco8.parent / "images" / "val").glob("*.jpg"))


def _sorted(d):
    order = np.lexsort((d.boxes[:, 1], d.boxes[:, 0], d.class_ids))
    return d.class_ids[order], d.boxes[order]


@pytest.mark.parametrize("name", EDGE)
def test_fp32_artifact_detects_as_onnxruntime_fp32(name, built, onnx320, coco8, bus_jpg):
    """N: each new backend's FP32 artifact detects as ONNX Runtime FP32: same count and labels, boxes within 1 px."""
    from edgekit import Engine

    art = built(name, "fp32")
    assert "tensorflow" not in sys.modules  # onnx2tf runs in a child: TensorFlow beside torch._dynamo segfaults
    side = json.loads(art.with_suffix(".json").read_text())
    assert side["backend"] == name and side["precision"] == "fp32" and side["names"][0] == "person"
    exported_from = json.loads(onnx320.with_suffix(".json").read_text())["source"]["sha256"]  # the checkpoint
    built_from = hashlib.sha256(onnx320.read_bytes()).hexdigest() if side["source"]["kind"] == "onnx" else exported_from
    assert side["source"]["sha256"] == built_from
    with Engine(onnx320, backend="onnxruntime") as ref, Engine(art) as eng:
        assert eng.backend_name == name and eng.precision_executed == "fp32"
        total = 0
        for img in _images(coco8, bus_jpg):
            a, b = ref(img), eng(img)
            assert len(a) == len(b), f"{img.name}: {len(a)} detections by ONNX Runtime, {len(b)} by {name}"
            (ca, ba), (cb, bb) = _sorted(a), _sorted(b)
            assert np.array_equal(ca, cb), img.name
            assert np.abs(ba - bb).max(initial=0) <= 1.0, img.name
            total += len(a)
        assert total > 10  # the images do have objects: the comparison is not vacuous


@pytest.mark.parametrize("name,precision,executed", REDUCED)
def test_reduced_precision_artifact_builds_loads_and_says_what_it_runs(name, precision, executed, built, calib,
                                                                      bus_jpg):
    """N: fp16 / int8 artifacts build, load through Engine, detect, and report their executed precision."""
    from edgekit import Engine

    art = built(name, precision)
    side = json.loads(art.with_suffix(".json").read_text())
    assert side["precision"] == precision and side["size_mb"] > 0 and side["versions"]
    if precision in _backend(name, precision).calibrated:
        assert side["calibration"]["size"] == len(calib) and side["calibration"]["split"] == "train"
    with Engine(art) as eng:
        assert eng.precision_executed in executed
        d = eng(bus_jpg)
        assert {0, 5} <= set(d.class_ids.tolist()) and len(d) >= 3  # people and the bus
        assert d.scores.max() <= 1.0  # scores are probabilities: an int8 output shared with pixel boxes is not
    if (name, precision) == ("litert", "int8"):  # N: the model quantizes its float input itself (fused, fast):
        assert side["input"]["dtype"] == "float32"  # numpy quantizing it took 3 to 4 ms more per 640 image


@pytest.mark.parametrize("name", EDGE)
def test_eval_and_bench_accept_the_artifact(name, built, coco8, tmp_path):
    """N: `edgekit eval` and `edgekit bench` take each new backend's artifact (picked by its suffix)."""
    art = built(name, "fp32")
    ev, be = tmp_path / "eval.json", tmp_path / "bench.json"
    assert main(["eval", str(art), "--data", str(coco8), "--json", str(ev)]) == 0
    r = json.loads(ev.read_text())
    assert r["backend"] == name and r["map50_95"] > 0.3
    images = coco8.parent / "images" / "val"
    assert main(["bench", str(art), "--images", str(images), "--warmup", "1", "--iters", "3", "--streams", "2",
                 "--json", str(be)]) == 0
    b = json.loads(be.read_text())
    assert b["backend"] == name and b["latency_ms"]["e2e"]["n"] == 3 and b["precision_executed"] == "fp32"


def test_ncnn_folder_is_picked_and_loaded(built, bus_jpg):
    """N: a folder holding an ncnn model (Ultralytics' export layout) goes to the ncnn backend, not OpenVINO."""
    from edgekit import Engine
    from edgekit.runtime.backends import pick_backend

    art = built("ncnn", "fp32")
    assert pick_backend(art.parent) == "ncnn"
    with Engine(art.parent) as eng:
        assert eng.backend_name == "ncnn" and len(eng(bus_jpg)) >= 3


@SLOW
def test_executorch_folder_is_picked_and_loaded(built, bus_jpg, tmp_path):
    """N: a folder holding one .pte (Ultralytics' ExecuTorch export layout) loads as the file does; two .pte files in
    it are refused with one line (it loaded nothing: 'Failed to load program, error: 0x:22')."""
    import shutil

    from edgekit import Engine
    from edgekit.errors import ArtifactError
    from edgekit.runtime.backends import pick_backend

    art = built("executorch", "fp32")
    assert pick_backend(art.parent) == "executorch"
    with Engine(art) as ref, Engine(art.parent) as eng:
        a, b = ref(bus_jpg), eng(bus_jpg)
        assert eng.backend_name == "executorch" and len(b) == len(a) >= 3
        assert np.array_equal(a.boxes, b.boxes)
    two = tmp_path / "two"
    shutil.copytree(art.parent, two)
    shutil.copy2(two / art.name, two / "other.pte")
    with pytest.raises(ArtifactError, match="expected one ExecuTorch .pte file in this folder, found 2"):
        Engine(two, backend="executorch")


def test_build_with_relative_paths_from_another_folder(onnx160, tmp_path, monkeypatch):
    """N: relative ONNX and output paths mean the caller's folder, although converters run in a private one (a
    relative path used to make pnnx miss its input and the build fail)."""
    import shutil

    cls = _backend("ncnn")
    (tmp_path / "runs").mkdir()
    for f in onnx160.parent.glob("model.*"):
        shutil.copy2(f, tmp_path / "runs" / f.name)
    monkeypatch.chdir(tmp_path)
    model = cls.build("runs/model.onnx", "fp16", "runs/ncnn_fp16", log=lambda *a: None)
    assert model == tmp_path / "runs" / "ncnn_fp16" / "model.ncnn.param" and model.is_file()


def _tree_sums(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_bad_input_build_refuses_the_input_folder_and_a_foreign_folder(onnx320, tmp_path):
    """N: a build never replaces a folder it did not make: not the ONNX's own folder, not a folder of other files."""
    from edgekit.errors import ArtifactError

    cls = _backend("ncnn")
    before = _tree_sums(onnx320.parent)
    with pytest.raises(ArtifactError, match="holds the input model.onnx"):
        cls.build(onnx320, "fp32", onnx320.parent, log=lambda *a: None)
    assert _tree_sums(onnx320.parent) == before
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "a.jpg").write_bytes(b"not ours")
    with pytest.raises(ArtifactError, match="not an earlier ncnn build"):
        cls.build(onnx320, "fp32", foreign, log=lambda *a: None)
    assert (foreign / "a.jpg").read_bytes() == b"not ours" and len(list(foreign.iterdir())) == 1


def test_bad_input_build_of_a_precision_the_backend_does_not_build(onnx320, tmp_path):
    """N: ncnn int8 is not built (no calibration tools in the pip wheels): one line naming what it builds."""
    from edgekit.errors import ArtifactError
    from edgekit.runtime.backends import get_backend

    with pytest.raises(ArtifactError, match="the ncnn backend builds fp32, fp16, not int8"):
        get_backend("ncnn").build(onnx320, "int8", tmp_path / "x", log=lambda *a: None)
    assert not (tmp_path / "x").exists()


def test_bad_input_build_without_its_converter_names_the_extra(onnx320, tmp_path, monkeypatch):
    """N: a build whose converter is not installed is one MissingDependency line naming the extra; nothing written."""
    import edgekit.runtime.backends.build as build
    from edgekit.errors import MissingDependency

    cls = _backend("ncnn")
    monkeypatch.setattr(build, "available", lambda m: m != "pnnx")
    hint = r"building ncnn artifacts needs pnnx: pip install 'edgekit\[ncnn-build\]'"
    with pytest.raises(MissingDependency, match=hint):
        cls.build(onnx320, "fp16", tmp_path / "out", log=lambda *a: None)
    assert not (tmp_path / "out").exists()


def test_backend_declares_its_build():
    """N: every registered backend declares what it builds from, and the calibrated precisions are among its builds."""
    from edgekit.runtime.backends import registered
    from edgekit.runtime.backends.base import BUILD_SOURCES, Backend

    for name, cls in registered().items():
        assert cls.build_from in BUILD_SOURCES, name
        assert set(cls.calibrated) <= set(cls.builds), name
        if cls.builds:  # a backend that says it builds has a build step (build_impl, or a build() of its own)
            assert (cls.build_impl.__func__ is not Backend.build_impl.__func__
                    or cls.build.__func__ is not Backend.build.__func__), name


@pytest.fixture()
def broken_plugin():
    from edgekit.runtime import backends

    backends.register("broken", "edgekit_no_such_plugin_module:Backend")
    yield "broken"
    backends.REGISTRY.unregister("broken")


def test_plugin_that_fails_to_import_is_one_warning_not_a_crash(broken_plugin, onnx320, coco8, tmp_path, capsys):
    """N: a registered plugin whose module fails to import no longer crashes Engine('model.onnx') and bench with a raw
    ModuleNotFoundError: it is left out with one warning line, and asking for it by name is one ArtifactError."""
    from edgekit import Engine
    from edgekit.errors import ArtifactError
    from edgekit.runtime.backends import get_backend

    with pytest.warns(UserWarning, match="backend 'broken'.*ModuleNotFoundError.*left out"):
        with Engine(onnx320) as eng:
            assert eng.backend_name == "onnxruntime"
    with pytest.raises(ArtifactError, match="backend 'broken' .*cannot be loaded: ModuleNotFoundError"):
        get_backend("broken")
    out = tmp_path / "bench.json"
    rc = main(["bench", str(onnx320), "--images", str(coco8.parent / "images" / "val"), "--warmup", "1",
               "--iters", "2", "--json", str(out)])
    assert rc == 0 and json.loads(out.read_text())["backend"] == "onnxruntime"


_TFLITE_SCRIPT = """
import json, sys, zipfile
import numpy as np
import tensorflow as tf
path, box = sys.argv[1], json.loads(sys.argv[2])
const = np.array([[[box[0], 0], [box[1], 0], [box[2], 0], [box[3], 0], [0.9, 0.0]]], np.float32)

@tf.function(input_signature=[tf.TensorSpec([1, 3, 32, 32], tf.float32)])
def net(x):
    return tf.constant(const) + 0.0 * tf.reduce_mean(x)

conv = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()], net)
open(path, "wb").write(conv.convert())
with zipfile.ZipFile(path, "a") as z:
    z.writestr("metadata.json", json.dumps({"task": "detect", "names": {"0": "thing"}, "imgsz": [32, 32],
                                            "stride": 32, "batch": 1}))
"""


def _ultralytics_style_tflite(path, box):
    """A 32x32 NCHW .tflite that outputs one fixed (1, 5, 2) detection (xywh `box`, score 0.9) whatever the image,
    with Ultralytics' metadata.json appended as a zip entry, as its litert-torch export writes it. Made by
    tensorflow in a child process: tensorflow loaded in the test process makes a later torch._dynamo import crash."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow makes the test .tflite")
    subprocess.run([sys.executable, "-c", _TFLITE_SCRIPT, str(path), json.dumps(list(box))], check=True,
                   capture_output=True, timeout=300)
    return path


@pytest.mark.slow
def test_ultralytics_litert_export_loads_with_pixel_boxes(tmp_path):
    """Issue N: Ultralytics' LiteRT export (litert-torch) carries its metadata as metadata.json inside the .tflite
    and outputs xywh divided by the input size; edgekit reads the names from it and gives boxes in pixels (before:
    'no metadata', so edgekit eval could not score Ultralytics' LiteRT export)."""
    _backend("litert")
    import cv2

    from edgekit.runtime import Engine

    model = _ultralytics_style_tflite(tmp_path / "yolov8n_float32.tflite", (0.5, 0.5, 0.25, 0.25))
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    img = tmp_path / "grey.jpg"
    cv2.imwrite(str(img), np.full((32, 32, 3), 128, np.uint8))
    engine = Engine(model, device="cpu", backend="litert")
    try:
        assert engine.meta.names == ["thing"] and engine.meta.imgsz == (32, 32)
        det = engine([img])[0]
    finally:
        engine.close()
    assert len(det) == 1
    np.testing.assert_allclose(np.asarray(det.boxes)[0], [12, 12, 20, 20], atol=0.5)  # xyxy in pixels, not 0..1
    assert hashlib.sha256(model.read_bytes()).hexdigest() == digest  # the user's model is only read
