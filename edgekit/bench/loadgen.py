"""MLPerf LoadGen scenarios (SingleStream, MultiStream, Offline, Server) over real images through Engine's stages.

The system under test runs each sample LoadGen issues through decode, letterbox, infer and decode + NMS (MLPerf
times NMS too) on a pool of worker slots: one Engine compiled for latency in SingleStream; the backend's own
throughput runner (OpenVINO: one THROUGHPUT-compiled model and its infer requests; ONNX Runtime: parallel
sessions) otherwise. LoadGen decides when queries are issued and writes its own logs; the result carries LoadGen's
verdict and figures (parsed from mlperf_log_detail.txt) beside edgekit's per-stage percentiles and stability verdict.

Runs: `quick` (60 s minimum duration, 64 queries) or the full run (600 s minimum, the MLPerf Inference rules'
duration, and LoadGen's own query counts and early-stopping estimates); `time_s` overrides the minimum duration
(a run shorter than the rules' is marked "rule_conforming": false).
"""
from __future__ import annotations

import json
import queue
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .._imports import require
from ..errors import EdgekitError
from .stability import stability, windows
from .timing import STAGES, StageTimer, clock, summarize

SCENARIOS = {"singlestream": "SingleStream", "multistream": "MultiStream", "offline": "Offline", "server": "Server"}
RULES_MIN_DURATION_S = 600.0  # MLPerf Inference rules (mlperf.conf): every scenario runs at least 600 s
QUICK_MIN_DURATION_S = 60.0
QUICK_MIN_QUERIES = 64  # the fewest SingleStream queries LoadGen's early stopping accepts
OFFLINE_QPS_MARGIN = 1.25  # warm-up underestimates the rate; too low an expectation ends Offline early (INVALID)
LATENCY_MARGIN = 0.5  # likewise SingleStream/MultiStream: LoadGen pre-generates queries for the expected latency
DEFAULT_SERVER_LATENCY_MS = 100.0  # MLPerf's Server latency bound for the object-detection benchmark (RetinaNet)
# the figure each scenario is judged on, MLPerf's way: (label, detail-log key, scale to ms or 1)
METRIC = {"SingleStream": ("90th percentile latency (ms), early-stopping estimate", "early_stopping_latency_ss", 1e-6),
          "MultiStream": ("99th percentile latency per query (ms), early-stopping estimate", "early_stopping_latency_ms",
                          1e-6),
          "Offline": ("samples per second", "result_samples_per_second", 1.0),
          "Server": ("completed samples per second", "result_completed_samples_per_sec", 1.0)}


@dataclass
class ScenarioConfig:
    """How to run one LoadGen scenario."""

    scenario: str = "singlestream"
    quick: bool = False
    time_s: float | None = None  # minimum duration; None: 60 s quick, 600 s full
    server_target_qps: float | None = None  # None: half the throughput measured in warm-up
    server_latency_ms: float = DEFAULT_SERVER_LATENCY_MS
    warmup_s: float = 0.2  # trtexec's default warm-up; at least 10 samples as well
    max_samples_in_memory: int = 1024

    def check(self) -> None:
        if self.scenario not in SCENARIOS:
            raise EdgekitError(f"--scenario {self.scenario}: choose one of {', '.join(SCENARIOS)}")
        for name, v in (("--time", self.time_s), ("--server-target-qps", self.server_target_qps),
                        ("--server-latency-ms", self.server_latency_ms)):
            if v is not None and v <= 0:
                raise EdgekitError(f"{name} {v}: must be positive")

    @property
    def min_duration_s(self) -> float:
        if self.time_s is not None:
            return float(self.time_s)
        return QUICK_MIN_DURATION_S if self.quick else RULES_MIN_DURATION_S

    @property
    def rule_conforming(self) -> bool:
        return not self.quick and self.min_duration_s >= RULES_MIN_DURATION_S


class SampleRunner:
    """LoadGen's system under test: each issued sample through Engine's stages on a free worker slot."""

    def __init__(self, slots: list, paths: list[Path]):
        self.slots, self.paths = slots, paths
        self.free: queue.SimpleQueue = queue.SimpleQueue()
        for e in slots:
            self.free.put(e)
        self.pool = ThreadPoolExecutor(len(slots), thread_name_prefix="edgekit-sut")
        self.timer = StageTimer(*STAGES)
        self.done: list[tuple[float, float, float]] = []  # (completion time s, issue-to-completion ms, e2e ms)
        self.lock = threading.Lock()
        self.error: BaseException | None = None
        self.complete = None  # set to LoadGen's QuerySamplesComplete wrapper while a test runs

    def process(self, index: int) -> float:
        """One image through decode, preprocess, infer and postprocess on a free slot, each stage timed."""
        eng = self.free.get()
        t, t0 = self.timer, clock()
        try:
            with t("decode"):
                img = eng.decode(self.paths[index % len(self.paths)])
            with t("preprocess"):
                blob, infos = eng.preprocess([img])
            with t("infer"):
                raw = eng.infer(blob)
            with t("postprocess"):
                eng.postprocess(raw, infos)
        finally:
            self.free.put(eng)
        ms = (clock() - t0) * 1e3
        t.add("e2e", ms)
        return ms

    def _one(self, sample_id: int, index: int, t_issue: float) -> None:
        ms = float("nan")
        try:
            ms = self.process(index)
        except BaseException as e:  # report after the test; LoadGen must still see every sample complete
            self.error = self.error or e
        t = clock()
        with self.lock:
            self.done.append((t, (t - t_issue) * 1e3, ms))
        if self.complete is not None:
            self.complete(sample_id)

    def issue(self, samples) -> None:
        """LoadGen's IssueQuery: hand each sample to the pool (never blocks LoadGen's thread)."""
        t = clock()
        for s in samples:
            self.pool.submit(self._one, s.id, s.index, t)

    def run_plain(self, indices) -> float:
        """Run these samples through the pool outside LoadGen; returns the wall time in s."""
        t0 = clock()
        list(self.pool.map(lambda i: self._one(-1, i, clock()), indices))
        return clock() - t0

    def reset(self) -> None:
        self.timer.clear()
        with self.lock:
            self.done.clear()

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def warm_up(sut: SampleRunner, n_images: int, warmup_s: float, min_samples: int = 10) -> dict:
    """Run waves of samples until `warmup_s` and `min_samples` are reached; the last wave's rate and latency."""
    wave = max(min_samples, 2 * len(sut.slots))
    t0, n, i, rate = clock(), 0, 0, 0.0
    while n < min_samples or clock() - t0 < warmup_s or n < 2 * wave:
        dt = sut.run_plain(range(i, i + wave))
        rate, n, i = wave / dt, n + wave, (i + wave) % max(1, n_images)
    lat = [d[2] for d in sut.done[-wave:]]
    sut.reset()
    return {"samples": n, "wall_s": round(clock() - t0, 3), "samples_per_s": round(rate, 3),
            "latency_ms": round(sum(lat) / len(lat), 3)}


def settings(lg, cfg: ScenarioConfig, warm: dict):
    """LoadGen TestSettings for this scenario, with expectations from the warm-up measurement."""
    ts = lg.TestSettings()
    ts.scenario = getattr(lg.TestScenario, SCENARIOS[cfg.scenario])
    ts.mode = lg.TestMode.PerformanceOnly
    ts.min_duration_ms = int(cfg.min_duration_s * 1000)
    if cfg.quick or cfg.time_s is not None:
        ts.min_query_count = 1 if cfg.scenario == "offline" else QUICK_MIN_QUERIES
    lat_s, qps = warm["latency_ms"] / 1e3, max(warm["samples_per_s"], 1e-3)
    ts.single_stream_expected_latency_ns = max(1, int(lat_s * LATENCY_MARGIN * 1e9))
    ts.multi_stream_expected_latency_ns = max(1, int(ts.multi_stream_samples_per_query / qps * LATENCY_MARGIN * 1e9))
    ts.offline_expected_qps = qps * OFFLINE_QPS_MARGIN
    ts.server_target_qps = cfg.server_target_qps or round(qps / 2, 3)
    ts.server_target_latency_ns = int(cfg.server_latency_ms * 1e6)
    return ts


def parse_detail_log(path) -> dict:
    """Every `:::MLLOG {json}` entry of mlperf_log_detail.txt: {key: value} (last wins), errors, warnings."""
    values, errors, warnings = {}, [], []
    for line in Path(path).read_text(errors="replace").splitlines():
        if not line.startswith(":::MLLOG"):
            continue
        try:
            d = json.loads(line[len(":::MLLOG"):])
        except json.JSONDecodeError:
            continue
        values[d.get("key")] = d.get("value")
        meta = d.get("metadata") or {}
        if meta.get("is_error"):
            errors.append(f"{d.get('key')}: {d.get('value')}")
        elif meta.get("is_warning"):
            warnings.append(f"{d.get('key')}: {d.get('value')}")
    return {"values": values, "errors": errors, "warnings": warnings}


def _ms(ns) -> float | None:
    return None if ns in (None, "") else round(float(ns) / 1e6, 4)


def loadgen_result(log_dir, scenario: str) -> dict:
    """LoadGen's own verdict and figures from its detail log (and its summary text)."""
    log_dir = Path(log_dir)
    detail = log_dir / "mlperf_log_detail.txt"
    if not detail.exists():
        raise EdgekitError(f"{detail}: LoadGen wrote no detail log")
    parsed = parse_detail_log(detail)
    v = parsed["values"]
    name = SCENARIOS[scenario]
    lat = {k.split("_")[1].rstrip("0").rstrip("."): _ms(val) for k, val in v.items()
           if k.startswith("result_") and k.endswith("_percentile_latency_ns")}
    label, key, scale = METRIC[name]
    metric = v.get(key)
    if name in ("SingleStream", "MultiStream") and not metric:  # no early-stopping estimate: the plain percentile
        metric = v.get("result_90.00_percentile_latency_ns" if name == "SingleStream"
                       else "result_99.00_percentile_per_query_latency_ns")
        label = label.replace(", early-stopping estimate", " (no early-stopping estimate)")
    validity = v.get("result_validity")
    summary = log_dir / "mlperf_log_summary.txt"
    return {
        "version": v.get("loadgen_version"), "scenario": name, "mode": v.get("effective_test_mode"),
        "validity": validity, "valid": validity == "VALID",
        "invalid_reason": (v.get("result_invalid_reason") or "").strip() or None,
        "min_duration_met": v.get("result_min_duration_met"), "min_queries_met": v.get("result_min_queries_met"),
        "early_stopping_met": v.get("early_stopping_met"),
        "perf_constraints_met": v.get("result_perf_constraints_met"),
        "early_stopping": " ".join(str(v.get("early_stopping_result") or "").split()) or None,
        "metric": {"name": label, "value": None if metric in (None, "") else round(float(metric) * scale, 4)},
        "query_count": v.get("result_query_count"),
        "samples_per_second": v.get("result_samples_per_second") or v.get("result_completed_samples_per_sec")
        or v.get("result_qps_without_loadgen_overhead"),
        "qps_with_loadgen_overhead": v.get("result_qps_with_loadgen_overhead"),
        "scheduled_samples_per_second": v.get("result_scheduled_samples_per_sec"),
        "overlatency_query_count": v.get("result_overlatency_query_count"),
        "latency_ms": {"min": _ms(v.get("result_min_latency_ns")), "mean": _ms(v.get("result_mean_latency_ns")),
                       **{f"p{k}": x for k, x in lat.items()}, "max": _ms(v.get("result_max_latency_ns"))},
        "settings": {k[len("effective_"):]: val for k, val in v.items() if k.startswith("effective_")},
        "errors": parsed["errors"], "warnings": parsed["warnings"],
        "summary": summary.read_text(errors="replace") if summary.exists() else None,
    }


def slots_for(runner, scenario: str, engine) -> list:
    """Worker slots: the latency Engine alone in SingleStream; else one per in-flight request of the runner."""
    if scenario == "singlestream":
        return [engine]
    nreq = runner.describe().get("infer_requests")
    return [runner.engine] * int(nreq) if nreq else list(runner.engines)


def run_loadgen(sut: SampleRunner, cfg: ScenarioConfig, warm: dict, n_images: int, log_dir: Path) -> None:
    """One LoadGen test of the SUT; its logs land in log_dir."""
    lg = require("mlperf_loadgen", "edgekit bench --scenario (MLPerf LoadGen)")
    n_mem = min(n_images, cfg.max_samples_in_memory)

    def load(indices):  # QSL: bring the images into the page cache (reading them is untimed, as in MLPerf)
        for i in indices:
            sut.paths[i].read_bytes()

    sut.complete = lambda sid: lg.QuerySamplesComplete([lg.QuerySampleResponse(sid, 0, 0)])
    out = lg.LogOutputSettings()
    out.outdir, out.copy_summary_to_stdout, out.copy_detail_to_stdout = str(log_dir), False, False
    ls = lg.LogSettings()
    ls.log_output, ls.log_mode, ls.enable_trace = out, lg.LoggingMode.AsyncPoll, False
    handle = lg.ConstructSUT(sut.issue, lambda: None)
    qsl = lg.ConstructQSL(n_images, n_mem, load, lambda indices: None)
    try:
        lg.StartTestWithLogSettings(handle, qsl, settings(lg, cfg, warm), ls)
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroySUT(handle)
        sut.complete = None
    if sut.error is not None:
        raise EdgekitError(f"a sample failed during the LoadGen run: {sut.error}") from sut.error


def run_scenario(engine, runner, paths: list[Path], cfg: ScenarioConfig, log=None, log_dir=None) -> dict:
    """Warm up, run the LoadGen scenario, and return {"scenario", "loadgen", "latency_ms", "stability", ...}."""
    cfg.check()
    require("mlperf_loadgen", "edgekit bench --scenario (MLPerf LoadGen)")
    log = log or (lambda *a: None)
    sut = SampleRunner(slots_for(runner, cfg.scenario, engine), paths)
    tmp = None
    try:
        warm = warm_up(sut, len(paths), cfg.warmup_s)
        log(f"LoadGen {SCENARIOS[cfg.scenario]}: {len(sut.slots)} worker slot(s), warm-up {warm['samples']} samples "
            f"({warm['samples_per_s']:.1f}/s), minimum duration {cfg.min_duration_s:g} s")
        if log_dir is None:
            tmp = tempfile.mkdtemp(prefix="edgekit-loadgen-")
            out_dir = Path(tmp)
        else:
            out_dir = Path(log_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
        t0 = clock()
        run_loadgen(sut, cfg, warm, len(paths), out_dir)
        wall = clock() - t0
        result = loadgen_result(out_dir, cfg.scenario)
    finally:
        sut.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    done = sorted(sut.done)
    # Offline issues every sample at once: its issue-to-completion time only grows; judge the per-sample e2e time
    lat = [d[2] if cfg.scenario == "offline" else d[1] for d in done]
    verdict = stability(windows([d[0] for d in done], lat, start=t0))
    return {"scenario": cfg.scenario, "rule_conforming": cfg.rule_conforming, "min_duration_s": cfg.min_duration_s,
            "quick": cfg.quick, "warmup": warm, "wall_s": round(wall, 3), "workers": len(sut.slots),
            "server_latency_ms": cfg.server_latency_ms if cfg.scenario == "server" else None,
            "loadgen": {**result, "log_dir": None if tmp else str(out_dir)},
            "latency_ms": sut.timer.summary(),
            "issue_to_complete_ms": summarize([d[1] for d in done]),
            "stability": verdict}
