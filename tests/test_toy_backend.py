"""A backend added from one file (tests/toy_backend.py) and one registration call reaches every command."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.cli.main import main

IMGSZ = 160


@pytest.fixture(scope="module")
def toy(coco8, tmp_path_factory):
    """coco8's val split as a toy .npz artifact, with the toy backend registered for this module's tests."""
    from edgekit.data import load_dataset
    from edgekit.runtime import backends
    from toy_backend import write_toy

    backends.register("toy", "toy_backend:ToyBackend")  # the one registration call
    ds = load_dataset(coco8)
    d = tmp_path_factory.mktemp("toy")
    yield {"full": write_toy(d / "model.npz", ds, "val", IMGSZ), "half": write_toy(d / "half.npz", ds, "val", IMGSZ,
                                                                                   keep=len(ds.samples("val")) // 2),
           "ds": ds}
    backends.BACKENDS.pop("toy", None)
    backends._classes.pop("toy", None)


def test_toy_appears_in_doctor(toy, tmp_path):
    out = tmp_path / "doctor.json"
    assert main(["doctor", "--json", str(out)]) == 0
    b = json.loads(out.read_text())["backends"]["toy"]
    assert b["installed"] is True and b["devices"] == ["cpu"] and b["install"] == "pip install numpy"


def test_toy_is_picked_by_suffix(toy):
    from edgekit.runtime.backends import get_backend, pick_backend
    from toy_backend import ToyBackend

    assert pick_backend("x.npz") == "toy" and pick_backend(toy["full"], "cpu") == "toy"
    assert get_backend("toy") is ToyBackend


def test_toy_runs_through_engine_with_batch_padding(toy):
    from edgekit import Engine

    samples = toy["ds"].samples("val")
    with Engine(toy["full"]) as eng:
        assert eng.backend_name == "toy" and eng.backend.fixed_batch == 2 and eng.precision_executed == "fp32"
        three = eng([s.image for s in samples[:3]])  # batch 3 on a batch-2 model: two chunks, the last padded
        for s, d in zip(samples[:3], three):
            assert sorted(d.class_ids.tolist()) == sorted(int(c) for c in s.classes)
            assert np.array_equal(d.boxes, eng(s.image).boxes)
        assert len(eng(np.full((64, 80, 3), 7, np.uint8))) == 0  # an image it does not know: nothing


def test_toy_eval_computes_map(toy, tmp_path):
    full, half = tmp_path / "full.json", tmp_path / "half.json"
    assert main(["eval", str(toy["full"]), "--data", str(toy["ds"].source), "--json", str(full)]) == 0
    assert main(["eval", str(toy["half"]), "--data", str(toy["ds"].source), "--json", str(half)]) == 0
    f, h = json.loads(full.read_text()), json.loads(half.read_text())
    assert f["backend"] == "toy" and f["images"] == len(toy["ds"].samples("val"))
    assert f["map50_95"] > 0.99  # it answers the labels: through letterbox, decode and NMS nothing is lost
    assert 0.1 < h["map50_95"] < 0.9  # half the images answered: a real, lower figure


def test_toy_bench_latency_and_throughput(toy, tmp_path):
    out = tmp_path / "bench.json"
    images = toy["ds"].samples("val")[0].image.parent
    assert main(["bench", str(toy["full"]), "--images", str(images), "--batch", "1,3", "--streams", "2",
                 "--warmup", "1", "--iters", "3", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["backend"] == "toy" and r["fixed_batch"] == 2 and r["latency_ms"]["e2e"]["n"] == 3
    assert r["mode"]["throughput"]["concurrency"] == "parallel sessions on threads"
    assert r["mode"]["throughput"]["streams"] == 2
    assert set(r["throughput"]) == {"1", "3"} and all(v > 0 for v in r["throughput"].values())


def test_toy_is_offered_by_train_export(toy):
    from edgekit.sweep.variants import variants_for

    rows = [(v.backend, v.precision) for v in variants_for("cpu", ["toy"])]
    assert ("toy", "fp32") in rows and ("toy", "int8") not in rows  # it executes fp32 only
    assert variants_for("cuda:0", ["toy"]) == []  # it runs on cpu only
