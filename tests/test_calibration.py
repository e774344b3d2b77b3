"""Calibration sampling: split, class balance, size rules and their messages, the one transform, the manifest."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from edgekit.data import Sample, load_dataset
from edgekit.data.calibration import CalibrationWarning, balanced_sample, calibration_set
from edgekit.runtime.images import read_image
from edgekit.errors import DataError
from edgekit.runtime.preprocess import preprocess


def _samples(spec):
    """spec: list of class lists -> Samples with fake paths."""
    return [Sample(Path(f"img{i}.jpg"), np.asarray(c, np.int64), np.full((len(c), 4), 0.5, np.float32))
            for i, c in enumerate(spec)]


def test_balanced_sample_covers_rare_classes_first():
    spec = [[0]] * 20 + [[1], [1]] + [[2]] + [[]] * 5
    picked = balanced_sample(_samples(spec), 5, seed=3)
    names = {s.image.name for s in picked}
    assert {"img20.jpg", "img21.jpg", "img22.jpg"} <= names  # every image of the rare classes 1 and 2
    assert len(picked) == 5 and len(names) == 5


def test_balanced_sample_fills_with_background_and_is_deterministic():
    spec = [[0], [1]] + [[]] * 10
    runs = {seed: [s.image.name for s in balanced_sample(_samples(spec), 6, seed=seed)] for seed in range(8)}
    for seed, names in runs.items():
        assert names == [s.image.name for s in balanced_sample(_samples(spec), 6, seed=seed)]  # same seed, same pick
        assert names[:2] == ["img0.jpg", "img1.jpg"]  # the labelled images first, in class order
        background = names[2:]
        assert len(set(background)) == 4 and all(int(n[3:-4]) >= 2 for n in background)  # 4 distinct unlabelled
    assert len({tuple(names[2:]) for names in runs.values()}) == len(runs)  # the seed picks the background images
    assert len({frozenset(names[2:]) for names in runs.values()}) > 1


def test_calibration_comes_from_train_split(demo_data):
    ds = load_dataset(demo_data)
    with pytest.warns(CalibrationWarning, match="fewer than the 100 recommended"):
        cs = calibration_set(ds, (64, 64), size=32, seed=0)
    train = {s.image for s in ds.samples("train")}
    assert len(cs) == 32 and set(cs.items) <= train
    assert cs.info["split"] == "train"
    assert cs.info["classes_covered"] == cs.info["classes_in_split"] == 5


def test_size_is_capped_with_a_warning(demo_data):
    ds = load_dataset(demo_data)
    with pytest.warns(CalibrationWarning, match="has 96 images, fewer than the 300 requested"):
        cs = calibration_set(ds, (64, 64), size=300)
    assert len(cs) == 96


def test_refuses_below_16_unless_forced(coco8):
    ds = load_dataset(coco8)
    with pytest.raises(DataError) as e:
        calibration_set(ds, (64, 64), size=300)
    msg = str(e.value)
    assert "data.yaml" in msg and "only 4 calibration images, fewer than 16" in msg and "--force" in msg
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        cs = calibration_set(ds, (64, 64), size=300, force=True)
    assert len(cs) == 4 and cs.info["forced"]
    assert any("fewer than the 100 recommended" in str(x.message) for x in w)


def test_eval_split_needs_asking_and_warns(coco8):
    ds = load_dataset(coco8)
    with pytest.warns(CalibrationWarning, match="evaluation split 'val'"):
        cs = calibration_set(ds, (64, 64), size=8, split="val", force=True)
    assert set(cs.items) <= {s.image for s in ds.samples("val")}


def test_missing_split_is_a_clear_error(coco8):
    ds = load_dataset(coco8)
    with pytest.raises(DataError, match=r"calibration split 'test' is not defined \(splits: train, val\)"):
        calibration_set(ds, (64, 64), split="test")


def test_seeded_and_deterministic(demo_data):
    ds = load_dataset(demo_data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = calibration_set(ds, (64, 64), size=20, seed=7)
        b = calibration_set(ds, (64, 64), size=20, seed=7)
        c = calibration_set(ds, (64, 64), size=20, seed=8)
    assert a.items == b.items and a.items != c.items
    assert a.manifest()["sha256"] == b.manifest()["sha256"] != c.manifest()["sha256"]


def test_transform_is_the_runtime_letterbox(coco8):
    ds = load_dataset(coco8)
    cs = calibration_set(ds, (96, 128), size=4, force=True)
    blob = cs.transform(cs.items[0])
    ref, _ = preprocess([read_image(cs.items[0])], (96, 128), 114)
    assert blob.shape == (1, 3, 96, 128) and blob.dtype == np.float32
    np.testing.assert_array_equal(blob, ref)


def test_batches_have_a_fixed_size(coco8):
    cs = calibration_set(load_dataset(coco8), (32, 32), size=4, force=True)
    batches = list(cs.batches(3))
    assert [b.shape for b in batches] == [(3, 3, 32, 32), (3, 3, 32, 32)]
    np.testing.assert_array_equal(batches[1][1], cs.transform(cs.items[0])[0])  # padded by repeating


def test_manifest_records_files_and_hashes(coco8):
    cs = calibration_set(load_dataset(coco8), (32, 32), size=4, seed=5, force=True)
    m = cs.manifest()
    assert m["size"] == 4 and m["seed"] == 5 and m["split"] == "train" and m["imgsz"] == [32, 32]
    assert len(m["files"]) == 4 and all(len(f["sha256"]) == 64 for f in m["files"])
    assert all(f["path"].startswith("images/train/") for f in m["files"])


def test_one_set_feeds_nncf_and_onnxruntime(coco8):
    cs = calibration_set(load_dataset(coco8), (32, 32), size=4, force=True)
    pytest.importorskip("nncf")
    ds = cs.to_nncf()
    assert ds.get_length() == 4
    first = next(iter(ds.get_inference_data()))
    np.testing.assert_array_equal(first, cs.transform(cs.items[0]))
    pytest.importorskip("onnxruntime")
    from edgekit.quantize.onnxruntime import calibration_reader

    r = calibration_reader(cs, "images")
    got = [r.get_next() for _ in range(5)]
    assert [g is None for g in got] == [False] * 4 + [True]
    assert got[0]["images"].shape == (1, 3, 32, 32)
    r.set_range(2, 4)
    assert len([x for x in iter(r.get_next, None)]) == 2
