"""Issue T (quantization and evaluation core): a deployment threshold per artifact, a recall gate per class, the
layers that broke named by SNR, INT8 that tries plain PTQ first and bounds accuracy control, calibration in domain."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edgekit.eval import Matches, at_conf, choose_threshold, recall_drops


def _sha(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# the deployment threshold -----------------------------------------------------------------------
def _matches() -> Matches:
    """Two images, classes a (3 boxes) and b (1 box); detections (score, class, true positive at IoU 0.5)."""
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.2])
    cls = np.array([0, 0, 1, 0, 0, 1])
    tp50 = np.array([True, False, True, True, False, False])
    tp = np.zeros((10, len(score)), bool)
    tp[0] = tp50
    return Matches(np.array([0, 0, 1, 1, 0, 1]), cls, score, tp, np.array([[2, 0], [1, 1]]))


def test_threshold_is_chosen_by_f1_or_a_target_and_reports_p_r_f1_per_class():
    """T item 3: conf by max F1 on val (or --target-precision / --target-recall); P, R, F1 overall and per class."""
    m, names = _matches(), ["a", "b"]
    best = choose_threshold(m, names)
    # at conf 0.6: 4 detections, 3 true of 4 boxes -> P 0.75, R 0.75, F1 0.75 (the highest on this curve)
    assert best["chosen_by"] == "max_f1" and best["conf"] == 0.6
    assert (best["precision"], best["recall"], best["f1"]) == (0.75, 0.75, 0.75)
    assert best["per_class"]["a"] == {"precision": 0.6667, "recall": 0.6667, "f1": 0.6667, "boxes": 3}
    assert best["per_class"]["b"]["recall"] == 1.0
    hi = choose_threshold(m, names, target_precision=1.0)  # the most recall at precision 1: the first detection
    assert hi["conf"] == 0.9 and hi["precision"] == 1.0 and hi["recall"] == 0.25 and hi["reached"]
    rec = choose_threshold(m, names, target_recall=0.75)
    assert rec["conf"] == 0.6 and rec["recall"] >= 0.75
    never = choose_threshold(m, names, target_recall=1.0)  # no threshold finds the 4th box: said, not hidden
    assert never["reached"] is False and never["recall"] == 0.75
    low = at_conf(m, names, 0.3)
    assert low["per_class"]["a"]["recall"] == 0.6667 and low["precision"] == 0.6


def test_recall_drop_names_the_class_and_both_recalls_only_for_large_classes():
    """T item 2: a class with >= min boxes that loses more than max points of recall at the FP32 threshold."""
    m, names = _matches(), ["a", "b"]
    before = at_conf(m, names, 0.6)
    collapsed = Matches(m.img, m.cls, np.where(m.cls == 0, m.score * 0.01, m.score), m.tp, m.ngt)
    after = at_conf(collapsed, names, 0.6)
    drops = recall_drops(before, after, max_drop=5.0, min_boxes=3)
    assert drops == [{"class": "a", "recall_fp32": 0.6667, "recall": 0.0, "drop_points": 66.67, "boxes": 3}]
    assert recall_drops(before, after, max_drop=5.0, min_boxes=4) == []  # a has 3 boxes: too few to judge


def test_eval_json_carries_the_deployment_threshold(onnx160, coco8, tmp_path):
    """T item 3: `edgekit eval --json` has threshold {conf, precision, recall, f1, per_class, chosen_by}."""
    pytest.importorskip("onnxruntime")
    from edgekit.cli.main import main

    out = tmp_path / "eval.json"
    assert main(["eval", str(onnx160), "--data", str(coco8), "--json", str(out)]) == 0
    thr = json.loads(out.read_text())["threshold"]
    assert {"conf", "precision", "recall", "f1", "per_class", "chosen_by"} <= set(thr)
    assert thr["chosen_by"] == "max_f1" and 0 < thr["conf"] < 1 and thr["per_class"]["person"]["boxes"] == 5


# the recall gate and the layers that broke ----------------------------------------------------------
def _collapse(path: Path, cls: int, factor: float = 0.01) -> None:
    """Scale class `cls`'s score in the model's output (1, 4 + nc, N) by `factor`: a Mul before the graph output."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(path))
    out = m.graph.output[0].name
    for n in m.graph.node:
        n.output[:] = [o + "_uncollapsed" if o == out else o for o in n.output]
    channels = m.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    scale = np.ones((1, channels, 1), np.float32)
    scale[0, 4 + cls, 0] = factor
    m.graph.initializer.append(numpy_helper.from_array(scale, "collapse_scale"))
    m.graph.node.append(helper.make_node("Mul", [out + "_uncollapsed", "collapse_scale"], [out], name="collapse"))
    onnx.save(m, str(path))


@pytest.mark.slow
def test_a_collapsed_class_fails_the_recall_gate_naming_it_and_lists_the_worst_layers(onnx160_copy, coco8, tmp_path,
                                                                                       monkeypatch, capsys):
    """T items 2 and 4: every INT8 attempt has 'person' collapsed in its graph: the gate fails (exit 4) naming
    person and both recalls; the failure lists the five worst layers by SNR, which the first fallback keeps in
    float; every attempt records its own threshold with P, R and F1."""
    pytest.importorskip("onnxruntime")
    import edgekit.quantize.onnxruntime as ort_q
    from edgekit.cli.main import main

    real, kept = ort_q.quantize_job, []

    def collapsing(job, model, out, method, keep_float):
        kept.append(list(keep_float))
        real(job, model, out, method, keep_float)
        _collapse(out, cls=0)
        return out

    monkeypatch.setattr(ort_q, "quantize_job", collapsing)
    out, res = tmp_path / "q", tmp_path / "res.json"
    code = main(["quantize", str(onnx160_copy), "--data", str(coco8), "--backend", "onnxruntime", "--method",
                 "minmax", "--calib-size", "8", "--force", "--min-class-boxes", "5", "--max-class-drop", "100",
                 "-o", str(out), "--json", str(res)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("edgekit quantize: error:")]
    assert code == 4 and len(err) == 1
    r = json.loads(res.read_text())
    person = [d for d in r["recall_drops"] if d["class"] == "person"][0]
    assert person["recall_fp32"] > 0 and person["recall"] == 0.0
    assert (f"class 'person' recall {person['recall_fp32']:.3f} (FP32) -> 0.000 at conf "
            f"{r['threshold_fp32']['conf']:g}") in err[0]
    worst = r["layer_snr"]
    assert len(worst) == 5 and all(np.isfinite(d["snr_db"]) for d in worst)
    assert [d["snr_db"] for d in worst] == sorted(d["snr_db"] for d in worst)
    assert "worst layers by SNR: " + f"{worst[0]['layer']} {worst[0]['snr_db']:.1f} dB" in err[0]
    labels = [f["attempt"] for f in r["fallbacks"]]
    i = labels.index("fallback-worst-layers")  # right after plain PTQ (the recipe's method, then the others)
    assert labels[:i] == ["recipe", "method-entropy", "method-percentile"]
    assert [f["path"] for f in r["fallbacks"]][:i + 1] == ["ptq"] * i + ["fallback:worst-layers"]
    assert set(kept[i]) == set(kept[0]) | {d["layer"] for d in worst}  # the first fallback's added float scope
    assert all(set(k) >= {d["layer"] for d in worst} for k in kept[i + 1:])  # kept by the recipe's stages too
    side = json.loads((Path(r["artifact"]).with_suffix(".json")).read_text())
    assert side["quantization"]["layer_snr"] == worst
    for doc in (r["threshold"], side["threshold"]):
        assert {"conf", "precision", "recall", "f1", "per_class", "chosen_by"} <= set(doc)
    assert side["accuracy_gate"]["recall_drops"] == r["recall_drops"]


# PTQ first, bounded accuracy control, calibration from a folder ---------------------------------------
@pytest.mark.slow
def test_plain_ptq_that_passes_never_enters_accuracy_control(onnx160_copy, coco8, tmp_path):
    """T item 1: the recorded path is 'ptq' with its build seconds, and no other attempt was made."""
    pytest.importorskip("nncf")
    from edgekit.quantize import quantize

    res = quantize(onnx160_copy, coco8, backend="openvino", calib_size=16, force=True, max_map_drop=5.0,
                   out_dir=tmp_path / "q", log=lambda m: None)
    assert res["status"] == "PASSED" and res["path"] == "ptq" and res["build_s"] > 0
    assert [f["attempt"] for f in res["fallbacks"]] == ["recipe"]
    side = json.loads(Path(res["artifact"]).with_suffix(".json").read_text())
    assert side["quantization"]["path"] == "ptq" and "accuracy_control" not in side["quantization"]
    assert {"conf", "precision", "recall", "f1"} <= set(side["threshold"])
    from edgekit.runtime import Engine

    with Engine(res["artifact"]) as eng:  # runs at its own deployment threshold
        assert eng.conf == side["threshold"]["conf"] == res["threshold"]["conf"]


@pytest.mark.slow
def test_accuracy_control_stops_at_its_budget_and_calibration_from_a_folder_is_recorded(onnx160_copy, coco8,
                                                                                        tmp_path):
    """T items 1 and 5: calibrated on flat grey frames (--calib-from), plain INT8 fails; under a tiny
    --quantize-budget-s the recipe's INT8 stages and accuracy control (after them) are recorded as skipped for the
    budget (after the first stage, which started inside it), and the chain ends with FP16. The folder is recorded
    (count, digest), untouched."""
    pytest.importorskip("nncf")
    import cv2

    from edgekit.errors import AccuracyGateError
    from edgekit.quantize import quantize

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(16):
        cv2.imwrite(str(frames / f"f{i:02d}.png"), np.full((48, 64, 3), 100 + i, np.uint8))
    before = _sha(frames)
    try:
        res = quantize(onnx160_copy, coco8, backend="openvino", calib_size=16, calib_from=frames, force=True,
                       budget_s=0.01, out_dir=tmp_path / "q", log=lambda m: None)
    except AccuracyGateError as e:
        res = e.result
    attempts = {f["attempt"]: f for f in res["fallbacks"]}
    assert list(attempts) == ["recipe", "fallback-worst-layers", "fallback-head-output-convs", "fallback-stem",
                              "fallback-whole-head", "accuracy-control", "fp16"]
    assert not attempts["recipe"]["passed"] and attempts["recipe"]["path"] == "ptq"
    ac = attempts["accuracy-control"]
    assert ac["path"] == "accuracy_control" and ac["stopped"].startswith("budget: --quantize-budget-s 0.01 spent")
    assert not ac["passed"] and ac["drop_points"] is None and ac["map50_95"] is None  # no figure stands in
    json.dumps(res, allow_nan=False)  # the result is strict JSON
    stages = list(attempts)[2:6]  # the first stage starts inside the budget and runs to its end; then it is spent
    assert attempts[stages[0]]["stopped"] is None and attempts[stages[0]]["map50_95"] is not None
    assert all(attempts[k]["stopped"].endswith("before it started") for k in stages[1:])
    assert list(attempts)[-1] == "fp16" and attempts["fp16"]["path"] == "fallback:fp16"
    calib = res["calib"]
    assert calib["folder"] == str(frames.resolve()) and calib["images_in_folder"] == 16 and calib["size"] == 16
    assert calib["domain"]["skipped"].startswith("fewer than")  # 16 frames and 4 val images: not estimated
    assert _sha(frames) == before


def test_calib_from_a_folder_with_too_few_images_is_one_line_exit_2(onnx160_copy, coco8, tmp_path, capsys):
    """T item 5: bad --calib-from input: one line naming the folder, exit 2, nothing written."""
    from edgekit.cli.main import main

    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "a.png").write_bytes(b"not an image")
    out = tmp_path / "q"
    code = main(["quantize", str(onnx160_copy), "--data", str(coco8), "--backend", "onnxruntime",
                 "--calib-from", str(frames), "-o", str(out)])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("edgekit quantize: error:")]
    assert code == 2 and len(err) == 1 and str(frames) in err[0] and "fewer than 16" in err[0]
    assert not out.exists() or not list(out.glob("model_int8*"))


def test_engine_runs_at_the_artifacts_deployment_threshold_unless_told(onnx160_copy):
    """T item 3: Engine (and so serve and bench) defaults to the conf recorded in the sidecar; a bad one is refused
    in one line naming the key."""
    pytest.importorskip("onnxruntime")
    from edgekit.errors import ArtifactError
    from edgekit.runtime import Engine

    side = onnx160_copy.with_suffix(".json")
    doc = json.loads(side.read_text())
    with Engine(onnx160_copy) as eng:
        assert eng.conf == 0.25  # no threshold recorded: the usual default
    side.write_text(json.dumps({**doc, "threshold": {"conf": 0.4125, "chosen_by": "max_f1"}}))
    with Engine(onnx160_copy) as eng, Engine(onnx160_copy, conf=0.1) as told:
        assert eng.conf == 0.4125 and told.conf == 0.1
    side.write_text(json.dumps({**doc, "threshold": {"conf": 1.5}}))
    with pytest.raises(ArtifactError) as e:
        Engine(onnx160_copy)
    assert "key 'threshold.conf': expected a confidence in [0, 1], got 1.5" in str(e.value)
    assert "\n" not in str(e.value)


def test_output_inside_the_calibration_folder_is_refused(onnx160_copy, coco8, tmp_path, capsys):
    """T item 5: --calib-from is read only: -o inside it is one line, exit 2, and the folder is unchanged."""
    import cv2

    from edgekit.cli.main import main

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(16):
        cv2.imwrite(str(frames / f"f{i:02d}.png"), np.full((48, 64, 3), 100 + i, np.uint8))
    before = _sha(frames)
    code = main(["quantize", str(onnx160_copy), "--data", str(coco8), "--backend", "onnxruntime",
                 "--calib-from", str(frames), "-o", str(frames / "out")])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("edgekit quantize: error:")]
    assert code == 2 and len(err) == 1 and "inside --calib-from" in err[0]
    assert _sha(frames) == before and not (frames / "out").exists()


# INT8 that is quick to build: statistics once, cached figures, accuracy control stopped inside NNCF ------------
def _grey_frames(folder: Path, n: int = 16) -> Path:
    """Flat grey calibration frames: ranges that make plain INT8 fail its gate."""
    import cv2

    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"f{i:02d}.png"), np.full((48, 64, 3), 100 + i, np.uint8))
    return folder


@pytest.mark.slow
def test_an_attempt_reuses_the_calibration_statistics_and_builds_the_same_model(onnx160_copy, coco8, tmp_path):
    """T item 6: the second OpenVINO attempt of a job (a larger float scope) runs no statistics pass over the
    calibration images, and its model is byte for byte the one a job without the cache builds."""
    pytest.importorskip("nncf")
    from edgekit.quantize import QuantizeConfig
    from edgekit.quantize.job import Job
    from edgekit.quantize.openvino import OpenVINOQuantizer

    job = Job(onnx160_copy, coco8, QuantizeConfig(calib_size=8, force=True, out_dir=tmp_path / "q"), log=lambda m: None)
    try:
        warm, cold = OpenVINOQuantizer(), OpenVINOQuantizer()
        nodes = warm.nodes(job)
        keep = job.recipe.keep_float.match(nodes)
        more = (job.recipe.keep_float + job.recipe.fallback[0][1]).match(nodes)
        assert set(more) > set(keep)
        folders = [job.work / name for name in ("recipe", "stage", "stage-cold")]
        for f in folders:
            f.mkdir()
        n = len(job.calib)
        warm.build_attempt(job, folders[0], keep, "auto")
        assert warm.stats.collected_images == n > 0  # one pass over the calibration set
        warm.build_attempt(job, folders[1], more, "auto")
        assert warm.stats.collected_images == n  # none for the second attempt
        cold.build_attempt(job, folders[2], more, "auto")
        assert cold.stats.collected_images == n
        assert (folders[1] / "model.bin").read_bytes() == (folders[2] / "model.bin").read_bytes()  # weights, ranges
    finally:
        job.cleanup()


@pytest.mark.slow
def test_accuracy_control_starts_from_the_cached_figures_and_stops_inside_nncf(onnx160_copy, coco8, tmp_path):
    """T item 6: accuracy control measures neither the FP32 model (the cached baseline) nor the recipe's INT8 model
    (its attempt's figures) again, collects no statistics again, and a spent --quantize-budget-s stops it at NNCF's
    first ranking validation, inside its loop (only NNCF's one-image probe of the FP32 model ran before)."""
    pytest.importorskip("nncf")
    import time

    from edgekit.quantize import QuantizeConfig
    from edgekit.quantize.job import AttemptStopped, Job
    from edgekit.quantize.openvino import OpenVINOQuantizer

    config = QuantizeConfig(calib_size=16, calib_from=_grey_frames(tmp_path / "frames"), force=True, budget_s=600,
                            out_dir=tmp_path / "q")
    job = Job(onnx160_copy, coco8, config, log=lambda m: None)
    try:
        q = OpenVINOQuantizer()
        keep = job.recipe.keep_float.match(q.nodes(job))
        a = job.attempt("recipe", lambda f: q.build_attempt(job, f, keep, "auto"), "auto", excluded=keep)
        assert a.evaluated and not a.passed and a.drop_points > 0.5
        collected = q.stats.collected_images
        job.deadline = time.perf_counter() - 1  # the budget is spent as accuracy control starts
        folder = job.work / "ac"
        folder.mkdir()
        with pytest.raises(AttemptStopped, match=r"^budget: --quantize-budget-s 600 spent after \d+ s and 1 "
                                                 r"validations, ranking and reverting layers$"):
            q.accuracy_control(job, folder, keep, "auto")
        assert q.stats.collected_images == collected
        assert not (folder / "model.xml").exists()
    finally:
        job.cleanup()


def test_calibration_domain_is_read_back_for_the_same_images_and_measured_again_for_others(coco8, tmp_path,
                                                                                         monkeypatch):
    """T item 6 (and 5): the calibration-to-eval distance (a backbone pass over every image, minutes on a loaded
    CPU) is cached beside the job's output by the content of the images compared: the same images read it back, a
    changed image is measured again."""
    pytest.importorskip("torch")
    import shutil

    import edgekit.advise.domain as domain
    from edgekit.quantize import diagnose

    monkeypatch.setattr(diagnose, "DOMAIN_MIN", 2)  # coco8 has 4 images a side
    real, calls = domain.backbone_embeddings, []
    monkeypatch.setattr(domain, "backbone_embeddings", lambda images: calls.append(len(images)) or real(images))
    calib = sorted((coco8.parent / "images" / "train").iterdir())
    val = [shutil.copy2(p, tmp_path / p.name) for p in sorted((coco8.parent / "images" / "val").iterdir())]
    val = [Path(p) for p in val]
    cache = tmp_path / "out" / ".calibration-domain.json"
    first = diagnose.calibration_domain(calib, val, 0, cache)
    assert np.isfinite(first["frechet_distance"]) and calls == [len(calib), len(val)]
    assert diagnose.calibration_domain(calib, val, 0, cache) == first and len(calls) == 2  # read back
    import cv2

    cv2.imwrite(str(val[0]), np.zeros((64, 64, 3), np.uint8))  # another image under the same name
    again = diagnose.calibration_domain(calib, val, 0, cache)
    assert len(calls) == 4 and again["frechet_distance"] != first["frechet_distance"]
