"""mAP through Engine agrees with Ultralytics' own val of the same file; per-image matches and bootstrap intervals
of mAP50-95; per-class drops for the INT8 gate."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.cli.main import main
from edgekit.eval.accuracy import coco_map
from edgekit.eval.bootstrap import Matches, bootstrap_ci, class_drops, images_to_separate, paired_diff


def test_eval_json_and_agreement_with_ultralytics_val(onnx320, coco8, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", str(onnx320), "--data", str(coco8), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["images"] == 8 and r["evaluator"] in ("faster-coco-eval", "pycocotools")
    assert r["precision"] == "fp32" and r["precision_executed"] == "fp32"
    assert 0.05 < r["map50_95"] < r["map50"] <= 1.0
    assert r["map50_95_ci"][0] <= r["map50_95"] <= r["map50_95_ci"][1]
    assert set(r["per_size"]) == {"small", "medium", "large"} and r["per_class"]["person"] is not None
    assert r["per_class_instances"]["person"] > 0 and r["per_class"]["toaster"] is None  # no toaster in coco8 val
    printed = capsys.readouterr().out
    assert f"mAP50-95 {r['map50_95']:.4f}" in printed
    pytest.importorskip("ultralytics")
    from ultralytics import YOLO

    from edgekit.data import load_dataset

    ul_yaml = load_dataset(coco8).to_ultralytics_yaml(tmp_path / "abs.yaml")
    ref = YOLO(str(onnx320), task="detect").val(data=str(ul_yaml), imgsz=320, batch=1, plots=False,
                                               verbose=False, device="cpu", project=str(tmp_path))
    # COCO-style vs Ultralytics' AP interpolation differ slightly; 8 images make it noisier than coco128
    assert abs(ref.box.map - r["map50_95"]) < 0.02
    assert abs(ref.box.map50 - r["map50"]) < 0.03


@pytest.mark.slow
def test_eval_openvino_backend_agrees(onnx320, coco8):
    pytest.importorskip("openvino")
    from edgekit.eval import evaluate

    a = evaluate(onnx320, coco8, backend="onnxruntime", progress=False)
    b = evaluate(onnx320, coco8, backend="openvino", progress=False)
    assert a["precision_executed"] == b["precision_executed"] == "fp32"
    assert abs(a["map50_95"] - b["map50_95"]) < 0.002  # both FP32 (OpenVINO's CPU default is bf16 where it can)


def test_help_lists_commands_and_doctor(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for cmd in ("export", "eval", "doctor"):
        assert cmd in text
    out = tmp_path / "doctor.json"
    assert main(["doctor", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["backends"]["onnxruntime"]["installed"] is True
    assert r["backends"]["tensorrt"]["install"] == "pip install 'edgekit[tensorrt]'"
    assert r["cpu"]["cores"] >= 1


def synth(n: int, nc: int = 3, seed: int = 0, noise: float = 4.0, fp: int = 5):
    """n images of random boxes; detections: most boxes jittered by `noise` px, plus `fp` false positives per image."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, n + 1):
        images.append({"id": i, "width": 320, "height": 320, "file_name": f"{i}.jpg"})
        for _ in range(rng.integers(1, 6)):
            c = int(rng.integers(nc))
            x, y = rng.uniform(0, 250, 2)
            w, h = rng.uniform(8, 70, 2)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "iscrowd": 0, "bbox": [x, y, w, h],
                         "area": w * h})
            if rng.uniform() < 0.85:
                j = rng.normal(0, noise, 4)
                dets.append([i, x + j[0], y + j[1], max(w + j[2], 1), max(h + j[3], 1), rng.uniform(0.3, 1), c])
        for _ in range(fp):
            x, y = rng.uniform(0, 250, 2)
            w, h = rng.uniform(8, 70, 2)
            dets.append([i, x, y, w, h, rng.uniform(0, 0.6), int(rng.integers(nc))])
    return images, anns, np.array(dets)


@pytest.mark.parametrize("n, seed", [(8, 0), (40, 1), (125, 2)])
def test_matches_reproduce_the_coco_evaluator(n, seed):
    images, anns, dets = synth(n, seed=seed)
    m = Matches.build(images, anns, dets, 3)
    assert m.map50_95() == pytest.approx(coco_map(images, anns, dets, 3)["map50_95"], abs=1e-9)


def test_bootstrap_interval_is_seeded_and_holds_the_point_estimate(tmp_path):
    m = Matches.build(*synth(40), 3)
    ci = bootstrap_ci(m, 200, seed=0)
    assert ci == bootstrap_ci(m, 200, seed=0) and ci != bootstrap_ci(m, 200, seed=1)
    assert ci[0] < m.map50_95() < ci[1]
    loaded = Matches.load(m.save(tmp_path / "m.npz"))
    assert loaded.map50_95() == pytest.approx(m.map50_95(), abs=1e-6) and bootstrap_ci(loaded, 200) == ci


def test_bootstrap_interval_narrows_with_more_images():
    small = bootstrap_ci(Matches.build(*synth(30, seed=3), 3), 300)
    large = bootstrap_ci(Matches.build(*synth(300, seed=3), 3), 300)
    assert large[1] - large[0] < 0.7 * (small[1] - small[0])


def test_paired_difference_of_a_row_with_itself_is_zero_and_a_worse_row_is_separated():
    images, anns, dets = synth(200, seed=4)
    a = Matches.build(images, anns, dets, 3)
    assert paired_diff(a, a, 200)["ci"] == [0.0, 0.0]
    worse = dets.copy()
    worse[:, 1:3] += np.random.default_rng(0).normal(0, 6, (len(dets), 2))  # sloppier boxes on the same images
    d = paired_diff(a, Matches.build(images, anns, worse, 3), 200)
    assert d["diff"] > 0 and d["ci"][0] > 0 and d["images"] == 200
    assert images_to_separate(1.0, [-1.0, 3.0], 100) == 400 and images_to_separate(0.0, [-1, 1], 100) is None


def test_class_drops_names_collapsed_classes_with_enough_instances():
    before = {"car": 0.50, "bus": 0.40, "bike": 0.30}
    after = {"car": 0.49, "bus": 0.20, "bike": 0.10}
    inst = {"car": 100, "bus": 25, "bike": 5}  # bike: too few boxes to judge
    assert class_drops(before, after, inst) == [("bus", 20.0)]
    assert class_drops(before, after, inst, min_instances=5) == [("bus", 20.0), ("bike", 20.0)]  # worst first, stable
    assert class_drops(before, after, inst, max_drop=25.0) == []
