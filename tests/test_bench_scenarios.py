"""edgekit bench: MLPerf LoadGen scenarios, the stability verdict, the environment record, knobs and compare."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgekit.bench.schema import check, validate
from edgekit.bench.stability import label, stability, windows

CLI = [sys.executable, "-m", "edgekit", "bench"]


# --- stability verdict -------------------------------------------------------------------------


def _wins(throughputs, p50s):
    return [{"n": 50, "throughput": t, "p50": p} for t, p in zip(throughputs, p50s)]


def test_stability_stable_series():
    v = stability(_wins([100, 120, 101, 99, 100.5], [10.0, 8.0, 10.1, 9.9, 10.0]))
    assert v["stable"] is True and v["windows"] == 5 and v["samples"] == 250
    assert v["spread"]["throughput"] <= 0.10 and v["spread"]["p50"] <= 0.10
    assert v["cv"] == pytest.approx(np.std([10, 8, 10.1, 9.9, 10]) / np.mean([10, 8, 10.1, 9.9, 10]), abs=1e-4)
    assert label(v).startswith("stable (")


@pytest.mark.parametrize("thr, p50, why", [
    ([100, 100, 100, 80, 120], [10, 10, 10, 10, 10], "throughput varies"),  # throughput drifts at the end
    ([100, 100, 100, 100, 100], [10, 10, 9, 12, 15], "p50 varies"),  # latency creeps up (thermal throttling)
])
def test_stability_unstable_series(thr, p50, why):
    v = stability(_wins(thr, p50))
    assert v["stable"] is False and why in v["reason"] and label(v).startswith("UNSTABLE")


def test_stability_needs_three_windows_and_judges_throughput_only_runs():
    v = stability(_wins([100, 100], [10, 10]))
    assert v["stable"] is False and "needs 3" in v["reason"]
    v = stability([{"n": 10, "throughput": t, "p50": None} for t in (50, 100, 101, 99)])
    assert v["stable"] is True and "p50" not in v["spread"] and v["cv"] is None


def test_windows_split_samples_in_time_order():
    ends = np.arange(1, 101) * 0.01  # 100 samples, one every 10 ms after start 0
    lat = np.r_[np.full(50, 5.0), np.full(50, 7.0)]
    w = windows(ends, lat, start=0.0)
    assert len(w) == 4 and [x["n"] for x in w] == [25] * 4  # at least 25 samples per window
    assert all(x["throughput"] == pytest.approx(100.0) for x in w)
    assert [x["p50"] for x in w] == [5.0, 5.0, 7.0, 7.0]
    assert len(windows(np.arange(1, 1001) * 0.01, start=0.0)) == 10 and len(windows(ends[:12], start=0.0)) == 3
    assert windows([1.0]) == []


# --- LoadGen scenarios -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["singlestream", "offline"])
def test_loadgen_scenario_few_seconds(scenario, onnx160, coco8, tmp_path):
    """A 2 s LoadGen run over coco8's val images: LoadGen's verdict and figures, edgekit's percentiles, schema."""
    pytest.importorskip("mlperf_loadgen")
    out = tmp_path / "r.json"
    r = subprocess.run(CLI + [str(onnx160), "--scenario", scenario, "--time", "2", "--data", str(coco8),
                              "--json", str(out), "--loadgen-logs", str(tmp_path / "logs")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert check(doc) == [] and validate(doc) == []
    lg = doc["loadgen"]
    assert lg["validity"] in ("VALID", "INVALID") and lg["valid"] == (lg["validity"] == "VALID")
    assert doc["scenario"] == scenario and doc["rule_conforming"] is False and doc["min_duration_s"] == 2
    assert lg["samples_per_second"] > 0 and lg["latency_ms"]["p50"] <= lg["latency_ms"]["p90"] <= lg["latency_ms"]["p99"]
    assert lg["settings"]["min_duration_ms"] == 2000
    assert (tmp_path / "logs" / "mlperf_log_summary.txt").exists() and "Result is" in lg["summary"]
    if scenario == "singlestream":
        assert lg["scenario"] == "SingleStream" and lg["query_count"] >= 64 and "90th" in lg["metric"]["name"]
        assert lg["metric"]["value"] >= lg["latency_ms"]["p50"]
    else:
        assert lg["scenario"] == "Offline" and lg["query_count"] == 1
        assert lg["metric"]["value"] == pytest.approx(lg["samples_per_second"], rel=1e-3)
    e2e = doc["latency_ms"]["e2e"]
    assert e2e["n"] >= lg["settings"]["samples_per_query"] * lg["query_count"]  # every issued sample went through Engine
    from edgekit.data import load_dataset

    assert doc["images"]["count"] == len(load_dataset(coco8).samples("val")) and "(val)" in doc["images"]["source"]
    assert isinstance(doc["stable"], bool) and doc["stability"]["samples"] == e2e["n"]
    assert "LoadGen" in r.stdout and "stability:" in r.stdout


def test_loadgen_detail_log_parser(tmp_path):
    from edgekit.bench.loadgen import loadgen_result

    lines = [{"key": "loadgen_version", "value": "6.0.17 @ abc"}, {"key": "result_validity", "value": "INVALID"},
             {"key": "result_invalid_reason", "value": "Increase expected QPS "},
             {"key": "result_samples_per_second", "value": 123.5}, {"key": "result_query_count", "value": 1},
             {"key": "result_50.00_percentile_latency_ns", "value": 2_000_000},
             {"key": "result_90.00_percentile_latency_ns", "value": 3_500_000},
             {"key": "effective_samples_per_query", "value": 880},
             {"key": "some_error", "value": "boom", "metadata": {"is_error": True}}]
    (tmp_path / "mlperf_log_detail.txt").write_text(
        "noise\n" + "\n".join(":::MLLOG " + json.dumps(d) for d in lines) + "\n:::MLLOG {broken\n")
    r = loadgen_result(tmp_path, "offline")
    assert (r["validity"], r["valid"], r["invalid_reason"]) == ("INVALID", False, "Increase expected QPS")
    assert r["metric"] == {"name": "samples per second", "value": 123.5} and r["query_count"] == 1
    assert r["latency_ms"]["p50"] == 2.0 and r["latency_ms"]["p90"] == 3.5
    assert r["settings"]["samples_per_query"] == 880 and r["errors"] == ["some_error: boom"]


# --- environment, knobs, per-layer times -------------------------------------------------------


def test_environment_block_has_cpu_flags_and_load():
    from edgekit.bench.environment import FLAGS, environment, fingerprint

    env = environment()
    cpu = env["cpu"]
    assert cpu["model"] and cpu["usable_cores"] >= 1 and set(cpu["flags"]) <= set(FLAGS)
    if open("/proc/cpuinfo").read().count(" avx2") and "x86" in cpu["arch"]:
        assert "avx2" in cpu["flags"]
    assert env["versions"]["numpy"] == np.__version__ and env["edgekit"]["version"]
    assert len(env["load_avg_before"] or [0, 0, 0]) == 3 or env["load_avg_before"] is None
    assert fingerprint(env)["cpu model"] == cpu["model"]


def test_bench_records_stability_environment_and_schema(onnx160):
    from edgekit.bench import run_bench

    r = run_bench(onnx160, warmup=1, iters=12, log=None, warmup_s=0.05, min_time_s=0.3, threads=1)
    assert validate(r) == [] and check(r) == []
    assert r["latency_ms"]["e2e"]["n"] >= 12 and r["min_time_s"] == 0.3
    lat = r["stability"]["latency"]
    assert lat["samples"] == r["latency_ms"]["e2e"]["n"] and lat["windows"] >= 3
    assert r["stable"] == (lat["stable"] and all(v["stable"] for v in r["stability"]["throughput"].values()))
    assert r["cv"] == lat["cv"]
    env = r["environment"]
    assert env["precision_executed"] == "fp32" and env["runtime"]["threads"] == 1 and env["threads_requested"] == 1
    assert env["load_avg_after"] is None or len(env["load_avg_after"]) == 3


def test_openvino_knobs_reach_the_plugin(onnx160):
    pytest.importorskip("openvino")
    from edgekit.bench import run_bench

    r = run_bench(onnx160, backend="openvino", warmup=1, iters=3, log=None, streams=1, nireq=3,
                  hint="throughput", threads=1)
    rt, tr = r["environment"]["runtime"], r["environment"]["throughput_runner"]
    assert rt["hint"] == "THROUGHPUT" and rt["threads"] == 1 and rt["infer_requests"] == 3
    assert tr["streams"] == 1 and tr["infer_requests"] == 3


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_perf_counters_per_layer_table(onnx160, backend):
    pytest.importorskip(backend)
    from edgekit.bench.perfcounters import format_layers, layer_profile
    from edgekit.assets import demo_images

    img = demo_images()[0]
    p = layer_profile(onnx160, "cpu", backend, lambda e: e.preprocess([e.decode(img)])[0], runs=3, top=5)
    assert p["layers"] > 20 and len(p["top"]) == 5 and p["total_ms"] > 0
    assert p["top"][0]["ms"] >= p["top"][-1]["ms"] and any("conv" in t.lower() for t in p["by_type_ms"])
    assert "per-layer times" in format_layers(p)


# --- compare and bad input ---------------------------------------------------------------------


def _result(tmp_path, name, **env_changes):
    from edgekit.bench.environment import environment

    env = environment()
    env["cpu"] = {**env["cpu"], **env_changes}
    doc = {"artifact": f"{name}.onnx", "backend": "onnxruntime", "latency_ms": {"e2e": {"p50": 1.0}},
           "environment": env, "stable": True, "cv": 0.01}
    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps(doc))
    return p


def test_bad_input_compare_environments(tmp_path):
    a = _result(tmp_path, "a")
    b = _result(tmp_path, "b", model="Some Other CPU", flags=["avx2"])
    r = subprocess.run(CLI + ["--compare", str(a), str(b)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "different environments" in r.stderr and "cpu model" in r.stderr and "Some Other CPU" in r.stderr
    assert "--force" in r.stderr and "a.json vs" in r.stderr
    r = subprocess.run(CLI + ["--compare", str(a), str(b), "--force"], capture_output=True, text=True)
    assert r.returncode == 0 and "stable" in r.stdout and "different environments" in r.stderr
    r = subprocess.run(CLI + ["--compare", str(a), str(_result(tmp_path, "c"))], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


NO_LOADGEN = ("import sys, runpy; sys.modules['mlperf_loadgen'] = None; sys.argv = ['edgekit'] + sys.argv[1:]; "
              "runpy.run_module('edgekit', run_name='__main__')")


@pytest.mark.parametrize("args, code, message", [
    (["--scenario", "offline", "--time", "1"], 3, "pip install 'edgekit[bench]'"),
    (["--hint", "latency", "--iters", "1"], 2, "--hint is an OpenVINO setting; the onnxruntime backend has none"),
    (["--nireq", "0"], 2, "--nireq 0: must be positive"),
    (["--scenario", "server", "--server-latency-ms", "-5"], 2, "--server-latency-ms -5.0: must be positive"),
])
def test_bad_input_bench_knobs(onnx160, args, code, message):
    r = subprocess.run([sys.executable, "-c", NO_LOADGEN, "bench", str(onnx160), *args], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == code, r.stderr
    assert message in r.stderr and r.stderr.strip().count("\n") == 0


def test_bad_input_compare_result_without_environment(tmp_path):
    p = tmp_path / "old.json"
    p.write_text(json.dumps({"artifact": "m.onnx", "backend": "onnxruntime", "latency_ms": {}}))
    r = subprocess.run(CLI + ["--compare", str(p), str(p)], capture_output=True, text=True)
    assert r.returncode == 2 and "old.json: no environment record" in r.stderr and "--force" in r.stderr


def test_schema_checker_rejects_what_jsonschema_rejects():
    doc = {"artifact": 1, "stable": "yes", "scenario": "offline", "imgsz": [160]}
    errs = check(doc)
    assert any("$.artifact: expected" in e for e in errs) and any("$.stable" in e for e in errs)
    assert any("'scenario' needs 'loadgen'" in e for e in errs) and any("missing 'environment'" in e for e in errs)
    assert any("$.imgsz" in e for e in errs)
    assert validate(doc)  # jsonschema (or the fallback) rejects it as well


def test_help_lists_knobs_without_loadgen():
    r = subprocess.run([sys.executable, "-c", NO_LOADGEN, "bench", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for flag in ("--scenario", "--quick", "--hint", "--nstreams", "--nireq", "--threads", "--time", "--perf-counters",
                 "--server-target-qps", "--force"):
        assert flag in r.stdout, flag
