"""Quantization: recipes, ONNX Runtime Q/DQ structure, an OpenVINO INT8 roundtrip, the accuracy gate and its fallbacks."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgekit.data import load_dataset
from edgekit.data.calibration import calibration_set
from edgekit.errors import ArtifactError, DataError, EdgekitError
from edgekit.quantize.quantizer import Quantizer
from edgekit.quantize.recipe import Scope, head_index, load_recipe, recipe_for, recipes_dir

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# recipes ------------------------------------------------------------------------------------------
def test_every_recipe_loads():
    paths = sorted(recipes_dir().glob("*.yaml"))
    assert {p.stem for p in paths} >= {"yolov8", "yolo11", "rtdetr", "default"}
    for p in paths:
        r = load_recipe(p)
        assert r.keep_float.patterns or r.keep_float.types, p
        assert r.fallback and set(r.backends) == {"openvino", "onnxruntime", "tensorrt"}
        assert all(r.backend(b) for b in r.backends)


@pytest.mark.parametrize("family,name", [("yolov8", "yolov8"), ("yolo11", "yolo11"), ("yolov5", "yolov8"),
                                         ("rtdetr", "rtdetr"), ("mystery", "default"), (None, "default")])
def test_recipe_chosen_by_family(family, name):
    assert recipe_for(family).name == name


def test_rtdetr_recipe_is_a_transformer():
    assert recipe_for("rtdetr").backend("openvino")["model_type"] == "transformer"
    assert recipe_for("rtdetr").backend("no-such-backend") == {}


def test_bad_recipe_names_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: bad\nkeep_float:\n  patterns: ['(unclosed']\n")
    with pytest.raises(EdgekitError, match=r"bad.yaml: 'keep_float' pattern '\(unclosed' is not a valid regular"):
        load_recipe(p)
    p.write_text("name: bad\nkeep_float:\n  layers: [x]\n")
    with pytest.raises(EdgekitError, match="bad.yaml: 'keep_float' has unknown keys: layers"):
        load_recipe(p)


@pytest.mark.parametrize("body, message", [
    ("backends:\n  tflite: {x: 1}\n",
     "'backends' has unknown backend 'tflite' (choose from openvino, onnxruntime, tensorrt)"),
    ("openvino:\n  preset: mixed\n", "unknown key 'openvino' (backend settings go under 'backends:')"),
    ("backends: [openvino]\n", "'backends' must be a mapping of backend name to settings"),
    ("backends:\n  onnxruntime: [minmax]\n", "'backends.onnxruntime' must be a mapping of settings"),
    ("layers: [x]\n", "unknown key 'layers'; a recipe has backends, description"),
])
def test_bad_input_recipe_key(onnx160_copy, coco8, tmp_path, monkeypatch, capsys, body, message):
    """A recipe (EDGEKIT_RECIPES) with a key edgekit does not know is refused in one line naming file and key."""
    from edgekit.cli.main import main

    folder = tmp_path / "recipes"
    folder.mkdir()
    (folder / "default.yaml").write_text("name: mine\nkeep_float: {types: [Sigmoid]}\n" + body)
    monkeypatch.setenv("EDGEKIT_RECIPES", str(folder))
    capsys.readouterr()
    code = main(["quantize", str(onnx160_copy), "--data", str(coco8), "--backend", "onnxruntime", "--force",
                 "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith(f"edgekit quantize: error: {folder / 'default.yaml'}: {message}")


def test_yolov8_scope_keeps_the_decode_in_float(onnx160):
    from edgekit.quantize.onnxruntime import graph_nodes

    nodes = graph_nodes(onnx160)
    assert head_index([n for n, _ in nodes]) == 22
    r = recipe_for("yolov8")
    kept = set(r.keep_float.match(nodes))
    assert "/model.22/Sigmoid" in kept and "/model.22/dfl/conv/Conv" in kept and "/model.22/Concat_3" in kept
    convs_kept = [n for n, t in nodes if t == "Conv" and n in kept]
    assert convs_kept == ["/model.22/dfl/conv/Conv"]  # the learned convs, head included, are quantized
    more = set((r.keep_float + r.fallback[0][1]).match(nodes))
    assert "/model.22/cv3.0/cv3.0.2/Conv" in more and "/model.22/cv2.2/cv2.2.2/Conv" in more
    assert Scope(patterns=["^/model\\.{head}/Sigmoid$"]).match(nodes) == ["/model.22/Sigmoid"]


# ONNX Runtime Q/DQ ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qdq_model(onnx160, tmp_path_factory):
    pytest.importorskip("onnxruntime")
    from edgekit.quantize.onnxruntime import graph_nodes, preprocess, quantize_qdq

    out = tmp_path_factory.mktemp("qdq")
    ds = load_dataset(Path(__file__).parent / "assets" / "coco8" / "data.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cs = calibration_set(ds, (160, 160), size=4, force=True)
    pre = preprocess(onnx160, out / "pre.onnx")
    excluded = recipe_for("yolov8").keep_float.match(graph_nodes(pre))
    q = quantize_qdq(pre, out / "model.onnx", cs, "minmax", excluded, ["Conv", "MatMul"], cache=out / "cache.json")
    return q, excluded, out / "cache.json", pre, cs


def _producers(graph):
    return {o: n for n in graph.node for o in n.output}


def test_qdq_every_conv_weight_is_per_channel_symmetric_int8(qdq_model):
    import onnx
    from onnx import numpy_helper

    path, excluded = qdq_model[:2]
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    prod = _producers(m.graph)
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    quantized = []
    for conv in convs:
        w = prod.get(conv.input[1])
        if w is None or w.op_type != "DequantizeLinear":
            assert conv.name in excluded, f"{conv.name}: unquantized conv not excluded by the recipe"
            continue
        quantized.append(conv.name)
        q_w, scale = inits[w.input[0]], inits[w.input[1]]
        assert q_w.dtype == np.int8
        assert scale.ndim == 1 and scale.shape[0] == q_w.shape[0] > 1, f"{conv.name}: weight scale is not per-channel"
        axis = next((a.i for a in w.attribute if a.name == "axis"), 1)
        assert axis == 0
        zp = inits[w.input[2]] if len(w.input) > 2 else np.zeros(1)
        assert not np.any(zp), f"{conv.name}: weight zero point is not 0 (asymmetric)"
        x = prod.get(conv.input[0])
        assert x is not None and x.op_type == "DequantizeLinear", f"{conv.name}: activation has no Q/DQ"
    assert len(quantized) == len(convs) - 1  # only the fixed DFL conv stays in float


def test_qdq_activations_symmetric_int8(qdq_model):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(qdq_model[0]))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert qs
    for q in qs:
        zp = inits[q.input[2]]
        assert zp.dtype == np.int8 and not np.any(zp), f"{q.name}: activation zero point {zp} (want symmetric int8)"


def _cached_ranges(cache_path) -> dict[str, tuple[float, float]]:
    doc = json.loads(cache_path.read_text())
    assert doc["calibration_method"]["value"] == "CalibrationMethod.MinMax"
    return {t: (r["lowest"]["data"][0], r["highest"]["data"][0]) for t, r in doc["data"].items()}


def test_qdq_calibration_cache_holds_minmax_ranges(qdq_model):
    """The cache holds each activation's min and max over the calibration images, as measured here with ORT."""
    import onnx
    import onnxruntime as ort

    _, _, cache, pre, cs = qdq_model
    ranges = _cached_ranges(cache)
    probe = ["/model.0/conv/Conv_output_0", "/model.22/cv3.0/cv3.0.1/act/Mul_output_0", "/model.9/Concat_output_0"]
    m = onnx.load(str(pre))
    m.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in probe)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    blobs = [cs.transform(item) for item in cs.items]
    outs = [sess.run(probe, {"images": b}) for b in blobs]
    expected = {"images": (min(b.min() for b in blobs), max(b.max() for b in blobs))}
    for k, t in enumerate(probe):
        expected[t] = (min(o[k].min() for o in outs), max(o[k].max() for o in outs))
    for t, (lo, hi) in expected.items():
        np.testing.assert_allclose(ranges[t], (lo, hi), rtol=1e-4, atol=1e-5, err_msg=t)


def test_qdq_activation_scales_come_from_the_cache(qdq_model):
    """Every activation quantizer's scale is its cached range made symmetric: max(|min|, |max|) / 127."""
    import onnx
    from onnx import numpy_helper

    path, _, cache = qdq_model[:3]
    ranges = _cached_ranges(cache)
    m = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert len(qs) > 50
    for q in qs:
        lo, hi = ranges[q.input[0]]
        assert float(inits[q.input[1]]) == pytest.approx(max(abs(lo), abs(hi)) / 127, rel=1e-5), q.name


# the gate ----------------------------------------------------------------------------------------
def _inflate_baseline(onnx, data, out_dir, split="val", value=0.99):
    """Pretend the FP32 model scored `value` mAP50-95 (in the job's baseline cache): every INT8 attempt then fails."""
    from edgekit.quantize.job import BASELINE_FILE, baseline_key

    key = baseline_key(onnx, "onnxruntime", "cpu", load_dataset(data), split, None)
    out_dir.mkdir(parents=True, exist_ok=True)
    thr = {"conf": 0.25, "precision": value, "recall": value, "f1": value, "per_class": {}, "chosen_by": "max_f1"}
    (out_dir / BASELINE_FILE).write_text(json.dumps({key: {"map50": value, "map50_95": value, "images": 8,
                                                           "backend": "onnxruntime", "thresholds": {"max_f1": thr}}}))


@pytest.mark.slow
def test_failing_gate_falls_back_then_marks_failed_and_exits_4(onnx160_copy, coco8, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from edgekit.cli.main import main

    out = tmp_path / "out"
    _inflate_baseline(onnx160_copy, coco8, out)
    code = main(["quantize", str(onnx160_copy), "--data", str(coco8), "--backend", "onnxruntime", "--method",
                 "minmax", "--calib-size", "16", "--force", "--max-map-drop", "0.01", "-o", str(out),
                 "--json", str(tmp_path / "res.json")])
    err = capsys.readouterr().err
    assert code == 4
    last = [line for line in err.splitlines() if line.startswith("edgekit quantize: error:")]
    assert len(last) == 1 and "sidecar marked FAILED" in last[0] and "0.01 mAP50-95 points" in last[0]
    failed = out / "model_int8_onnxruntime.FAILED" / "model.onnx"  # the name says what it is
    assert not (out / "model_int8_onnxruntime").exists()
    side = json.loads(failed.with_suffix(".json").read_text())
    assert side["status"] == "FAILED" and side["precision"] == "int8"
    gate = side["accuracy_gate"]
    assert gate["map50_95_fp32"] == 0.99 and 0 <= gate["map50_95"] < 0.99 and gate["drop_points"] > 1
    tried = [side["quantization"]["attempt"]] + [f["attempt"] for f in side["quantization"]["fallbacks"]]
    assert set(tried) == {"recipe", "method-entropy", "method-percentile", "fallback-worst-layers",
                          "fallback-head-output-convs", "fallback-stem", "fallback-whole-head"}
    res = json.loads((tmp_path / "res.json").read_text())
    assert res["status"] == "FAILED" and len(res["fallbacks"]) == 7
    assert not list(out.glob(".quantize-*"))  # the attempts' work folder is gone
    # Engine refuses the failed artifact in one line naming the file, its drop and the opt-in; the opt-in loads it
    from edgekit.runtime import Engine

    with pytest.raises(ArtifactError) as e:
        Engine(failed)
    msg = str(e.value)
    assert "\n" not in msg and str(failed) in msg and "allow_failed=True" in msg
    assert f"drop {gate['drop_points']} points" in msg
    with Engine(failed, allow_failed=True) as eng:
        assert eng.meta.precision == "int8"
        eng(str(next((Path(coco8).parent / "images" / "val").glob("*.jpg"))))


def _mark(onnx, status: str) -> None:
    """Give an exported model the sidecar status a quantization run leaves behind."""
    from edgekit.runtime.meta import read_sidecar, write_sidecar

    doc = read_sidecar(onnx)
    doc.update(status=status, accuracy_gate={"max_map_drop": 0.5, "drop_points": 3.25})
    write_sidecar(onnx, {k: v for k, v in doc.items() if k != "format"})


@pytest.mark.slow
@pytest.mark.parametrize("command, status, message", [
    ("eval", "FAILED", "artifact failed its accuracy gate (mAP50-95 drop 3.25 points, allowed 0.5)"),
    ("eval", "EVALUATING", "artifact is half-finished (sidecar status EVALUATING"),
    ("bench", "FAILED", "artifact failed its accuracy gate (mAP50-95 drop 3.25 points, allowed 0.5)"),
    ("bench", "EVALUATING", "artifact is half-finished (sidecar status EVALUATING"),
])
def test_bad_input_failed_artifact_refused_without_allow_failed(onnx160_copy, coco8, tmp_path, capsys, command,
                                                                status, message):
    pytest.importorskip("onnxruntime")
    from edgekit.cli.main import main

    _mark(onnx160_copy, status)
    extra = ["--data", str(coco8)] if command == "eval" else ["--iters", "2", "--warmup", "0", "--images",
                                                              str(Path(coco8).parent / "images" / "val")]
    capsys.readouterr()
    assert main([command, str(onnx160_copy), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"edgekit {command}: error: {onnx160_copy}: {message}")
    assert "\n" not in err and "--allow-failed" in err and "allow_failed=True" in err
    assert main([command, str(onnx160_copy), *extra, "--allow-failed"]) == 0


def _ov_convs(xml) -> dict[str, tuple[bool, str]]:
    """Each convolution of an IR -> (is its activation input FakeQuantized?, element type of its weight constant).

    NNCF may put the activation's FakeQuantize above ops that only move data (Concat, Split, MaxPool...): every
    path through them must start at a FakeQuantize.
    """
    import openvino as ov

    def source(op, port):
        return op.input(port).get_source_output().get_node()

    def fake_quantized(op) -> bool:
        kind = op.get_type_name()
        if kind in ("Concat", "VariadicSplit", "Split", "Reshape", "MaxPool", "Interpolate"):
            ports = range(op.get_input_size()) if kind == "Concat" else [0]
            return all(fake_quantized(source(op, i)) for i in ports)
        return kind == "FakeQuantize" and op.get_attributes()["levels"] == 256

    def weight_type(op) -> str:
        while op.get_type_name() != "Constant":
            op = source(op, 0)
        return op.get_output_element_type(0).get_type_name()

    convs = [op for op in ov.Core().read_model(str(xml)).get_ordered_ops() if op.get_type_name() == "Convolution"]
    return {op.get_friendly_name().removesuffix("/WithoutBiases"): (fake_quantized(source(op, 0)),
                                                                     weight_type(source(op, 1))) for op in convs}


@pytest.mark.slow
def test_openvino_int8_roundtrip(onnx160_copy, coco8, tmp_path):
    pytest.importorskip("nncf")
    from edgekit.quantize import quantize
    from edgekit.runtime import Engine

    logs = []
    sidecar_before = onnx160_copy.with_suffix(".json").read_bytes()
    res = quantize(onnx160_copy, coco8, backend="openvino", calib_size=16, force=True, max_map_drop=None,
                   out_dir=tmp_path / "ov", log=logs.append)
    for key in ("artifact", "backend", "precision", "method", "map50_fp32", "map50_95_fp32", "map50", "map50_95",
                "drop_points", "status", "fallbacks", "excluded", "calib"):
        assert key in res
    assert res["status"] == "PASSED" and res["precision"] == "int8" and res["backend"] == "openvino"
    xml = Path(res["artifact"])
    assert xml == tmp_path / "ov" / "model_int8_openvino" / "model.xml" and xml.with_suffix(".bin").exists()
    convs = _ov_convs(xml)
    assert len(convs) == 64 and [n for n, c in convs.items() if c != (True, "i8")] == ["/model.22/dfl/conv/Conv"]
    assert convs["/model.22/dfl/conv/Conv"] == (False, "f32")  # the recipe keeps the DFL conv in float
    side = json.loads(xml.with_suffix(".json").read_text())
    assert side["precision"] == "int8" and side["backend"] == "openvino" and side["status"] == "PASSED"
    assert side["names"][0] == "person" and side["imgsz"] == [160, 160] and side["letterbox"]["pad_value"] == 114
    q = side["quantization"]
    assert q["calibration"]["size"] == 4 and q["calibration"]["split"] == "train" and len(q["calibration"]["files"]) == 4
    assert "/model.22/Sigmoid" in q["excluded"] and q["recipe"]["name"] == "yolov8"
    assert abs(side["accuracy_gate"]["map50_95"] - res["map50_95"]) < 1e-9
    with Engine(xml) as eng:
        det = eng(str(next((Path(coco8).parent / "images" / "val").glob("*.jpg"))))
    assert len(det) > 0
    # the FP32 baseline is cached beside the job's output, not in the input's sidecar: a second run reads it
    assert onnx160_copy.with_suffix(".json").read_bytes() == sidecar_before
    cache = json.loads((tmp_path / "ov" / ".fp32-baseline.json").read_text())
    assert [k.split("|")[0] for k in cache] == ["openvino@cpu"]
    logs.clear()
    quantize(onnx160_copy, coco8, backend="openvino", calib_size=16, force=True, max_map_drop=None,
             out_dir=tmp_path / "ov", log=logs.append)
    assert any("cached" in m for m in logs)


def test_errors_are_one_line(onnx160_copy, coco8, demo_data, tmp_path):
    from edgekit.quantize import quantize

    with pytest.raises(DataError, match="dataset has 5 classes but model.onnx has 80"):
        quantize(onnx160_copy, demo_data, backend="onnxruntime", log=lambda m: None)
    with pytest.raises(ArtifactError, match="unknown backend 'tflite'"):
        quantize(onnx160_copy, coco8, backend="tflite")
    with pytest.raises(DataError, match="fewer than 16"):
        quantize(onnx160_copy, coco8, backend="onnxruntime", log=lambda m: None)
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(onnx160_copy.read_bytes())
    with pytest.raises(ArtifactError, match="no sidecar bare.json"):
        quantize(bare, coco8, backend="onnxruntime")


def test_cli_lists_quantize(capsys):
    from edgekit.cli.main import main

    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    out = capsys.readouterr().out
    assert "--max-map-drop" in out and "--calib-size" in out and "onnxruntime" in out


# the quantizer protocol ---------------------------------------------------------------------------
class CopyQuantizer(Quantizer):
    """A toy backend: every attempt is the FP32 ONNX copied (ONNX Runtime runs it); `calls` records what was asked."""

    name = "onnxruntime"
    float_fallback = "fp16"
    calls: list = []

    def check_available(self) -> None:
        pass

    def nodes(self, job):
        from edgekit.quantize.onnxruntime import graph_nodes

        return graph_nodes(job.onnx)

    def methods(self, job):
        return ["minmax", "entropy"]

    def _copy(self, job, folder, call):
        self.calls.append(call)
        return Path(shutil.copy2(job.onnx, folder / "model.onnx"))

    def build_attempt(self, job, folder, keep_float, method):
        return self._copy(job, folder, ("int8", method, len(keep_float)))

    def accuracy_control(self, job, folder, keep_float, method):
        return self._copy(job, folder, ("control", method, len(keep_float))), {"reverted": ["/model.0/conv/Conv"]}

    def build_float(self, job, folder, precision):
        return self._copy(job, folder, (precision, "none", None))


@pytest.mark.slow
def test_chain_order_and_labels_come_from_the_algorithm(onnx160_copy, coco8, tmp_path, monkeypatch):
    """One algorithm for every backend: recipe (plain PTQ), the recipe's fallbacks (cumulative scopes), accuracy
    control (issue T: after the stages, which reuse the calibration statistics and cost an evaluation each), float
    fallback; a backend without layer_snr has no worst-layers stage."""
    pytest.importorskip("onnxruntime")
    import edgekit.quantize as q
    from edgekit.errors import AccuracyGateError

    toy = CopyQuantizer
    toy.calls = []
    monkeypatch.setattr(q, "quantizer_class", lambda backend: toy)
    out = tmp_path / "out"
    _inflate_baseline(onnx160_copy, coco8, out)
    config = q.QuantizeConfig(backend="onnxruntime", method="entropy", calib_size=4, force=True, max_map_drop=0.5,
                              out_dir=out)
    with pytest.raises(AccuracyGateError) as e:
        q.quantize(onnx160_copy, coco8, config, log=lambda m: None)
    labels = [f["attempt"] for f in e.value.result["fallbacks"]]
    assert labels == ["recipe", "fallback-head-output-convs", "fallback-stem", "fallback-whole-head",
                      "accuracy-control", "fp16"]
    assert [f["path"] for f in e.value.result["fallbacks"]] == ["ptq", "fallback:head-output-convs", "fallback:stem",
                                                               "fallback:whole-head", "accuracy_control", "fallback:fp16"]
    kinds, methods, kept = zip(*toy.calls)
    assert kinds == ("int8",) * 4 + ("control", "fp16")
    assert methods[:5] == ("entropy",) * 5  # --method first; the backend does not try the others
    assert kept[0] == kept[4] < kept[1] < kept[2] < kept[3]  # each stage adds to the float scope; control: the recipe's
    assert [f["reverted"] for f in e.value.result["fallbacks"]] == [0, 0, 0, 0, 1, 0]
    side = json.loads((out / "model_int8_onnxruntime.FAILED" / "model.json").read_text())
    assert side["quantization"]["fallbacks"][-1]["precision"] == "fp16"
    toy.calls.clear()  # no gate: the recipe's attempt is the artifact
    res = q.quantize(onnx160_copy, coco8, config, max_map_drop=None, log=lambda m: None)
    assert res["attempt"] == "recipe" and toy.calls == [("int8", "entropy", kept[0])]
