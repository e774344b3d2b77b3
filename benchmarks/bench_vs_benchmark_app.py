"""edgekit's inference-only throughput against OpenVINO's own benchmark_app, same IR, same hint, streams, requests.

    python benchmarks/bench_vs_benchmark_app.py --model yolov8n_int8_640/model.xml --out benchmarks/results/K_bench.md \
        [--hint throughput] [--nstreams N] [--nireq N] [--time 20] [--rounds 3]

edgekit: the OpenVINO throughput runner (runtime.concurrency: AsyncInferQueue over the model compiled with the same
PERFORMANCE_HINT / NUM_STREAMS, as many requests as benchmark_app uses) fed one real preprocessed image, repeated:
images/s over --time seconds after a warm-up. benchmark_app: `benchmark_app -m IR -d CPU -hint H [-nstreams N]
-nireq R -t T` (random input; it prints "Throughput: X FPS"). Rounds alternate the order (A B, then B A) so that the
noise of a shared CPU falls on both. Writes a section of the --out markdown (replacing an earlier one) with the
environment block and the CPU flags. Self-contained; never imported by the tests.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

SECTION = "## edgekit vs OpenVINO benchmark_app (inference only)"


def benchmark_app_cmd() -> list[str]:
    exe = shutil.which("benchmark_app")
    return [exe] if exe else [sys.executable, "-m", "openvino.tools.benchmark.main"]


def run_benchmark_app(model: Path, hint: str, nstreams, nireq: int, seconds: float) -> dict:
    """benchmark_app's throughput (FPS) and median latency for this IR and these settings."""
    # benchmark_app refuses -nstreams beside a hint (its UI rule): an explicit stream count goes with -hint none
    cmd = benchmark_app_cmd() + ["-m", str(model), "-d", "CPU", "-hint", "none" if nstreams else hint,
                                 "-nireq", str(nireq), "-t", str(int(round(seconds))), "-infer_precision", "f32"]
    if nstreams:
        cmd += ["-nstreams", str(nstreams)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds * 4 + 120)
    text = out.stdout + out.stderr
    fps = re.search(r"Throughput:\s*([\d.]+)\s*FPS", text)
    med = re.search(r"Median:\s*([\d.]+)\s*ms", text)
    streams = re.search(r"NUM_STREAMS:\s*(\d+)", text)
    if out.returncode != 0 or not fps:
        raise SystemExit(f"benchmark_app failed ({out.returncode}): {text[-800:]}")
    return {"fps": float(fps.group(1)), "median_ms": float(med.group(1)) if med else None,
            "streams": int(streams.group(1)) if streams else None, "cmd": " ".join(["benchmark_app"] + cmd[len(benchmark_app_cmd()):])}


def edgekit_runner(model: Path, hint: str, nstreams, nireq):
    from edgekit.runtime.concurrency import make_runner

    opts = {"hint": hint.upper()}
    if nireq:
        opts["nireq"] = nireq
    return make_runner(model, "cpu", "openvino", nstreams, **opts)


def run_edgekit(runner, blob, seconds: float) -> dict:
    """Images/s of the runner on one repeated blob: warm-up, then a first pass sizes the timed pass to `seconds`."""
    def go(n):
        t0 = time.perf_counter()
        for _ in runner.map((blob, None) for _ in range(n)):
            pass
        return time.perf_counter() - t0

    go(4 * max(1, runner.nreq))
    n = max(8, int(50 / go(50) * seconds))
    dt = go(n)
    return {"fps": n / dt, "images": n, "wall_s": round(dt, 2)}


def environment_block(env: dict) -> list[str]:
    cpu = env["cpu"]
    return [f"- CPU: {cpu['model']} ({cpu['arch']}), {cpu['usable_cores']} usable of {cpu['logical_cores']} logical "
            f"cores, governor {cpu.get('governor') or 'not readable'}",
            f"- CPU flags: {' '.join(cpu['flags']) or 'none of AVX2/AVX-512/VNNI/BF16/AMX'}",
            f"- runtime: {env.get('backend')} executes {env.get('precision_executed')}; settings "
            f"{json.dumps(env.get('runtime'), default=str)}",
            f"- versions: {', '.join(f'{k} {v}' for k, v in env['versions'].items())}; edgekit "
            f"{env['edgekit']['version']} {env['edgekit']['git_sha'] or ''}",
            f"- load average before / after: {env.get('load_avg_before')} / {env.get('load_avg_after')}",
            f"- OS: {env['os']}, Python {env['python']}"]


def write_section(out: Path, section: str, text: str) -> None:
    """Replace `section` (up to the next '## ') in the markdown file, or append it."""
    from edgekit.io import atomic_write_text

    old = out.read_text() if out.exists() else "# K · bench: LoadGen, stability, environment, cross-checks\n"
    pat = re.compile(re.escape(section) + r".*?(?=\n## |\Z)", re.S)
    new = pat.sub(lambda m: text.rstrip("\n") + "\n", old) if pat.search(old) else old.rstrip("\n") + "\n\n" + text
    atomic_write_text(out, new.rstrip("\n") + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, type=Path, help="OpenVINO IR (.xml or its folder)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/K_bench.md"))
    ap.add_argument("--hint", choices=("throughput", "latency"), default="throughput")
    ap.add_argument("--nstreams", type=int, default=None, help="default: the plugin's choice under the hint")
    ap.add_argument("--nireq", type=int, default=None, help="default: the plugin's optimal number of requests")
    ap.add_argument("--time", type=float, default=15.0, help="seconds per measurement (default 15)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--note", default="shared machine, not a speed claim")
    a = ap.parse_args(argv)

    from edgekit.assets import demo_images
    from edgekit.bench.environment import environment, loadavg

    model = a.model / "model.xml" if a.model.is_dir() else a.model
    load0 = loadavg()
    ek, ba = [], []
    with edgekit_runner(model, a.hint, a.nstreams, a.nireq) as runner:
        eng = runner.engine
        blob, _ = eng.preprocess([eng.decode(demo_images()[0])])
        streams, nireq = runner.streams, runner.nreq
        for r in range(a.rounds):
            order = ("edgekit", "benchmark_app") if r % 2 == 0 else ("benchmark_app", "edgekit")
            for who in order:
                if who == "edgekit":
                    ek.append(run_edgekit(runner, blob, a.time))
                else:
                    ba.append(run_benchmark_app(model, a.hint, a.nstreams, nireq, a.time))
                print(f"round {r + 1}: {who} {(ek if who == 'edgekit' else ba)[-1]['fps']:.1f} images/s", flush=True)
        env = environment(eng)
    env["load_avg_before"], env["load_avg_after"] = load0, loadavg()
    ek_fps, ba_fps = statistics.median(x["fps"] for x in ek), statistics.median(x["fps"] for x in ba)
    ratios = [e["fps"] / b["fps"] for e, b in zip(ek, ba)]
    lines = [SECTION, "",
             f"*{a.note}.* `python benchmarks/bench_vs_benchmark_app.py --model {a.model} --hint {a.hint}"
             + (f" --nstreams {a.nstreams}" if a.nstreams else "") + (f" --nireq {a.nireq}" if a.nireq else "")
             + f" --time {a.time:g} --rounds {a.rounds}`", "",
             f"Model: `{model}` ({json.loads(model.with_name('model.json').read_text()).get('precision', '?') if model.with_name('model.json').exists() else '?'}), "
             f"input {list(eng.meta.imgsz)}; hint {a.hint.upper()}; streams: edgekit {streams}, benchmark_app "
             f"{ba[-1]['streams']}; {nireq} infer requests for both tools; f32 inference precision for both (the float part of an INT8 IR; this CPU would otherwise run bf16).", "",
             "| round | edgekit images/s | benchmark_app FPS | edgekit / benchmark_app |", "|---:|---:|---:|---:|"]
    lines += [f"| {i + 1} | {e['fps']:.1f} | {b['fps']:.1f} | {e['fps'] / b['fps']:.3f} |" for i, (e, b) in
              enumerate(zip(ek, ba))]
    lines += [f"| median | {ek_fps:.1f} | {ba_fps:.1f} | {statistics.median(ratios):.3f} |", "",
              f"Agreement (median of the per-round ratios): edgekit's inference-only throughput is {100 * (statistics.median(ratios) - 1):+.1f} % of "
              f"benchmark_app's (target: within 5 %). benchmark_app command: `{ba[-1]['cmd']}`", "",
              "Environment:", "", *environment_block(env), ""]
    text = "\n".join(lines)
    print(text)
    write_section(a.out, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
