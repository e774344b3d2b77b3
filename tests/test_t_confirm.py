"""Issue T (#23), train-export half: every row at its deployment threshold, the recall gate in the sweep, the pick
selected on val and confirmed on test (or on a deterministic holdout of val), bench at the threshold.

The fast tests work on small synthetic figures and the bundled demo's files; the runs of the real CLI are slow.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgekit.eval.bootstrap import Matches
from edgekit.sweep.confirm import (confirmation, markdown_lines, rank_swaps, recommendation_order, row_threshold,
                                   sidecar_digest, threshold_fields, why_sentence)

from treesum import tree_sha256 as checksum  # noqa: E402  (tests/treesum.py)


# holdout ---------------------------------------------------------------------------------------------
def _copy_demo(dst: Path, rename: bool = False) -> Path:
    """The demo's data in `dst` (images and labels); rename: every val file under another name, listed reversed."""
    from edgekit.assets import demo_data

    src = demo_data().parent
    shutil.copytree(src, dst)
    if rename:
        for img in sorted((dst / "images" / "val").iterdir()):
            lab = dst / "labels" / "val" / f"{img.stem}.txt"
            new = f"z{img.stem[::-1]}"
            img.rename(img.with_name(new + img.suffix))
            if lab.exists():
                lab.rename(lab.with_name(new + ".txt"))
    return dst / "data.yaml"


def _keys(ds, split):
    from edgekit.data.holdout import sample_key

    return sorted(sample_key(s) for s in ds.samples(split))


def test_holdout_is_deterministic_by_content_and_left_out_of_val(tmp_path):
    """T: --holdout-frac sets aside the same images (by content) whatever their names and on every call; they are
    no longer in val (so selection, gates and thresholds never see them); the user's files are untouched."""
    from edgekit.data import load_dataset
    from edgekit.data.holdout import hold_out

    a, b = _copy_demo(tmp_path / "a"), _copy_demo(tmp_path / "b", rename=True)
    before = checksum(a.parent)
    da, info = hold_out(load_dataset(a), 0.25)
    db, info_b = hold_out(load_dataset(b), 0.25)
    again, _ = hold_out(load_dataset(a), 0.25)
    assert info["images"] == 8 and info["of"] == 32 and len(da.samples("test")) == 8
    assert len(da.samples("val")) == 24
    assert _keys(da, "test") == _keys(db, "test") == _keys(again, "test") and info["key"] == info_b["key"]
    assert not set(_keys(da, "test")) & set(_keys(da, "val"))
    assert [s.image for s in da.samples("train")] == [s.image for s in load_dataset(a).samples("train")]
    other, _ = hold_out(load_dataset(a), 0.25, seed=1)
    assert _keys(other, "test") != _keys(da, "test")  # the seed draws, the content only orders
    assert checksum(a.parent) == before


@pytest.mark.parametrize("frac, message", [
    (0.0, "--holdout-frac: 0 is not a fraction in (0, 1)"),
    (1.0, "--holdout-frac: 1 is not a fraction in (0, 1)"),
    (0.01, "--holdout-frac: 0.01 of the 32 val images of"),
    (0.99, "leaves no val image"),
])
def test_holdout_refuses_a_fraction_that_cannot_work(frac, message, demo_data):
    from edgekit.data import load_dataset
    from edgekit.data.holdout import hold_out
    from edgekit.errors import EdgekitError

    with pytest.raises(EdgekitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        hold_out(load_dataset(demo_data), frac)


def test_the_resume_keys_include_the_holdout(tmp_path):
    """T: another --holdout-frac (or none) is another dataset key, so --resume never reuses a stage across them."""
    from edgekit.sweep.pipeline import Pipeline

    data = _copy_demo(tmp_path / "d")

    def key(frac):
        return Pipeline(out=tmp_path / "run", data=data, model="m.pt", strategies=["head"], holdout_frac=frac,
                        log=lambda *a: None).data_key()

    assert len({key(None), key(0.25), key(0.5)}) == 3 and key(0.25) == key(0.25)


def test_holdout_refuses_data_that_has_a_test_split(tmp_path):
    from edgekit.data import load_dataset
    from edgekit.data.holdout import hold_out
    from edgekit.errors import EdgekitError

    y = _copy_demo(tmp_path / "d")
    y.write_text(y.read_text() + "test: images/val\n")
    with pytest.raises(EdgekitError, match="has a test split already"):
        hold_out(load_dataset(y), 0.25)


def test_train_export_checks_holdout_and_threshold_options_first(tmp_path, capsys):
    """The new options are checked before any work: one line naming the option, exit 2."""
    from edgekit.cli.main import main

    for argv, msg in ((["--holdout-frac", "1.5"], "--holdout-frac must be"),
                      (["--target-precision", "0"], "--target-precision must be a fraction in (0, 1]"),
                      (["--target-precision", "0.9", "--target-recall", "0.5"],
                       "give --target-precision or --target-recall, not both"),
                      (["--max-recall-drop", "-1"], "--max-recall-drop must be >= 0"),
                      (["--min-class-boxes", "0"], "--min-class-boxes must be >= 1")):
        code = main(["train-export", *argv, "-o", str(tmp_path / "run")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and msg in err[0], (argv, err)
    assert not (tmp_path / "run").exists()


# thresholds ------------------------------------------------------------------------------------------
def test_every_row_threshold_comes_from_its_own_matches(tmp_path):
    """T: a row's threshold, P, R, F1 (overall and per class) are chosen from its saved val matches, by max F1 or a
    target; the fields the row carries."""
    from test_eval import synth

    images, anns, dets = synth(30, seed=3)
    m = Matches.build(images, anns, dets, 3)
    path = m.save(tmp_path / "m.npz")
    names = ["a", "b", "c"]
    f1 = row_threshold(path, names)
    p80 = row_threshold(path, names, target_precision=0.8)
    assert f1["chosen_by"] == "max_f1" and p80["chosen_by"] == "target_precision 0.8"
    assert p80["reached"] and p80["precision"] >= 0.8 and p80["conf"] >= f1["conf"]
    row = threshold_fields(f1)
    assert {"threshold", "precision_at_threshold", "recall_at_threshold", "f1_at_threshold",
            "per_class_at_threshold"} <= set(row)
    assert row["threshold"] == f1["conf"] and set(row["per_class_at_threshold"]) == set(names)


def test_a_sidecar_digest_ignores_only_the_threshold(tmp_path):
    """The threshold is written after the build: the build's record must still match; any other change must not."""
    from edgekit.runtime.meta import write_sidecar

    art = tmp_path / "model.onnx"
    art.write_bytes(b"x")
    side = write_sidecar(art, {"names": ["a"], "imgsz": [160, 160]})
    d0 = sidecar_digest(side)
    write_sidecar(art, {"names": ["a"], "imgsz": [160, 160], "threshold": {"conf": 0.3}})
    assert sidecar_digest(side) == d0
    write_sidecar(art, {"names": ["b"], "imgsz": [160, 160], "threshold": {"conf": 0.3}})
    assert sidecar_digest(side) != d0
    assert sidecar_digest(art) is None


# the recommendation's order and the test ranking ---------------------------------------------------------
def _row(strategy, m, fps, **more):
    return {"model": "v8n", "imgsz": 160, "strategy": strategy, "backend": "onnxruntime", "precision": "fp32",
            "map50_95": m, "map50": m, "fps_e2e": fps, "latency_p50_ms": 1e3 / fps, "status": "ok",
            "artifact": f"{strategy}.onnx", "train_wall_s": 1.0, "threshold": 0.3, "precision_at_threshold": 0.8,
            "recall_at_threshold": 0.7, "f1_at_threshold": 0.75, "threshold_chosen_by": "max_f1",
            "per_class_at_threshold": {"a": {"precision": 0.8, "recall": 0.7, "f1": 0.75, "boxes": 9}}, **more}


def test_the_top_rows_follow_the_recommendation_and_a_reversed_test_order_is_a_disagreement():
    """T: the pick and the next candidates in the recommendation's order are confirmed; test_rank_agrees says
    whether their order by val mAP holds on test; ties never disagree."""
    from edgekit.sweep.report import recommend

    rows = [_row("a", 0.50, 10), _row("b", 0.40, 30), _row("c", 0.45, 20), _row("d", 0.30, 40)]
    top = recommendation_order(rows, lambda rs: recommend(rs, max_map_drop=0.0, paired=lambda a, b: None))
    assert [r["strategy"] for r in top] == ["a", "c", "b"]  # max_map_drop 0: the most accurate, then the next
    test = {"a": 0.41, "c": 0.47, "b": 0.35}
    c = confirmation(top, lambda t: {"split": "test", "images": 7, "figures": [
        {"map50_95": test[r["strategy"]], "map50": 0.5, "at_threshold": {"conf": 0.3, "precision": 0.7,
                                                                         "recall": 0.6, "f1": 0.65}} for r in t]}, 4)
    assert c["test_rank_agrees"] is False and c["swaps"][0]["val_higher"].endswith("a, onnxruntime fp32")
    assert top[0]["test_map50_95"] == 0.41 and c["rows"][0]["threshold"]["per_class"]["a"]["boxes"] == 9
    assert "does NOT hold on test" in why_sentence(c, top[0])
    assert any("DISAGREES" in ln for ln in markdown_lines({"confirmation": c}))
    tied = [dict(r, test_map50_95=0.4) for r in top]  # all equal on test: ties, never a disagreement
    assert rank_swaps(tied) == []


def test_without_a_test_split_the_pick_is_said_to_be_optimistic():
    c = confirmation([_row("a", 0.5, 10)], None, 16)
    assert c == {"split": None, "rows_compared": 16, "val_optimistic": True}
    assert "best of 16 row(s)" in why_sentence(c, {}) and "--holdout-frac" in why_sentence(c, {})


# real runs of the CLI (slow) ----------------------------------------------------------------------------
def _tiny(dst: Path, test: bool) -> Path:
    """12 train, 8 val (and 6 test) images of the demo in `dst`, with their labels."""
    from edgekit.assets import demo_data

    src = demo_data().parent
    pick = {"train": sorted((src / "images" / "train").iterdir())[:12]}
    val = sorted((src / "images" / "val").iterdir())
    pick["val"], pick["test"] = val[:8], (val[8:14] if test else [])
    for split, imgs in pick.items():
        for img in imgs:
            for kind, f in (("images", img), ("labels", src / "labels" / img.parent.name / f"{img.stem}.txt")):
                if f.exists():
                    (dst / kind / split).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, dst / kind / split / f.name)
    text = (src / "data.yaml").read_text() + ("test: images/test\n" if test else "")
    (dst / "data.yaml").write_text(text)
    return dst / "data.yaml"


TINY = ["--strategies", "head,full", "--epochs", "1", "--imgsz", "160", "--batch", "4", "--backends", "onnxruntime",
        "--precisions", "fp32", "--bench-iters", "3"]


def _records(run: Path, pattern: str) -> dict:
    return {p.relative_to(run).as_posix(): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(run.rglob(pattern))}


@pytest.fixture(scope="module")
def test_split_run(tmp_path_factory):
    pytest.importorskip("ultralytics")
    pytest.importorskip("onnxruntime")
    from test_r2_sweep import edgekit

    base = tmp_path_factory.mktemp("tconfirm")
    data = _tiny(base / "data", test=True)
    before = checksum(data.parent)
    res = edgekit("train-export", "--data", str(data), *TINY, "-o", "R", cwd=base)
    assert res.returncode == 0, res.stderr[-3000:]
    assert checksum(data.parent) == before
    return base, data, res


@pytest.mark.slow
def test_report_carries_test_map_and_rank_agreement_and_every_row_its_threshold(test_split_run):
    """T: with a test split, report.json has test_map50_95 (per evaluated row and for the pick) and
    test_rank_agrees; every row has its threshold, P, R and F1 (the readable table too), recorded in its artifact's
    sidecar; the speed ran NMS at the threshold (bench_conf); --resume reuses the test evaluations."""
    from edgekit import Engine
    from test_r2_sweep import edgekit

    base, data, res = test_split_run
    run = base / "R"
    doc = json.loads((run / "report.json").read_text())
    rows = [r for r in doc["rows"] if r["status"] == "ok"]
    assert len(rows) == 2
    for r in rows:
        for k in ("threshold", "precision_at_threshold", "recall_at_threshold", "f1_at_threshold"):
            assert isinstance(r[k], float) and 0 <= r[k] <= 1, (k, r[k])
        side = json.loads((run / r["artifact"]).with_suffix(".json").read_text())
        assert side["threshold"]["conf"] == r["threshold"]
        with Engine(run / r["artifact"]) as eng:  # Engine (and serve) default to it
            assert eng.conf == r["threshold"]
    owner = next(r for r in rows if "speed_shared_with" not in r)
    assert all(r["bench_conf"] == owner["threshold"] for r in rows)  # one graph: measured at its owner's threshold
    c = doc["confirmation"]
    assert c["split"] == "test" and c["images"] == 6 and len(c["rows"]) == 2
    assert isinstance(doc["test_rank_agrees"], bool) and doc["test_rank_agrees"] == c["test_rank_agrees"]
    assert all(isinstance(r["test_map50_95"], float) for r in rows)
    rec = doc["recommendation"]
    assert rec["test_map50_95"] == c["rows"][0]["test_map50_95"] and rec["test_rank_agrees"] is c["test_rank_agrees"]
    assert rec["threshold"]["per_class"] and "test images it scores mAP50-95" in rec["why"]
    md = (run / "report.md").read_text()
    assert "| conf | P | R | F1 |" in md and "## Confirmation on unseen images" in md
    again = _records(run, "*.test.json")
    assert len(again) == 2
    res2 = edgekit("train-export", "--data", str(data), *TINY, "-o", "R", "--resume", cwd=base)
    assert res2.returncode == 0, res2.stderr[-3000:]
    assert _records(run, "*.test.json") == again
    assert json.loads((run / "report.json").read_text())["confirmation"]["rows"] == c["rows"]


@pytest.mark.slow
def test_holdout_frac_confirms_on_images_that_chose_nothing(tmp_path):
    """T: without a test split --holdout-frac sets aside part of val: rows are evaluated (and trained, gated,
    thresholded) on val less it, the pick is confirmed on it; without it, the report says the pick is optimistic."""
    pytest.importorskip("ultralytics")
    pytest.importorskip("onnxruntime")
    from test_r2_sweep import edgekit

    data = _tiny(tmp_path / "data", test=False)
    res = edgekit("train-export", "--data", str(data), *TINY, "--holdout-frac", "0.25", "--target-recall", "0.5",
                  "-o", "H", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads((tmp_path / "H" / "report.json").read_text())
    assert doc["config"]["threshold"] == "recall:0.5"
    assert all(r["threshold_chosen_by"] == "target_recall 0.5" for r in doc["rows"] if r["status"] == "ok")
    assert doc["config"]["holdout"]["images"] == 2 and doc["config"]["holdout"]["of"] == 8
    assert all(r["eval_images"] == 6 for r in doc["rows"] if r["status"] == "ok")
    assert len(list((tmp_path / "H" / "head" / "train" / ".data" / "images" / "val").iterdir())) == 6
    assert doc["confirmation"]["split"] == "holdout" and doc["confirmation"]["images"] == 2
    assert isinstance(doc["recommendation"]["test_map50_95"], float)


# the recall gate of the sweep's reduced precisions ----------------------------------------------------------
def _collapsing_openvino(monkeypatch):
    """onnx_to_openvino that, for fp16, converts a copy of the ONNX with class 0 collapsed (scores x 0.01)."""
    import edgekit.export.openvino as ov_export
    from test_t_quantize import _collapse

    real = ov_export.onnx_to_openvino

    def convert(onnx_path, out_dir=None, *a, precision=None, **k):
        if precision == "fp16":
            work = Path(out_dir).parent / "collapsed"
            work.mkdir(parents=True, exist_ok=True)
            for f in Path(onnx_path).parent.glob(f"{Path(onnx_path).stem}.*"):
                shutil.copy2(f, work / f.name)
            onnx_path = work / Path(onnx_path).name
            _collapse(onnx_path, cls=0)
        return real(onnx_path, out_dir, *a, precision=precision, **k)

    monkeypatch.setattr(ov_export, "onnx_to_openvino", convert)


def _collapsing_ncnn(monkeypatch):
    """NcnnBackend.build_impl that, for fp16, builds from its private ONNX copy with class 0 collapsed."""
    from edgekit.runtime.backends.ncnn import NcnnBackend
    from test_t_quantize import _collapse

    real = NcnnBackend.build_impl

    def build_impl(cls, source, precision, *a, **k):
        if precision == "fp16":
            _collapse(source, cls=0)
        return real(source, precision, *a, **k)

    monkeypatch.setattr(NcnnBackend, "build_impl", classmethod(build_impl))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openvino", "ncnn"])
def test_a_reduced_precision_with_a_collapsed_class_fails_the_sweeps_recall_gate(backend, onnx160_copy, coco8,
                                                                                 tmp_path, monkeypatch):
    """T: an fp16 artifact (OpenVINO, or ncnn: a declared build) whose 'person' scores are scaled by 0.01 fails
    train-export's gate on recall at the FP32 artifact's threshold, the message naming the class and both recalls,
    while the mAP gates are left wide open; its sidecar is marked FAILED with the figures."""
    from edgekit.errors import AccuracyGateError
    from edgekit.sweep.pipeline import Pipeline
    from edgekit.sweep.variants import Variant
    from edgekit.runtime.backends import get_backend

    if backend == "ncnn" and not get_backend("ncnn").can_build("fp16"):
        pytest.skip("ncnn and pnnx are not installed (pip install 'edgekit[ncnn-build]')")
    pytest.importorskip("openvino" if backend == "openvino" else "ncnn")
    (_collapsing_openvino if backend == "openvino" else _collapsing_ncnn)(monkeypatch)
    pipe = Pipeline(out=tmp_path, data=coco8, model=tmp_path / "unused.pt", strategies=["head"], imgsz=160,
                    backends=[backend], max_map_drop=100.0, max_class_drop=None, min_class_boxes=5,
                    log=lambda *a: None)
    pipe.run_id = "one run"
    with pytest.raises(AccuracyGateError) as e:
        pipe.build(onnx160_copy, Variant(backend, "fp16"), tmp_path / "head")
    drops = e.value.result["recall_drops"]
    person = next(d for d in drops if d["class"] == "person")
    assert person["recall_fp32"] > 0 and person["recall"] == 0.0
    assert (f"class 'person' recall {person['recall_fp32']:.3f} (FP32) -> 0.000 at conf") in str(e.value)
    side = json.loads(next((tmp_path / "head" / f"{backend}_fp16").glob("*.json")).read_text())
    assert side["status"] == "FAILED" and side["accuracy_gate"]["recall_drops"] == drops
    assert side["accuracy_gate"]["threshold_fp32"]["conf"] > 0 and "conf" in side["threshold"]
