"""Repeatability: N back-to-back `edgekit bench` runs of one artifact; the p50 CV across runs and each run's verdict.

    python benchmarks/bench_repeatability.py --model yolov8n_int8_640/model.xml --out benchmarks/results/K_bench.md \
        [--runs 5] [--time 3] [--iters 100] [-- extra edgekit bench options, e.g. --hint latency --threads 4]

Each run is a separate process (`python -m edgekit bench MODEL --json F --time S --iters N`), as a user runs it: cold
start, latency mode (warm-up 200 ms, then at least S seconds and N iterations), throughput mode. Reported per run:
latency-mode e2e and infer p50, fps_e2e, the run's stability verdict and its within-run p50 CV; across runs: the CV
of the e2e p50 (target on an idle machine: <= 2 %, every run stable). Writes a section of the --out markdown
(replacing an earlier one) with the environment block of the first run. Self-contained; never imported by the tests.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SECTION = "## Repeatability: back-to-back edgekit bench runs"


def run_once(model: Path, seconds: float, iters: int, extra: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "edgekit", "bench", str(model), "--json", str(out), "--time", str(seconds),
           "--iters", str(iters), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"edgekit bench failed ({r.returncode}): {r.stderr.strip()[-600:]}")
    return json.loads(out.read_text())


def cv(values) -> float:
    return statistics.pstdev(values) / statistics.mean(values)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/K_bench.md"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--time", type=float, default=3.0, help="minimum seconds per mode (edgekit bench --time)")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--note", default="shared machine, not a speed claim")
    a, extra = ap.parse_known_args(argv)
    extra = [x for x in extra if x != "--"]

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_vs_benchmark_app import environment_block, write_section

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(a.runs):
            res = run_once(a.model, a.time, a.iters, extra, Path(tmp) / f"run{i}.json")
            runs.append(res)
            lat = res["latency_ms"]
            print(f"run {i + 1}: e2e p50 {lat['e2e']['p50']:.3f} ms, infer p50 {lat['infer']['p50']:.3f} ms, "
                  f"fps_e2e {res['fps_e2e']}, stable {res['stable']}, within-run p50 CV {res['cv']}", flush=True)
    e2e = [r["latency_ms"]["e2e"]["p50"] for r in runs]
    inf = [r["latency_ms"]["infer"]["p50"] for r in runs]
    fps = [r["fps_e2e"] for r in runs]
    n_stable = sum(bool(r["stable"]) for r in runs)
    lines = [SECTION, "",
             f"*{a.note}.* `python benchmarks/bench_repeatability.py --model {a.model} --runs {a.runs} "
             f"--time {a.time:g} --iters {a.iters}{' -- ' + ' '.join(extra) if extra else ''}`", "",
             f"Artifact `{runs[0]['artifact']}` ({runs[0]['backend']}, {runs[0]['precision']} executing "
             f"{runs[0]['precision_executed']}, input {runs[0]['imgsz']}); each run a fresh process.", "",
             "| run | e2e p50 (ms) | infer p50 (ms) | fps_e2e | samples | stable | within-run p50 CV | why not stable |",
             "|---:|---:|---:|---:|---:|:---:|---:|---|"]
    for i, r in enumerate(runs):
        lat = r["latency_ms"]
        c = "-" if r["cv"] is None else f"{100 * r['cv']:.1f} %"
        lines.append(f"| {i + 1} | {lat['e2e']['p50']:.3f} | {lat['infer']['p50']:.3f} | {r['fps_e2e']} | "
                     f"{lat['e2e']['n']} | {'yes' if r['stable'] else 'NO'} | {c} | "
                     f"{'; '.join(r.get('unstable_reasons') or []) or '-'} |")
    lines += ["", f"Across runs: e2e p50 CV **{100 * cv(e2e):.2f} %**, infer p50 CV {100 * cv(inf):.2f} %, fps_e2e "
                  f"CV {100 * cv(fps):.2f} %; {n_stable} of {len(runs)} runs stable (target on an idle machine: "
                  f"p50 CV <= 2 %, every run stable).", "", "Environment (first run):", "",
              *environment_block(runs[0]["environment"]), ""]
    text = "\n".join(lines)
    print(text)
    write_section(a.out, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
