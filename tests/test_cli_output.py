"""What the command line prints: JSON only on stdout with --json -, third-party logs only with -v, -q quiet."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIRD_PARTY_MARKS = ("INFO:nncf", "nncf:", "Ultralytics", "ONNX:", "Predict:", "PyTorch:", "Statistics collection")


def _edgekit(*args, pre: str = "") -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter (real stdout/stderr file descriptors, C-level output included)."""
    code = f"{pre}\nimport sys\nfrom edgekit.cli.main import main\nsys.exit(main({[str(a) for a in args]!r}))\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)


def test_doctor_json_stdout_is_json_only():
    r = _edgekit("doctor", "--json", "-")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["edgekit"] and "backends" in doc
    assert "backends:" in r.stderr  # the readable report moved to stderr


def test_eval_json_stdout_is_json_only(onnx160, coco8):
    r = _edgekit("eval", onnx160, "--data", coco8, "--json", "-")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)  # faster-coco-eval's summary table would break this
    assert 0 < doc["map50_95"] <= doc["map50"] <= 1 and doc["images"] == 8
    assert "mAP50-95" in r.stderr


@pytest.mark.slow
def test_quantize_default_output_has_no_third_party_lines_and_quiet_has_none(onnx160_copy, coco8, tmp_path):
    """NNCF's INFO lines and progress bars stay out of the default output; -q shows errors only (issue 19: "-q still
    prints summaries"), and the JSON asked for with --json - is all that is printed."""
    pytest.importorskip("nncf")
    args = ("quantize", onnx160_copy, "--data", coco8, "--backend", "openvino", "--calib-split", "val",
            "--calib-size", "8", "--force", "--max-map-drop", "100", "--eval-limit", "4")
    r = _edgekit(*args, "-o", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    both = r.stdout + r.stderr
    assert not [m for m in THIRD_PARTY_MARKS if m in both], both
    assert r.stdout.count("\n") == 1 and "PASSED" in r.stdout  # the result line
    assert "[openvino 1] recipe:" in r.stderr  # edgekit's own progress is shown
    q = _edgekit("-q", *args, "-o", tmp_path / "b", "--json", "-")
    assert q.returncode == 0 and q.stderr == "", q.stderr
    assert json.loads(q.stdout)["status"] == "PASSED"  # the JSON only, no summary line


@pytest.mark.slow
def test_verbose_shows_third_party_logs_on_stderr(onnx160_copy, coco8, tmp_path):
    """-v routes NNCF's log to stderr (it is routed, not dropped); stdout still carries the result only."""
    pytest.importorskip("nncf")
    r = _edgekit("quantize", onnx160_copy, "--data", coco8, "--backend", "openvino", "--calib-split", "val",
                 "--calib-size", "8", "--force", "--max-map-drop", "100", "--eval-limit", "4", "-v",
                 "-o", tmp_path / "v")
    assert r.returncode == 0, r.stderr
    assert "ignored nodes were found" in r.stderr  # an NNCF INFO message
    assert r.stdout.count("\n") == 1 and "PASSED" in r.stdout


@pytest.mark.slow
def test_export_default_output_is_edgekit_lines_only(weights, tmp_path):
    pytest.importorskip("ultralytics")
    r = _edgekit("export", weights, "--imgsz", "160", "--no-parity", "-o", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert not [m for m in THIRD_PARTY_MARKS if m in r.stderr], r.stderr
    assert len(r.stderr.splitlines()) <= 3, r.stderr


def test_cli_leaves_root_logger_and_warning_filters_alone():
    """main() in-process: the root logger's level and handlers and the warning filters are as before."""
    import logging
    import warnings

    from edgekit.cli.main import main

    root = logging.getLogger()
    before = (root.level, list(root.handlers), list(warnings.filters), warnings.showwarning, logging.lastResort)
    assert main(["doctor", "-q"]) == 0
    assert (root.level, list(root.handlers), list(warnings.filters), warnings.showwarning, logging.lastResort) == before


def test_eval_without_evaluator_fails_before_inference(onnx160, coco8):
    """faster-coco-eval and pycocotools blocked: the pip hint comes before any image is run through the model."""
    pre = ("import sys\nsys.modules['faster_coco_eval'] = None; sys.modules['pycocotools'] = None\n"
           "import edgekit.eval.accuracy as acc\n"
           "def _no_engine(*a, **k): raise SystemExit('an Engine was built before the dependency check')\n"
           "acc.Engine = _no_engine\n")
    r = _edgekit("eval", onnx160, "--data", coco8, pre=pre)
    assert r.returncode == 3, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "edgekit eval: error: faster_coco_eval is not installed (needed for mAP evaluation): "
        "pip install 'edgekit[eval]'")
