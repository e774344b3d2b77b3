NAME = "bench"
HELP = "latency per stage and end to end, throughput per batch, memory, size; or --compare results"
DESCRIPTION = ("Benchmark an artifact on real images: decode, preprocess, infer, postprocess and end-to-end latency "
               "(mean, p50, p90, p99, std), pipelined throughput per batch size with the backend's own concurrency, "
               "cold start, peak memory and model size. Or compare several --json results side by side.")


def _batches(text: str) -> list[int]:
    import argparse

    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected batch sizes like 1,2,4,8, got '{text}'") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be positive integers, got '{text}'")
    return vals


def add_arguments(p):
    p.add_argument("artifact", nargs="?", help="model.onnx, OpenVINO .xml or folder, .engine, or Ultralytics .pt")
    p.add_argument("--device", default="cpu", help="cpu, cuda:0, GPU, NPU (default cpu)")
    p.add_argument("--backend", default=None, help="onnxruntime, openvino, tensorrt, torch (default: from the file type)")
    p.add_argument("--batch", type=_batches, default=[1], help="batch sizes to sweep, e.g. 1,2,4,8 (default 1)")
    p.add_argument("--streams", type=int, default=None,
                   help="concurrent requests in throughput mode (default: the backend's choice)")
    p.add_argument("--workers", type=int, default=2, help="decode+preprocess threads in throughput mode (default 2)")
    p.add_argument("--warmup", type=int, default=10, help="warm-up iterations (default 10)")
    p.add_argument("--iters", type=int, default=100, help="timed iterations (default 100)")
    p.add_argument("--images", default=None, help="folder of images (default: the bundled demo images)")
    p.add_argument("--imgsz", type=int, default=None, help="input size for a .pt checkpoint (default 640)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load a .pt without the restricted-unpickler check: only for a file you trust (it can run code)")
    p.add_argument("--data", default=None, help="data.yaml: add the artifact's mAP50 and mAP50-95 to the report")
    p.add_argument("--json", default=None, help="write the result to this file ('-' for stdout)")
    p.add_argument("--md", default=None, help="write a markdown table to this file")
    p.add_argument("--compare", nargs="+", metavar="RESULT.json", default=None,
                   help="compare earlier --json results side by side instead of benchmarking")
    p.add_argument("--png", default=None, help="with --compare: write a chart (stage latency bars and FPS)")
    p.add_argument("--allow-failed", action="store_true",
                   help="load an artifact whose sidecar says it failed its accuracy gate (refused by default)")


def _compare(args) -> int:
    from ..bench.compare import compare_markdown, compare_table, load_results, plot_compare, write_markdown
    from ._common import log, say

    results = load_results(args.compare)
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

    if args.compare:
        if args.artifact:
            raise EdgekitError("give either an ARTIFACT to benchmark or --compare RESULT.json ..., not both")
        return _compare(args)
    if not args.artifact:
        raise EdgekitError("missing ARTIFACT (model.onnx, OpenVINO folder, .engine, .pt) or --compare RESULT.json ...")
    from ..bench.compare import write_markdown
    from ..bench.harness import run_bench
    from ..bench.report import format_table, to_markdown
    from ._common import emit_json, log, say

    opts = {"imgsz": args.imgsz} if args.imgsz else {}
    if args.allow_failed:
        opts["allow_failed"] = True
    if args.trust_checkpoint:
        opts["trust_checkpoint"] = True
    res = run_bench(args.artifact, device=args.device, backend=args.backend, batches=args.batch, warmup=args.warmup,
                    iters=args.iters, images=args.images, data=args.data, streams=args.streams,
                    workers=args.workers, log=log, **opts)
    say(format_table(res))
    emit_json(res, args.json)
    if args.md:
        write_markdown(args.md, to_markdown(res))
    return 0
