"""Issue 19 (R2), items 6, 8, 9 and two small ones, on one tiny train-export run made by the real CLI.

The shared run: coco8 at 160 px, 1 epoch, strategies head and full (two rows, so the recommendation makes a paired
comparison), ONNX Runtime FP32, `-o R` relative to the working directory it was started in.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from treesum import tree_sha256 as checksum  # noqa: E402  (tests/treesum.py)

ROOT = Path(__file__).resolve().parent.parent
COCO8 = ROOT / "tests" / "assets" / "coco8" / "data.yaml"
TINY = ["--data", str(COCO8), "--strategies", "head,full", "--epochs", "1", "--imgsz", "160", "--batch", "4",
        "--backends", "onnxruntime", "--precisions", "fp32", "--bench-iters", "3"]
STATS = ("map50", "map50_95", "map50_95_ci", "per_class", "fps_e2e", "fps_cv", "latency_p50_ms", "bench_graph",
         "status")


def edgekit(*argv: str, cwd: Path, prelude: str = "") -> subprocess.CompletedProcess:
    """The edgekit CLI in a fresh process (this worktree's code), run in `cwd`; `prelude` runs before it."""
    code = f"import sys\n{prelude}\nfrom edgekit.cli.main import main\nsys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def records(run: Path) -> dict:
    """Every stage record of a run: (mtime, bytes)."""
    return {p.relative_to(run).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(run.rglob("stages/*.json"))}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The shared tiny run (`-o R`, relative) and what the CLI printed."""
    pytest.importorskip("ultralytics")
    pytest.importorskip("onnxruntime")
    base = tmp_path_factory.mktemp("r2run")
    data_before = checksum(COCO8.parent)
    res = edgekit("train-export", *TINY, "-o", "R", "-v", cwd=base)
    assert res.returncode == 0, res.stderr[-3000:]
    assert checksum(COCO8.parent) == data_before
    return base / "R", res


def private_copy(run_dir: Path, dst: Path) -> Path:
    shutil.copytree(run_dir, dst, symlinks=True)
    return dst


@pytest.mark.slow
def test_item8_records_name_paths_relative_to_the_run_folder(run):
    """Item 8: no record (stage records, rows.json, report.json) names the run folder or the cwd it ran in."""
    out, _ = run
    base = str(out.parent.resolve())
    files = sorted(out.rglob("stages/*.json")) + [out / "report.json"]
    assert len(files) > 8
    for p in files:
        assert base not in p.read_text(), p
    report = json.loads((out / "report.json").read_text())
    assert len(report["rows"]) == 2
    for r in report["rows"]:
        assert r["artifact"] == f"{r['strategy']}/onnx/model.onnx" and (out / r["artifact"]).is_file()
        assert r["matches"] == f"{r['strategy']}/stages/onnxruntime-fp32.matches.npz" and (out / r["matches"]).is_file()
    rows = json.loads((out / "head" / "stages" / "rows.json").read_text())
    assert rows["format"] == "edgekit-trial-rows/2" and rows["trial_dir"] == "head" and "root" not in rows


@pytest.mark.slow
def test_item8_a_copied_run_means_the_same_from_any_cwd(run, tmp_path):
    """Item 8: `report --merge` of a copied run, from another cwd, gives the identical recommendation and statistics
    (paired comparison included); `--resume` on the copy skips every stage and never reads the original (deleted)."""
    out, _ = run
    copy = private_copy(out, tmp_path / "elsewhere" / "deeper" / "R-copy")
    hidden = out.with_name("R-hidden")
    out.rename(hidden)  # the copy must not need the folder it was copied from
    try:
        _merge_and_resume_the_copy(hidden, copy, tmp_path)
    finally:
        hidden.rename(out)


def _merge_and_resume_the_copy(out: Path, copy: Path, tmp_path: Path) -> None:
    own = json.loads((out / "report.json").read_text())
    # head vs full were compared with the paired bootstrap (val_images_needed comes only from a paired interval)
    assert own["recommendation"]["val_images_needed"] > 0 and "too small to separate" in own["recommendation"]["why"]

    cwd = tmp_path / "another" / "cwd"
    cwd.mkdir(parents=True)
    res = edgekit("report", "--merge", os.path.relpath(copy, cwd), "-o", "M", cwd=cwd)
    assert res.returncode == 0, res.stderr
    merged = json.loads((cwd / "M" / "report.json").read_text())
    rec, own_rec = merged["recommendation"], own["recommendation"]
    assert {k: v for k, v in rec.items() if k != "artifact"} == {k: v for k, v in own_rec.items() if k != "artifact"}
    assert (cwd / "M" / rec["artifact"]).resolve() == (copy / own_rec["artifact"]).resolve()
    assert "unpaired_comparisons" not in rec
    key = {(r["strategy"], r["backend"]): r for r in own["rows"]}
    for r in merged["rows"]:
        assert {k: r.get(k) for k in STATS} == {k: key[r["strategy"], r["backend"]].get(k) for k in STATS}
        assert (cwd / "M" / r["matches"]).resolve() == (copy / key[r["strategy"], r["backend"]]["matches"]).resolve()

    before = records(copy)
    res = edgekit("train-export", *TINY, "-o", os.path.relpath(copy, cwd), "--resume", "-v", cwd=cwd)
    assert res.returncode == 0, res.stderr[-3000:]
    stages = [line for line in res.stderr.splitlines() if line.startswith(("[stage]", "[resume]"))]
    assert stages and all(line.endswith("done, skipped") for line in stages), stages
    assert len(stages) == 2 * 4 + 1  # train, export, build, eval per trial; one bench: both rows share one graph
    assert records(copy) == before
    resumed = json.loads((copy / "report.json").read_text())
    assert {k: v for k, v in resumed["recommendation"].items()} == own_rec


def test_item8_a_missing_matches_file_is_an_error_not_a_silent_drop(run, tmp_path):
    """Item 8: the paired statistics' files missing: report --merge says which one (exit 2), writes nothing."""
    out, _ = run
    copy = private_copy(out, tmp_path / "R")
    gone = copy / "full" / "stages" / "onnxruntime-fp32.matches.npz"
    gone.unlink()
    res = edgekit("report", "--merge", str(copy), "-o", str(tmp_path / "M"), cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith(
        f"edgekit report: error: {gone}: the per-image matches of yolov8n_coco.pt@160 ")
    assert "are missing: the recommendation's paired comparison needs them" in res.stderr
    assert not (tmp_path / "M" / "report.json").exists()


@pytest.mark.slow
def test_item6_resume_rebuilds_a_deleted_best_pt(run, tmp_path):
    """Item 6: --resume after <trial>/train/best.pt was deleted trains that trial again, reruns what follows from
    it, and exits 0 (it used to fail the same way on every retry)."""
    out, _ = run
    copy = private_copy(out, tmp_path / "R")
    best = copy / "head" / "train" / "best.pt"
    best.unlink()
    res = edgekit("train-export", *TINY, "-o", str(copy), "--resume", "-v", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    err = res.stderr
    assert f"[resume] head: train: {best} is missing or changed since it was recorded: running again" in err
    assert "[stage] head: train ..." in err and "[resume] full: train: done, skipped" in err
    assert best.is_file()
    record = json.loads((copy / "head" / "stages" / "train.json").read_text())
    assert record["produced"]["path"] == "head/train/best.pt"
    assert record["produced"]["sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    report = json.loads((copy / "report.json").read_text())
    assert [r["status"] for r in report["rows"]] == ["ok", "ok"]
    again = edgekit("train-export", *TINY, "-o", str(copy), "--resume", "-v", cwd=tmp_path)
    assert again.returncode == 0 and "[stage]" not in again.stderr


def test_small_the_trained_line_appears_once_per_trial(run):
    """Small item: the 'trained' line was printed twice per trial (by the executor and by the trial's export)."""
    _, res = run
    trained = [line.strip() for line in res.stderr.splitlines() if "trained 1 epochs in" in line]
    assert len(trained) == 2 and {line.split(":")[0] for line in trained} == {"head", "full"}, trained


BAD = [
    (["--max-map-drop", "-100"], "--max-map-drop: -100 is below 0 mAP points: give a value >= 0"),
    (["--max-map-drop", "nan"], "--max-map-drop: nan is not a number"),
    (["--max-class-drop", "-1"], "--max-class-drop: -1 is below 0 AP points: give a value >= 0"),
    (["--max-latency-ms", "0"], "--max-latency-ms: 0 must be above 0 ms"),
    (["--min-fps", "-5"], "--min-fps: -5 must be above 0 FPS"),
    (["--budget-usd", "0"], "--budget-usd: 0 must be above 0"),
    (["--budget-hours", "inf"], "--budget-hours: inf is not a number"),
    (["--epochs", "0"], "--epochs: 0 is below 1: give a value >= 1"),
    (["--batch", "-2"], "--batch: -2 is below 1: give a value >= 1"),
    (["--calib-size", "0"], "--calib-size: 0 is below 1: give a value >= 1"),
    (["--bench-iters", "0"], "--bench-iters: 0 is below 1: give a value >= 1"),
    (["--imgsz", "100"], "--imgsz: 100: every size must be a positive multiple of 32"),
    (["--imgsz", "8192"], "--imgsz: 8192: larger than 4096 px"),
    (["--imgsz", "160,160"], "--imgsz: 160 is given twice"),
    (["--strategies", "head,hed"], "--strategies: strategy 'hed': unknown strategy 'hed'"),
    (["--strategies", "head,head"], "--strategies: head is given twice"),
    (["--precisions", "fp32,int4"], "--precisions: 'int4' is not one of fp32, bf16, fp16, int8"),
    (["--backends", "onnxruntime", "--precisions", "fp16"],
     "--precisions: fp16 is built by none of --backends onnxruntime on cpu (onnxruntime: fp32, int8)"),
    (["--backends", "tensorrt"], "--backends: tensorrt does not run on --target cpu (it runs on cuda)"),
    (["--target", "cpux"], "--target: 'cpux' is none of the device kinds this can run on"),
    (["--model", "missing.pt"], "--model: missing.pt: no such file"),
    (["--models", "missing.yaml"], "--models: missing.yaml: no such file, nor an Ultralytics architecture name"),
    (["--model", "weights.onnx"], "--model: weights.onnx: expected Ultralytics weights (.pt) or an architecture yaml"),
    (["--data", "nope/data.yaml"], "--data: nope/data.yaml: no such file"),
    (["--retry-failed"], "--retry-failed: needs --resume"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_item9_every_option_is_checked_before_any_work(argv, message, tmp_path, monkeypatch, capsys):
    """Item 9: a bad option value is one line naming the option, exit 2, before training and before anything is
    written (--max-map-drop -100 used to be refused only inside the INT8 row, exit 0)."""
    from edgekit.cli.main import main

    monkeypatch.chdir(tmp_path)
    before = checksum(COCO8.parent)
    data = [] if "--data" in argv else ["--data", str(COCO8)]
    assert main(["train-export", *data, "-o", str(tmp_path / "O"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"edgekit train-export: error: {message}"), err
    assert not (tmp_path / "O").exists()
    assert checksum(COCO8.parent) == before


def test_item9_an_unreadable_model_is_refused(tmp_path, capsys):
    """Item 9: a model file that exists but cannot be read is refused up front, naming it."""
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    from edgekit.cli.main import main

    w = tmp_path / "w.pt"
    w.write_bytes(b"x")
    w.chmod(0)
    assert main(["train-export", "--data", str(COCO8), "--model", str(w), "-o", str(tmp_path / "O")]) == 2
    assert capsys.readouterr().err.strip() == f"edgekit train-export: error: --model: {w}: cannot read it " \
                                              f"(Permission denied)"
    assert not (tmp_path / "O").exists()


@pytest.mark.parametrize("argv, message", [
    (["--max-map-drop", "-100"], "--max-map-drop: -100 is below 0 mAP points: give a value >= 0"),
    (["--calib-size", "0"], "--calib-size: 0 is below 1: give a value >= 1"),
    (["--eval-limit", "0"], "--eval-limit: 0 is below 1: give a value >= 1"),
    (["--max-class-drop", "nan"], "--max-class-drop: nan is not a number"),
    (["--device", "npu"], "--device: 'npu' is none of the device kinds this can run on (cpu, cuda;"),
])
def test_item9_quantize_options_are_checked_first(argv, message, tmp_path, capsys):
    from edgekit.cli.main import main

    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not read before the options pass")
    assert main(["quantize", str(onnx), "--data", str(COCO8), "--backend", "onnxruntime", "-o",
                 str(tmp_path / "Q"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"edgekit quantize: error: {message}"), err
    assert not (tmp_path / "Q").exists()


@pytest.mark.parametrize("argv, message", [
    (["--max-map-drop", "-1"], "--max-map-drop: -1 is below 0 mAP points: give a value >= 0"),
    (["--max-latency-ms", "0"], "--max-latency-ms: 0 must be above 0 ms"),
    (["--min-fps", "nan"], "--min-fps: nan is not a number"),
])
def test_item9_report_merge_options_are_checked_first(argv, message, tmp_path, capsys):
    from edgekit.cli.main import main

    assert main(["report", "--merge", str(tmp_path), "-o", str(tmp_path / "M"), *argv]) == 2
    assert capsys.readouterr().err.strip() == f"edgekit report: error: {message}"
    assert not (tmp_path / "M").exists()


@pytest.mark.parametrize("absent, argv, message", [
    ("torch", [], "torch is not installed (train-export needs it for training): pip install 'edgekit[train]'"),
    ("ultralytics", [], "ultralytics is not installed (train-export needs it for training): "
                        "pip install 'edgekit[train]'"),
    ("openvino", ["--backends", "openvino", "--precisions", "fp32"],
     "openvino is not installed (train-export needs it for --backends openvino): pip install 'edgekit[openvino]'"),
    ("nncf", ["--backends", "openvino", "--precisions", "int8"],
     "nncf is not installed (train-export needs it for OpenVINO INT8 quantization, --precisions int8): "
     "pip install 'edgekit[openvino-quantize]'"),
])
def test_small_a_missing_package_is_named_before_any_trial(absent, argv, message, tmp_path):
    """Small item: train-export ran all four trials before saying torch was missing; now the packages the whole run
    needs are checked first: one line naming the pip extra, exit 3, nothing written."""
    res = edgekit("train-export", "--data", str(COCO8), "-o", "O", *argv, cwd=tmp_path,
                  prelude=f"sys.modules[{absent!r}] = None  # as if not installed")
    assert res.returncode == 3, res.stderr
    assert res.stderr.strip() == f"edgekit train-export: error: {message}"
    assert not (tmp_path / "O").exists()


@pytest.mark.slow
def test_small_the_calibration_warning_appears_once_per_run(tmp_path):
    """Small item: the demo printed the same calibration warning once per trial and INT8 backend (8 times); the run
    now says it once, before the trials (two sizes here: two INT8 jobs)."""
    pytest.importorskip("ultralytics")
    pytest.importorskip("onnxruntime")
    res = edgekit("train-export", "--data", str(COCO8), "--strategies", "head", "--epochs", "1", "--imgsz", "64,96",
                  "--batch", "4", "--backends", "onnxruntime", "--precisions", "int8", "--bench-iters", "3",
                  "--calib-size", "16", "--max-map-drop", "100", "-o", "O", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {COCO8}: split 'train' has 4 images, fewer than the 16 requested; calibrating on all 4",
        f"warning: {COCO8}: calibrating on 4 images, fewer than the 100 recommended (300 is the default)"]
    assert res.stderr.index(warnings[1]) < res.stderr.index(": trained 1 epochs")  # said before the trials
    report = json.loads((tmp_path / "O" / "report.json").read_text())
    assert [r["precision"] for r in report["rows"] if r["status"] == "ok"].count("int8") == 2


def test_item9_an_invalid_dataset_is_refused_before_anything_is_written(tmp_path, capsys):
    """Item 9: the data yaml is read and every train/val label validated before training, Ray or any file in -o."""
    from edgekit.cli.main import main

    data = tmp_path / "coco8"
    shutil.copytree(COCO8.parent, data)
    label = sorted((data / "labels" / "val").glob("*.txt"))[0]
    label.write_text(label.read_text() + "99 0.5 0.5 0.2 0.2\n")
    before = checksum(data)
    n = len(label.read_text().splitlines())
    assert main(["train-export", "--data", str(data / "data.yaml"), "-o", str(tmp_path / "O")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"edgekit train-export: error: {label}:{n}: class id 99"), err
    assert not (tmp_path / "O").exists() and checksum(data) == before
