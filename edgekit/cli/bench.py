NAME = "bench"
HELP = "latency per stage and end to end, throughput per batch, memory, size; MLPerf LoadGen scenarios; or --compare"
DESCRIPTION = ("Benchmark an artifact on real images: decode, preprocess, infer, postprocess and end-to-end latency "
               "(mean, p50, p90, p99, std), pipelined throughput per batch size with the backend's own concurrency, "
               "cold start, peak memory and model size, each mode with a stability verdict (last 3 windows within "
               "10 %) and the environment it ran in. Or run one MLPerf LoadGen scenario (--scenario; needs "
               "pip install 'edgekit[bench]'), whose JSON carries LoadGen's own verdict. Or compare several --json "
               "results side by side (refused across different environments unless --force).")


def _batches(text: str) -> list[int]:
    import argparse

    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected batch sizes like 1,2,4,8, got '{text}'") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers, got '{text}'")
    return vals


def _duration(text: str) -> float:
    from ..bench.sustain import parse_duration

    return parse_duration(text)


def add_arguments(p):
    p.add_argument("artifact", nargs="?", help="model.onnx, OpenVINO .xml or folder, .engine, or Ultralytics .pt")
    p.add_argument("--device", default="cpu", help="cpu, cuda:0, GPU, NPU (default cpu)")
    p.add_argument("--target", default=None, metavar="ssh://user@host[:port][/device]",
                   help="measure on a device over SSH that runs its own runtime-only edgekit (the device part "
                        "replaces --device; known_hosts is checked): the JSON and the environment are the device's")
    p.add_argument("--backend", default=None, help="onnxruntime, openvino, tensorrt, torch (default: from the file type)")
    p.add_argument("--batch", type=_batches, default=[1], help="batch sizes to sweep, e.g. 1,2,4,8 (default 1)")
    p.add_argument("--streams", "--nstreams", dest="streams", type=int, default=None,
                   help="streams in throughput mode and scenarios: OpenVINO NUM_STREAMS, ONNX Runtime parallel "
                        "sessions (default: the backend's choice)")
    p.add_argument("--workers", type=int, default=2, help="decode+preprocess threads in throughput mode (default 2)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up iterations, at least (default 10)")
    p.add_argument("--warmup-ms", type=float, default=200.0, help="warm-up time, at least (default 200 ms, as trtexec)")
    p.add_argument("--iters", type=int, default=None,
                   help="timed iterations, at least (default 100, and at least 3 s per mode as trtexec; an explicit "
                        "--iters alone times exactly that many)")
    p.add_argument("--time", type=float, default=None, metavar="S",
                   help="minimum timed duration in seconds per mode (default 3 s unless --iters is given; with "
                        "--scenario: LoadGen's minimum duration, default 600 s, or 60 s with --quick)")
    p.add_argument("--sustain", type=_duration, default=None, metavar="DURATION",
                   help="also run a sustained test for DURATION (30s, 10m, 1h): p50/p90 per window with CPU "
                        "frequency and thermal-zone temperatures, and a throttling verdict")
    p.add_argument("--sustain-window", type=float, default=None, metavar="S",
                   help="with --sustain: window length in seconds (default: a tenth of the duration, at least 1 s)")
    p.add_argument("--throttle-threshold", type=float, default=0.10, metavar="FRACTION",
                   help="with --sustain: flag throttling when the last window's p50 is more than this fraction over "
                        "the first's (default 0.10)")
    p.add_argument("--hint", choices=("latency", "throughput"), default=None,
                   help="OpenVINO PERFORMANCE_HINT (default: latency for latency mode, throughput for throughput mode)")
    p.add_argument("--nireq", type=int, default=None, help="OpenVINO infer requests (default: the plugin's optimum)")
    p.add_argument("--threads", type=int, default=None,
                   help="inference threads: OpenVINO INFERENCE_NUM_THREADS, ONNX Runtime intra-op threads")
    p.add_argument("--perf-counters", action="store_true",
                   help="add a per-layer time table (OpenVINO PERF_COUNT, ONNX Runtime profiler)")
    p.add_argument("--scenario", choices=("singlestream", "multistream", "offline", "server"), default=None,
                   help="run one MLPerf LoadGen scenario instead of the latency/throughput modes")
    p.add_argument("--quick", action="store_true",
                   help="with --scenario: 60 s minimum duration and 64 queries instead of the rules' 600 s")
    p.add_argument("--server-target-qps", type=float, default=None,
                   help="Server scenario: Poisson arrival rate (default: half the warm-up throughput)")
    p.add_argument("--server-latency-ms", type=float, default=100.0,
                   help="Server scenario: latency bound at the 99th percentile (default 100 ms)")
    p.add_argument("--split", default="val", help="with --scenario and --data: the split whose images to use")
    p.add_argument("--loadgen-logs", default=None, metavar="DIR",
                   help="with --scenario: keep LoadGen's own logs in DIR (default: a temporary folder, removed)")
    p.add_argument("--images", default=None, help="folder of images (default: the bundled demo images)")
    p.add_argument("--imgsz", type=int, default=None, help="input size for a .pt checkpoint (default 640)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load a .pt without the restricted-unpickler check: only for a file you trust (it can run code)")
    p.add_argument("--data", default=None, help="data.yaml: add the artifact's mAP50 and mAP50-95 to the report "
                                                 "(with --scenario: the images of --split feed LoadGen)")
    p.add_argument("--json", default=None, help="write the result to this file ('-' for stdout)")
    p.add_argument("--md", default=None, help="write a markdown table to this file")
    p.add_argument("--compare", nargs="+", metavar="RESULT.json", default=None,
                   help="compare earlier --json results side by side instead of benchmarking")
    p.add_argument("--png", default=None, help="with --compare: write a chart (stage latency bars and FPS)")
    p.add_argument("--force", action="store_true",
                   help="with --compare: compare results made in different environments (CPU, GPU, versions)")
    p.add_argument("--allow-failed", action="store_true",
                   help="load an artifact whose sidecar says it failed its accuracy gate (refused by default)")


def _compare(args) -> int:
    from ..bench.compare import (check_environments, compare_markdown, compare_table, load_results, plot_compare,
                                 write_markdown)
    from ._common import log, say

    results = load_results(args.compare)
    for warning in check_environments(results, force=args.force):
        log(warning)
    say(compare_table(results))
    if args.md:
        write_markdown(args.md, compare_markdown(results))
        log(f"wrote {args.md}")
    if args.png:
        plot_compare(results, args.png)
        log(f"wrote {args.png}")
    return 0


def run(args):
    from ..errors import EdgekitError
    from ..outputs import artifact_inputs, check_output_file, check_outputs, data_inputs

    inputs = list(args.compare or []) + artifact_inputs(args.artifact) + [args.images] + data_inputs(args.data)
    for flag in ("json", "md", "png"):
        check_output_file(getattr(args, flag), inputs, f"--{flag}")
    if args.loadgen_logs:
        check_outputs(args.loadgen_logs, inputs, what="--loadgen-logs")

    if args.compare:
        if args.artifact:
            raise EdgekitError("give either an ARTIFACT to benchmark or --compare RESULT.json ..., not both")
        return _compare(args)
    if not args.artifact:
        raise EdgekitError("missing ARTIFACT (model.onnx, OpenVINO folder, .engine, .pt) or --compare RESULT.json ...")
    from ..bench.compare import write_markdown
    from ..bench.report import format_table, to_markdown
    from ._common import emit_json, log, say

    if args.target:
        res = _remote(args)
    else:
        res = _scenario(args, log) if args.scenario else _modes(args, log)
    say(format_table(res))
    if res.get("sustained"):
        from ..bench.sustain import sustain_table

        say(sustain_table(res["sustained"]))
    emit_json(res, args.json)
    if args.md:
        write_markdown(args.md, to_markdown(res))
    return 0


def _options(args) -> dict:
    """Engine/backend options from the command line."""
    opts = {"imgsz": args.imgsz} if args.imgsz else {}
    for key in ("allow_failed", "trust_checkpoint"):
        if getattr(args, key):
            opts[key] = True
    for key in ("hint", "nireq", "threads"):
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    return opts


def _positive(args) -> None:
    from ..errors import EdgekitError

    for name in ("nireq", "threads", "streams", "time", "sustain_window"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise EdgekitError(f"--{name} {v}: must be positive")
    if args.warmup_ms < 0:
        raise EdgekitError(f"--warmup-ms {args.warmup_ms}: must be zero or positive")
    if not 0 <= args.throttle_threshold < 10:
        raise EdgekitError(f"--throttle-threshold {args.throttle_threshold}: a fraction, e.g. 0.10 for 10 %")
    if args.sustain and args.scenario:
        raise EdgekitError("--sustain: not with --scenario (LoadGen runs its own duration)")
    if args.sustain_window and args.sustain and args.sustain_window > args.sustain:
        raise EdgekitError(f"--sustain-window {args.sustain_window:g}: longer than --sustain ({args.sustain:g} s)")


def _modes(args, log) -> dict:
    from ..bench.harness import run_bench

    _positive(args)
    min_time = args.time if args.time is not None else (3.0 if args.iters is None else 0.0)
    res = run_bench(args.artifact, device=args.device, backend=args.backend, batches=args.batch, warmup=args.warmup,
                    iters=100 if args.iters is None else args.iters, images=args.images, data=args.data,
                    streams=args.streams, workers=args.workers, log=log, warmup_s=args.warmup_ms / 1e3,
                    min_time_s=min_time, perf_counters=args.perf_counters, **_options(args))
    if args.sustain:
        res["sustained"] = _sustained(args, log)
    return res


def _sustained(args, log) -> dict:
    """The sustained run: a fresh engine, one request at a time for --sustain seconds, in windows."""
    from ..bench.harness import resolve_images
    from ..bench.sustain import run_sustained
    from ..runtime import Engine

    log(f"sustained: {args.sustain:g} s, batch {args.batch[0]}, one request at a time")
    engine = Engine(args.artifact, device=args.device, backend=args.backend, **_options(args))
    try:
        return run_sustained(engine, resolve_images(args.images), args.sustain, args.sustain_window,
                             args.throttle_threshold, args.batch[0], log=log)
    finally:
        engine.close()


# options the device's `edgekit bench` gets as given here (defaults included: both sides run the same version)
FORWARD = ("backend", "batch", "streams", "workers", "warmup", "warmup_ms", "iters", "time", "hint", "nireq",
           "threads", "perf_counters", "scenario", "quick", "server_target_qps", "server_latency_ms", "imgsz",
           "trust_checkpoint", "allow_failed", "sustain", "sustain_window", "throttle_threshold")


def _remote(args) -> dict:
    """The same benchmark on an ssh:// target: files sent once, the device's edgekit measures, its JSON comes back."""
    from ..errors import EdgekitError
    from ..target.ssh import cli_args, remote_command, target_for

    target = target_for(args)
    if args.loadgen_logs:
        raise EdgekitError("--loadgen-logs: not available with --target (LoadGen's logs stay on the device)")
    _positive(args)
    return remote_command(target, "bench", args.artifact, cli_args(args, FORWARD), data=args.data, split=args.split,
                          images=args.images)


def _scenario(args, log) -> dict:
    from .._imports import require
    from ..bench.harness import run_scenario_bench
    from ..bench.loadgen import ScenarioConfig

    _positive(args)
    cfg = ScenarioConfig(args.scenario, quick=args.quick, time_s=args.time, server_target_qps=args.server_target_qps,
                         server_latency_ms=args.server_latency_ms, warmup_s=args.warmup_ms / 1e3)
    cfg.check()
    require("mlperf_loadgen", "edgekit bench --scenario (MLPerf LoadGen)")
    return run_scenario_bench(args.artifact, cfg, device=args.device, backend=args.backend, images=args.images,
                              data=args.data, split=args.split, streams=args.streams, log=log,
                              log_dir=args.loadgen_logs, perf_counters=args.perf_counters, **_options(args))
