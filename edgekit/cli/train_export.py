NAME = "train-export"
HELP = ("train models x input sizes x strategies, export, quantize, evaluate and benchmark each; report the table and "
        "a recommendation under latency/FPS/budget limits")


RUN_LOG = "train-export.log"  # the full log (edgekit at DEBUG, third-party at INFO), kept in the output folder


def add_arguments(p):
    p.add_argument("--data", default=None, help="data.yaml (default: the bundled vehicles demo set)")
    p.add_argument("--model", default=None, help="pretrained weights (default: the bundled COCO YOLOv8n)")
    p.add_argument("--models", default=None,
                   help="several models, comma-separated: Ultralytics .pt weights or architecture .yaml files")
    p.add_argument("--strategies", default=None,
                   help="comma-separated (default: scratch,head,schedule:0:backbone,1:none,full; the bundled demo: "
                        "head,full); a bare 'schedule' freezes the backbone for the first third of the epochs "
                        "(at least 1), then trains everything")
    p.add_argument("--epochs", type=int, default=3, help="training epochs per trial (default 3)")
    p.add_argument("--imgsz", default=None, help="input sizes, comma-separated (default 256,320)")
    p.add_argument("--batch", type=int, default=16, help="images per training batch (default 16)")
    p.add_argument("--target", default="cpu", help="cpu or cuda:0")
    p.add_argument("--backends", default="openvino", help="openvino,onnxruntime,tensorrt (default openvino; "
                   "the FP32 ONNX on ONNX Runtime is always measured as the reference)")
    p.add_argument("--precisions", default=None,
                   help="fp32,bf16,fp16,int8 (default fp32,bf16,int8; bf16 only where the target runs it)")
    p.add_argument("--max-latency-ms", type=float, default=None,
                   help="hard limit on the end-to-end p50 latency (batch 1) on the target: rows over it are never "
                        "recommended")
    p.add_argument("--min-fps", type=float, default=None, help="hard limit on end-to-end FPS")
    p.add_argument("--max-map-drop", type=float, default=0.5, help="mAP50-95 points (0.5 = half a point)")
    p.add_argument("--max-class-drop", type=float, default=3.0,
                   help="the INT8 gate also fails when a class with >= 20 val boxes loses more AP50-95 points than "
                        "this (default 3.0)")
    p.add_argument("--budget-usd", type=float, default=None, help="hard limit on a row's training cost")
    p.add_argument("--budget-hours", type=float, default=None, help="hard limit on a row's training wall time")
    p.add_argument("--gpu-hour-usd", type=float, default=2.0, help="price of one GPU-hour for cost_usd (default 2.0)")
    p.add_argument("--search", choices=("grid", "halving"), default="grid",
                   help="grid: train every trial fully; halving: successive halving over epochs (rungs 1, 3, 9 for "
                        "--epochs 9), keeping the best third of each model x imgsz group at each rung")
    p.add_argument("--calib-size", type=int, default=300,
                   help="INT8 calibration images (default 300, capped at the train split)")
    p.add_argument("--bench-iters", type=int, default=30, help="timed iterations per bench round (default 30)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load a .pt without the restricted-unpickler check: only for a file you trust (it can run code)")
    p.add_argument("-o", "--output", default="runs/train-export",
                   help="run folder: artifacts, stage records, report (default runs/train-export)")
    p.add_argument("--resume", action="store_true",
                   help="skip stages already finished with the same inputs (by content) and an intact output")
    p.add_argument("--retry-failed", action="store_true",
                   help="with --resume: build again the artifacts that failed their accuracy gate (skipped otherwise)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: every task in this process (default); ray: trials' stages as Ray tasks on a cluster "
                        "(pip install 'edgekit[ray]')")
    p.add_argument("--ray-address", default=None,
                   help="the Ray cluster to join (host:port or 'auto'); default: start a one-node Ray here")
    p.add_argument("--bench-resource", default=None,
                   help="Ray custom resource that marks the target device's node (e.g. jetson0): bench tasks run "
                        "only there, one at a time; default: the node this command runs on")
    p.add_argument("--storage", default=None,
                   help="with --executor ray: where artifacts and stage records go, seen by every node: a shared "
                        "folder or a pyarrow.fs URI (s3://bucket/run, gs://, hdfs://, file://); default: -o. The "
                        "report is written to -o")
    p.add_argument("--task-cpus", type=float, default=1.0,
                   help="with --executor ray: CPUs each train/export task reserves (Ray sets its thread count)")


def run(args):
    from pathlib import Path

    from .._log import log_file
    from ..assets import demo_data, demo_weights
    from ..errors import EdgekitError
    from ..pipeline import DEFAULT_IMGSZ, DEFAULT_STRATEGIES, DEMO_STRATEGIES, Pipeline, split_list, split_strategies
    from ..report import render_table
    from ._common import log, say

    if args.model and args.models:
        raise EdgekitError("--model and --models: give one of them (--models A,B includes the single-model case)")
    models = split_list(args.models, "--models") if args.models else [args.model or str(demo_weights())]
    imgsz = split_list(args.imgsz or DEFAULT_IMGSZ, "--imgsz", int)
    if any(z < 32 or z % 32 for z in imgsz):
        raise EdgekitError(f"--imgsz: {args.imgsz}: every size must be a positive multiple of 32")
    demo = args.data is None
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    known = backend_names()
    bad = next((b for b in backends if b not in known), None) if backends else ""
    if bad is not None:
        raise EdgekitError(f"--backends: '{bad or args.backends}' is not one of {', '.join(known)}")
    executor, storage, out = sweep_place(args)
    strategies = args.strategies or (DEMO_STRATEGIES if demo else DEFAULT_STRATEGIES)
    data = Path(args.data) if args.data else demo_data()
    pipe = Pipeline(out=out, data=data.absolute() if args.executor == "ray" else data,
                    model=Path(models[0]), models=models, strategies=split_strategies(strategies),
                    epochs=args.epochs, imgsz=imgsz, batch=args.batch, target=args.target,
                    backends=backends,
                    precisions=[p.strip() for p in args.precisions.split(",") if p.strip()] if args.precisions
                    else None,
                    max_map_drop=args.max_map_drop, max_class_drop=args.max_class_drop, min_fps=args.min_fps,
                    max_latency_ms=args.max_latency_ms, budget_usd=args.budget_usd, budget_hours=args.budget_hours,
                    gpu_hour_usd=args.gpu_hour_usd, calib_size=args.calib_size, bench_iters=args.bench_iters,
                    search=args.search, seed=args.seed, resume=args.resume, retry_failed=args.retry_failed, log=log,
                    trust_checkpoint=args.trust_checkpoint, executor=executor, storage=storage,
                    report_dir=Path(args.output))
    try:
        with pipe.claim(), log_file(Path(args.output) / RUN_LOG):  # the full log, once the folder is ours
            doc = pipe.run()
    finally:
        executor.close()
    say(render_table(doc["rows"]))
    say()
    say(doc["recommendation"]["why"])
    out = Path(args.output)
    say(f"\nwrote {out / 'report.md'}, {out / 'report.json'}, {out / 'pareto.png'}")
    return 0


def backend_names() -> list[str]:
    """The registered backends (the built-in ones, and any a plugin registered)."""
    from ..runtime.backends import BACKENDS

    return sorted(BACKENDS)


def sweep_place(args):
    """(executor, storage or None, run folder) from --executor, --ray-address, --bench-resource, --storage."""
    from pathlib import Path

    from ..errors import EdgekitError
    from ..sweep.executor import make_executor

    if args.executor == "local":
        if args.storage:
            raise EdgekitError("--storage: needs --executor ray (the local executor writes to -o)")
        return make_executor("local", args.ray_address, args.bench_resource), None, Path(args.output)
    from ..sweep.storage import Storage

    storage = Storage(args.storage) if args.storage else None
    out = storage.root if storage else Path(args.output).absolute()  # Ray workers do not share our cwd
    gpu = str(args.target).startswith("cuda")
    return (make_executor("ray", args.ray_address, args.bench_resource, gpu=gpu, task_cpus=args.task_cpus,
                          verbose=bool(getattr(args, "verbose", False))), storage, out)
