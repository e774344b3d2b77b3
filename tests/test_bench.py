"""edgekit bench: statistics, JSON schema, reports and compare, Engine.stream, the torch backend."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgekit.bench.timing import STAGES, STAT_KEYS, StageTimer, summarize

# --- statistics --------------------------------------------------------------------------------


def test_summarize_matches_numpy():
    rng = np.random.default_rng(0)
    a = rng.gamma(2.0, 3.0, size=1001)
    s = summarize(a, ndigits=9)
    for k, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        assert s[k] == pytest.approx(np.percentile(a, q), abs=1e-8)
    assert s["mean"] == pytest.approx(a.mean(), abs=1e-8)
    assert s["std"] == pytest.approx(a.std(), abs=1e-8)
    assert (s["min"], s["max"], s["n"]) == (pytest.approx(a.min()), pytest.approx(a.max()), 1001)


def test_summarize_known_values_and_empty():
    s = summarize(range(1, 101))  # 1..100
    assert (s["p50"], s["p90"], s["p99"], s["mean"]) == (50.5, 90.1, 99.01, 50.5)
    assert summarize([])["n"] == 0 and summarize([])["p50"] is None


def test_stage_timer_collects_ms():
    t = StageTimer("a")
    with t("a"):
        sum(range(1000))
    t.add("b", 2.5)
    s = t.summary()
    assert s["a"]["n"] == 1 and s["a"]["mean"] >= 0 and s["b"]["p50"] == 2.5
    t.clear()
    assert t.summary()["a"]["n"] == 0


# --- the benchmark itself ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench_result(onnx320, tmp_path_factory):
    from edgekit.bench import run_bench

    return run_bench(onnx320, batches=(1, 2), warmup=1, iters=4, log=None)


def test_json_schema(bench_result):
    r = bench_result
    for k in ("latency_ms", "fps_e2e", "throughput", "peak_rss_mb", "model_mb", "device", "warmup", "iters",
              "cold_start_ms", "backend", "artifact", "mode", "fps_infer_only", "throughput_infer_only"):
        assert k in r, k
    assert set(r["latency_ms"]) == set(STAGES)
    for stage, s in r["latency_ms"].items():
        for k in (*STAT_KEYS,):
            assert isinstance(s[k], float) and s[k] >= 0, (stage, k)
        assert s["p50"] <= s["p90"] <= s["p99"] and s["n"] == 4
    assert set(r["throughput"]) == {"1", "2"} and all(v > 0 for v in r["throughput"].values())
    assert r["fps_e2e"] == r["throughput"]["1"]
    assert r["backend"] == "onnxruntime" and r["warmup"] == 1 and r["iters"] == 4
    assert r["precision"] == "fp32" and r["precision_executed"] == "fp32"
    assert r["mode"]["latency"]["batch"] == 1 and r["mode"]["throughput"]["streams"] >= 1
    assert isinstance(r["device"], dict) and r["device"]["cpu"]["cores"] >= 1
    assert 1 < r["model_mb"] < 30 and r["peak_rss_mb"] > 10 and r["cold_start_ms"] > 0
    json.dumps(r)  # serializable as is


def test_result_validates_against_documented_schema(bench_result):
    """Every result carries the stability verdict (stable, cv) and the environment, as schema.json documents."""
    from edgekit.bench.schema import check, load_schema, validate

    assert validate(bench_result) == [] and check(bench_result) == []
    assert {"stable", "cv", "environment"} <= set(load_schema()["required"])
    assert set(bench_result["stability"]["throughput"]) == {"1", "2"}
    assert bench_result["stability"]["latency"]["samples"] == 4
    assert isinstance(bench_result["stable"], bool) and bench_result["environment"]["cpu"]["flags"] is not None


def test_report_and_compare(bench_result, tmp_path):
    from edgekit.bench.compare import compare_markdown, compare_table, load_results, plot_compare
    from edgekit.bench.report import format_table, to_markdown

    text = format_table(bench_result)
    assert "p99" in text and "fps_infer_only" in text and "e2e" in text
    assert "stability: " in text and "environment: " in text and "load avg" in text
    unstable = dict(bench_result, stable=False)
    assert "**UNSTABLE result**" in to_markdown(unstable) and "UNSTABLE" in format_table(unstable)
    md = to_markdown(bench_result).splitlines()
    header = md.index("| stage (ms) | mean | p50 | p90 | p99 | std |")
    rows = [r.strip("| ").split(" | ") for r in md[header + 2:header + 2 + len(STAGES)]]
    assert [r[0] for r in rows] == list(STAGES)  # one row per stage, in order, each with its five figures
    for r in rows:
        assert len(r) == 1 + len(STAT_KEYS) and float(r[2]) == pytest.approx(bench_result["latency_ms"][r[0]]["p50"],
                                                                              abs=0.01)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(bench_result))
    b.write_text(json.dumps(dict(bench_result, backend="openvino")))
    res = load_results([a, b])
    table = compare_table(res)
    assert "onnxruntime" in table and "openvino" in table and "e2e p50 (ms)" in table
    assert "| fps_e2e (img/s) |" in compare_markdown(res)
    png = plot_compare(res, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_compare_and_bad_input(bench_result, tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps(bench_result))
    cli = [sys.executable, "-m", "edgekit", "bench"]
    r = subprocess.run(cli + ["--compare", str(a), str(a), "--png", str(tmp_path / "c.png"), "--md",
                              str(tmp_path / "c.md")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "fps_e2e" in r.stdout and (tmp_path / "c.png").exists() and (tmp_path / "c.md").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = subprocess.run(cli + ["--compare", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "bad.json: not a JSON file" in r.stderr
    r = subprocess.run(cli + [str(tmp_path / "none.onnx")], capture_output=True, text=True)
    assert r.returncode == 2 and "none.onnx: model file not found" in r.stderr


def test_import_bench_pulls_no_torch():
    code = "import edgekit, edgekit.bench, edgekit.bench.harness, edgekit.cli.bench, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_openvino_bench_records_fp32_execution(onnx320):
    """The AsyncInferQueue runner and the latency Engine both run the FP32 ONNX in f32, and the JSON says so."""
    pytest.importorskip("openvino")
    from edgekit.bench import run_bench

    r = run_bench(onnx320, backend="openvino", batches=(1,), warmup=1, iters=3, log=None)
    assert r["precision_executed"] == "fp32" and r["throughput"]["1"] > 0
    assert "FP32" in r["device"]["openvino_capabilities"]
    assert r["mode"]["throughput"]["infer_requests"] >= 1


# --- Engine.stream -----------------------------------------------------------------------------


def test_stream_matches_predict_in_order(onnx320):
    from edgekit import Engine
    from edgekit.assets import demo_images

    imgs = demo_images()[:7]
    with Engine(onnx320) as eng:
        ref = eng.predict(imgs)
        for batch, workers in ((1, 2), (3, 1)):
            got = list(eng.stream(iter(imgs), batch=batch, workers=workers))
            assert len(got) == len(ref)
            for a, b in zip(ref, got):
                np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
                np.testing.assert_array_equal(a.class_ids, b.class_ids)
        assert list(eng.stream([])) == []


# --- torch backend -----------------------------------------------------------------------------


def _torch_vs_onnx(onnx320, weights, device):
    pytest.importorskip("ultralytics")
    from edgekit import Engine
    from edgekit.assets import demo_images

    with Engine(onnx320) as ref, Engine(weights, device=device, imgsz=320) as pt:
        assert pt.backend_name == "torch" and pt.meta.imgsz == (320, 320) and pt.meta.names == ref.meta.names
        blob, infos = ref.preprocess([ref.decode(demo_images()[0])])
        a, b = ref.infer(blob), pt.infer(blob)
        assert a.shape == b.shape and b.dtype == np.float32
        return a, b, ref.postprocess(a, infos), pt.postprocess(b, infos)


def test_torch_backend_matches_onnx_cpu(onnx320, weights):
    a, b, da, db = _torch_vs_onnx(onnx320, weights, "cpu")
    np.testing.assert_allclose(b[:, 4:], a[:, 4:], atol=1e-3)  # class scores
    np.testing.assert_allclose(b[:, :4], a[:, :4], atol=0.05)  # boxes, input pixels
    np.testing.assert_array_equal(da[0].class_ids, db[0].class_ids)


def test_torch_backend_rejects_bad_device(weights):
    pytest.importorskip("ultralytics")
    from edgekit import Engine
    from edgekit.errors import ArtifactError

    with pytest.raises(ArtifactError, match="not supported by the torch backend"):
        Engine(weights, device="NPU", backend="torch")


@pytest.mark.gpu
def test_torch_backend_cuda_fp16_and_graph(onnx320, weights):
    from edgekit import Engine
    from edgekit.assets import demo_images

    a, b, _, _ = _torch_vs_onnx(onnx320, weights, "cuda:0")
    np.testing.assert_allclose(b[:, 4:], a[:, 4:], atol=2e-2)  # FP16
    with Engine(weights, device="cuda:0", imgsz=320, cuda_graph=True) as eng:
        d1 = eng(demo_images()[0])
        d2 = eng(demo_images()[0])  # replayed graph
        np.testing.assert_allclose(d1.boxes, d2.boxes, atol=1e-2)
        assert eng.backend.info()["cuda_graph"]


@pytest.mark.gpu
def test_bench_cuda_reports_device_memory(weights):
    from edgekit.bench import run_bench

    r = run_bench(weights, device="cuda:0", warmup=1, iters=3, log=None, imgsz=320)
    assert r["device_memory_mb"] and r["device"].get("gpu")
