"""edgekit report --merge: one report from the stage records of several train-export runs (moved, untimed, refused)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgekit.sweep.pipeline import Pipeline

TINY = dict(epochs=1, batch=4, backends=["onnxruntime"], precisions=["fp32"], bench_iters=3, calib_size=16)
SAME = ("map50", "map50_95", "map50_95_ci", "latency_p50_ms", "latency_p90_ms", "infer_p50_ms", "fps_e2e", "fps_cv",
        "model_mb", "bench_graph", "bench_node", "status")


def _run(out: Path, data: Path, weights: Path, strategy: str, imgsz: int) -> Path:
    Pipeline(out=out, data=data, model=weights, strategies=[strategy], imgsz=imgsz, log=lambda *a: None, **TINY).run()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, coco8, weights):
    """Run A (head at 64 px) and run B (full at 96 px: another graph), each by its own train-export."""
    pytest.importorskip("ultralytics")
    pytest.importorskip("onnxruntime")
    base = tmp_path_factory.mktemp("runs")
    return _run(base / "A", coco8, weights, "head", 64), _run(base / "B", coco8, weights, "full", 96)


def _merge(capsys, out: Path, *dirs) -> tuple[int, dict | None, str, str]:
    from edgekit.cli.main import main

    code = main(["report", "--merge", *map(str, dirs), "-o", str(out)])
    cap = capsys.readouterr()
    doc = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    return code, doc, cap.out, cap.err


def _key(r: dict) -> tuple:
    return r["model"], r["imgsz"], r["strategy"], r["backend"], r["precision"]


def _copy(src: Path, dst: Path, drop_bench: bool = False) -> Path:
    shutil.copytree(src, dst)
    for p in dst.rglob("*.bench.json") if drop_bench else ():
        p.unlink()
    return dst


@pytest.mark.slow
def test_merge_rebuilds_one_report_from_two_runs(runs, tmp_path, capsys):
    a, b = runs
    code, doc, out, _ = _merge(capsys, tmp_path / "M", a, b)
    assert code == 0
    own = {_key(r): r for run in runs for r in json.loads((run / "report.json").read_text())["rows"]}
    assert len(own) == 2 and sorted(map(_key, doc["rows"])) == sorted(own)
    for r in doc["rows"]:
        assert {k: r.get(k) for k in SAME} == {k: own[_key(r)].get(k) for k in SAME}
        assert r["fps_e2e"] is not None and not r.get("untimed") and not r.get("speed_shared_with")
    rec = doc["recommendation"]
    assert rec["artifact"] in {r["artifact"] for r in doc["rows"]} and rec["why"] in out
    assert "| head |" in out and "| full |" in out
    assert (tmp_path / "M" / "report.md").read_text().count("| yolov8n_coco.pt |") == 2
    assert (tmp_path / "M" / "pareto.png").stat().st_size > 0
    assert doc["config"]["merged_from"] == [str(a.resolve()), str(b.resolve())]
    assert doc["config"]["imgsz"] == [64, 96] and doc["config"]["strategies"] == ["head", "full"]
    code, whole, _, _ = _merge(capsys, tmp_path / "M2", a.parent)  # a folder holding both runs: the same report
    assert code == 0 and whole["rows"] == doc["rows"] and whole["recommendation"] == rec


ROW = {"model": "yolov8n_coco.pt", "imgsz": 64, "strategy": "head", "backend": "onnxruntime", "precision": "fp32"}


@pytest.mark.parametrize("rows", [
    [{**ROW, "matches": "/old/X/yolov8n-coco-64/head/stages/onnxruntime-fp32.matches.npz",
      "artifact": "/old/X/y.onnx"}],
    [{**ROW, "status": "error", "error": "no row produced: the layout names the trial's place"}],
])
def test_a_nested_trial_finds_its_run_folder(tmp_path, rows):
    """A multi-model/size run keeps trials in <run>/<model>-<imgsz>/<strategy>: the run is two folders up."""
    from edgekit.sweep.merge import load_run

    stages = tmp_path / "X" / "yolov8n-coco-64" / "head" / "stages"
    stages.mkdir(parents=True)
    (stages / "rows.json").write_text(json.dumps({
        "format": "edgekit-trial-rows/1", "root": "/old/X", "data": "d", "target": "cpu",
        "trial": {"model": "yolov8n_coco.pt", "imgsz": 64, "strategy": "head"}, "rows": rows}))
    (t,) = load_run(tmp_path)["trials"]
    assert t["run"] == tmp_path / "X"
    new = str((tmp_path / "X").resolve())
    assert t["doc"]["root"] == new
    if "matches" in rows[0]:
        assert t["doc"]["rows"][0] == {**ROW, "artifact": f"{new}/y.onnx",
                                       "matches": f"{new}/yolov8n-coco-64/head/stages/onnxruntime-fp32.matches.npz"}


def test_merge_of_a_moved_run_rebases_its_paths(runs, tmp_path, capsys):
    a, b = runs
    moved = tmp_path / "elsewhere" / "B-moved"
    shutil.move(str(_copy(b, tmp_path / "B")), moved)
    code, doc, _, _ = _merge(capsys, tmp_path / "M", a, moved)
    assert code == 0
    row = next(r for r in doc["rows"] if r["strategy"] == "full")
    before = next(r for r in json.loads((b / "report.json").read_text())["rows"])
    for k in ("artifact", "matches"):  # the files recommend's paired bootstrap reads are the moved run's
        assert (tmp_path / "M" / row[k]).resolve() == (moved / before[k]).resolve()  # relative to report.json
        assert (tmp_path / "M" / row[k]).exists()
    assert row["fps_e2e"] == before["fps_e2e"] and row["map50_95"] == before["map50_95"]
    assert doc["config"]["merged_from"][1] == str(moved.resolve())


def test_untimed_rows_are_shown_and_never_recommended(runs, tmp_path, capsys):
    a, b = runs
    untimed = _copy(b, tmp_path / "B-untimed", drop_bench=True)
    code, doc, out, err = _merge(capsys, tmp_path / "M", a, untimed)
    assert code == 0
    row = next(r for r in doc["rows"] if r["strategy"] == "full")
    assert row["status"] == "ok" and row["untimed"] is True and row.get("fps_e2e") is None
    assert doc["recommendation"]["strategy"] == "head"  # the only timed row
    assert "ok, untimed (never recommended)" in out and "1 row(s) untimed" in err
    code, doc, _, _ = _merge(capsys, tmp_path / "M2", untimed)
    assert code == 0 and doc["recommendation"]["artifact"] is None
    assert doc["recommendation"]["why"].startswith("Nothing is recommended: no produced artifact was timed")


def test_a_graph_timed_only_in_another_run_lends_its_speed(runs, tmp_path, capsys):
    a, _ = runs
    copy = _copy(a, tmp_path / "A-copy", drop_bench=True)  # the same trial again, its speed never measured
    code, doc, _, _ = _merge(capsys, tmp_path / "M", copy, a)
    assert code == 0
    (row,) = doc["rows"]  # identical duplicates are kept once
    (own,) = json.loads((a / "report.json").read_text())["rows"]
    assert row["fps_e2e"] == own["fps_e2e"] and row["bench_graph"] == own["bench_graph"]
    assert row["speed_shared_with"] == f"head: onnxruntime-fp32 in {a}"
    assert (tmp_path / "M" / row["matches"]).resolve().is_relative_to(copy.resolve())


def _empty(runs, tmp):
    (tmp / "empty").mkdir()
    return [tmp / "empty"], f"{tmp / 'empty'}: no train-export stage records (<trial>/stages/rows.json) under it"


def _missing(runs, tmp):
    return [runs[0], tmp / "nope"], f"{tmp / 'nope'}: no such folder"


def _other_data(runs, tmp):
    """A real run on a copy of coco8 with one label changed."""
    from edgekit.assets import demo_weights

    data = tmp / "coco8"
    shutil.copytree(Path(__file__).parent / "assets" / "coco8", data)
    label = sorted((data / "labels" / "val").glob("*.txt"))[0]
    label.write_text(label.read_text() + "0 0.5 0.5 0.2 0.2\n")
    c = _run(tmp / "C", data / "data.yaml", demo_weights(), "head", 64)
    key = [json.loads((run / "head" / "stages" / "rows.json").read_text())["data"] for run in (runs[0], c)]
    return [runs[0], c], (f"{runs[0]} and {c} were made on different data (dataset content keys {key[0][:12]} vs "
                          f"{key[1][:12]}): their mAP and FPS are not comparable")


def _edited(runs, tmp, field, value):
    copy = _copy(runs[0], tmp / "A-edited")
    p = copy / "head" / "stages" / "rows.json"
    doc = json.loads(p.read_text())
    if field == "map50_95":
        doc["rows"][0]["map50_95"] = value
    else:
        doc[field] = value
    p.write_text(json.dumps(doc))
    return runs[0], copy, p


def _conflict(runs, tmp):
    a, copy, p = _edited(runs, tmp, "map50_95", 0.999)
    before = json.loads((a / "head" / "stages" / "rows.json").read_text())["rows"][0]["map50_95"]
    return [a, copy], (f"{a / 'head' / 'stages' / 'rows.json'} and {p}: yolov8n_coco.pt@64 head onnxruntime-fp32 has "
                       f"mAP50-95 {before:.4f} in one and 0.9990 in the other; merge runs of one sweep, not two "
                       f"versions of a trial")


def _other_target(runs, tmp):
    a, copy, _ = _edited(runs, tmp, "target", "cuda:0")
    return [a, copy], (f"{a} and {copy} were made on different targets (cpu vs cuda:0): their mAP and FPS are not "
                       f"comparable")


def _bad_format(runs, tmp):
    _, copy, p = _edited(runs, tmp, "format", "edgekit-trial-rows/0")
    return [copy], f"{p}: format 'edgekit-trial-rows/0' is not edgekit-trial-rows/2"


def _bad_rows(runs, tmp):
    _, copy, p = _edited(runs, tmp, "rows", [{"model": "m", "imgsz": 64, "strategy": "head"}])
    return [copy], f"{p}: rows[0]: missing key(s) backend, precision"


def _bad_bench(runs, tmp):
    copy = _copy(runs[0], tmp / "A-bench")
    p = copy / "head" / "stages" / "onnxruntime-fp32.bench.json"
    doc = json.loads(p.read_text())
    del doc["result"]["fps_cv"]
    p.write_text(json.dumps(doc))
    return [copy], f"{p}: result: missing key(s) fps_cv"


@pytest.mark.slow
@pytest.mark.parametrize("case", [_empty, _missing, _other_data, _conflict, _other_target, _bad_format, _bad_rows,
                                  _bad_bench])
def test_bad_input_merge(case, runs, tmp_path, capsys):
    dirs, message = case(runs, tmp_path)
    code, doc, _, err = _merge(capsys, tmp_path / "M", *dirs)
    assert code == 2 and doc is None and not (tmp_path / "M").exists()
    assert err.strip().splitlines()[-1] == f"edgekit report: error: {message}"


def test_bad_input_merge_output_is_a_merged_run(runs, capsys):
    a, b = runs
    before = (a / "report.json").read_bytes()
    from edgekit.cli.main import main

    assert main(["report", "--merge", str(a), str(b), "-o", str(a)]) == 2
    assert capsys.readouterr().err.strip() == (f"edgekit report: error: -o: {a} is one of the merged runs: its own "
                                               f"report.json would be overwritten; give another folder")
    assert (a / "report.json").read_bytes() == before
