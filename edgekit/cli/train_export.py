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
    p.add_argument("--target", default="cpu",
                   help="cpu, cuda:0, or ssh://user@host[:port]/cpu: train here, eval and bench each row on that "
                        "device, which runs its own runtime-only edgekit (known_hosts is checked)")
    p.add_argument("--backends", default="openvino", help="openvino,onnxruntime,tensorrt,ncnn,litert,executorch or a "
                   "plugin's (default openvino; the FP32 ONNX on ONNX Runtime is always measured as the reference)")
    p.add_argument("--precisions", default=None,
                   help="fp32,bf16,fp16,int8, or one a backend declares (LiteRT: int8-dynamic) (default fp32,bf16,int8; "
                        "bf16 only where the target runs it)")
    p.add_argument("--max-latency-ms", type=float, default=None,
                   help="hard limit on the end-to-end p50 latency (batch 1) on the target: rows over it are never "
                        "recommended")
    p.add_argument("--min-fps", type=float, default=None, help="hard limit on end-to-end FPS")
    p.add_argument("--max-map-drop", type=float, default=0.5, help="mAP50-95 points (0.5 = half a point)")
    p.add_argument("--max-class-drop", type=float, default=3.0,
                   help="the INT8 gate also fails when a class with >= 20 val boxes loses more AP50-95 points than "
                        "this (default 3.0)")
    p.add_argument("--max-recall-drop", type=float, default=5.0,
                   help="every reduced precision (int8, bf16, fp16) also fails its gate when a class with >= "
                        "--min-class-boxes val boxes loses more than this many recall points at the FP32 artifact's "
                        "threshold (default 5.0)")
    p.add_argument("--min-class-boxes", type=int, default=20,
                   help="classes with fewer val boxes never fail the per-class gates (default 20)")
    p.add_argument("--target-precision", type=float, default=None, metavar="P",
                   help="each row's deployment threshold: the highest recall at precision >= P on val (default: "
                        "max F1)")
    p.add_argument("--target-recall", type=float, default=None, metavar="R",
                   help="each row's deployment threshold: the highest precision at recall >= R on val (default: "
                        "max F1)")
    p.add_argument("--holdout-frac", type=float, default=None, metavar="F",
                   help="data without a test split: set aside this fraction of val (chosen by content, fixed seed) "
                        "as the test set that confirms the pick; selection, gates and thresholds never see it")
    p.add_argument("--budget-usd", type=float, default=None, help="hard limit on a row's training cost")
    p.add_argument("--budget-hours", type=float, default=None, help="hard limit on a row's training wall time")
    p.add_argument("--gpu-hour-usd", type=float, default=2.0, help="price of one GPU-hour for cost_usd (default 2.0)")
    p.add_argument("--search", choices=("grid", "halving"), default="grid",
                   help="grid: train every trial fully; halving: successive halving over epochs (rungs 1, 3, 9 for "
                        "--epochs 9), keeping the best third of each model x imgsz group at each rung")
    p.add_argument("--calib-size", type=int, default=300,
                   help="INT8 calibration images (default 300, capped at the train split)")
    p.add_argument("--bench-iters", type=int, default=30, help="timed iterations per bench round (default 30)")
    p.add_argument("--sustain", type=_duration, default=None, metavar="DURATION",
                   help="also run each distinct graph sustained for DURATION (30s, 10m, 1h) on the target, one request "
                        "at a time: rows get the last window's p50 and a throttling flag, the ranking and "
                        "--max-latency-ms use that p50, and the report says where it reverses the short run's ranking")
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
    from ..assets import demo_data
    from ..sweep.pipeline import Pipeline
    from ..sweep.report import render_table
    from ._common import log, say

    opts = check_args(args)  # every option, before any work: one line naming it, exit 2 (3: a missing package)
    storage, out = sweep_storage(args)
    data = Path(args.data) if args.data else demo_data()
    pipe = Pipeline(out=out, data=data.absolute() if args.executor == "ray" else data,
                    model=Path(opts["models"][0]), models=opts["models"], strategies=opts["strategies"],
                    epochs=args.epochs, imgsz=opts["imgsz"], batch=args.batch, target=opts["target"],
                    remote=opts["remote"], backends=opts["backends"], precisions=opts["precisions"],
                    max_map_drop=args.max_map_drop, max_class_drop=args.max_class_drop, min_fps=args.min_fps,
                    max_recall_drop=args.max_recall_drop, min_class_boxes=args.min_class_boxes,
                    target_precision=args.target_precision, target_recall=args.target_recall,
                    holdout_frac=args.holdout_frac,
                    max_latency_ms=args.max_latency_ms, budget_usd=args.budget_usd, budget_hours=args.budget_hours,
                    gpu_hour_usd=args.gpu_hour_usd, calib_size=args.calib_size, bench_iters=args.bench_iters,
                    sustain=args.sustain,
                    search=args.search, seed=args.seed, resume=args.resume, retry_failed=args.retry_failed, log=log,
                    trust_checkpoint=args.trust_checkpoint, storage=storage, report_dir=Path(args.output))
    pipe.check()  # the models, the packages the run needs, the dataset: before Ray starts or anything is written
    pipe.executor = sweep_executor(args)
    try:
        with pipe.claim(), log_file(Path(args.output) / RUN_LOG):  # the full log, once the folder is ours
            doc = pipe.run()
    finally:
        pipe.executor.close()
    say(render_table(doc["rows"]))
    say()
    say(doc["recommendation"]["why"])
    out = Path(args.output)
    say(f"\nwrote {out / 'report.md'}, {out / 'report.json'}, {out / 'pareto.png'}")
    return 0


def _duration(text: str) -> float:
    from ..bench.sustain import parse_duration

    return parse_duration(text)


def _items(value, option: str, cast=str) -> list:
    """A list option's items (given as 'a,b' or already split by the parser)."""
    from ..sweep.pipeline import split_list

    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
    return split_list(text, option, cast)


def check_args(args) -> dict:
    """Every option of train-export checked before any work; returns the parsed lists (models, imgsz, strategies,
    backends, precisions) and the target."""
    from ..assets import demo_weights
    from ..errors import EdgekitError
    from ..sweep.pipeline import DEFAULT_IMGSZ, DEFAULT_STRATEGIES, DEMO_STRATEGIES, split_strategies
    from ..sweep.variants import check_dependencies, known_precisions
    from ..runtime.backends import get_backend, registered
    from ..train.strategy import parse_strategy
    from . import _checks

    if args.model and args.models:
        raise EdgekitError("--model and --models: give one of them (--models A,B includes the single-model case)")
    model_opt = "--models" if args.models else "--model"
    models = _items(args.models, "--models") if args.models else [args.model or str(demo_weights())]
    imgsz = _items(args.imgsz or DEFAULT_IMGSZ, "--imgsz", int)
    if any(z < 32 or z % 32 for z in imgsz):
        raise EdgekitError(f"--imgsz: {args.imgsz}: every size must be a positive multiple of 32")
    if max(imgsz) > MAX_IMGSZ:
        raise EdgekitError(f"--imgsz: {max(imgsz)}: larger than {MAX_IMGSZ} px")
    _unique("--imgsz", imgsz)
    strategies = split_strategies(args.strategies or (DEMO_STRATEGIES if args.data is None else DEFAULT_STRATEGIES))
    if not strategies:
        raise EdgekitError(f"--strategies: '{args.strategies}': empty list")
    for s in strategies:
        try:
            parse_strategy(s)
        except EdgekitError as e:
            raise EdgekitError(f"--strategies: {e}") from None
    _unique("--strategies", strategies)
    backends = [b.strip() for b in (",".join(args.backends) if isinstance(args.backends, (list, tuple))
                                    else args.backends).split(",") if b.strip()]
    known = backend_names()
    bad = next((b for b in backends if b not in known), None) if backends else ""
    if bad is not None:
        raise EdgekitError(f"--backends: '{bad or args.backends}' is not one of {', '.join(known)}")
    unbuilt = next((b for b in backends if not get_backend(b).makes()), None)
    if unbuilt is not None:
        built = sorted(n for n, c in registered().items() if c.makes())
        raise EdgekitError(f"--backends: {unbuilt} declares no build (Backend.builds), so train-export cannot make its "
                           f"artifacts (it builds those of {', '.join(built)})")
    precisions = _items(args.precisions, "--precisions") if args.precisions else None
    known_p = known_precisions()
    bad = next((p for p in precisions or () if p not in known_p), None)
    if bad is not None:
        raise EdgekitError(f"--precisions: '{bad}' is not one of {', '.join(known_p)}")
    for name, low in (("epochs", 1), ("batch", 1), ("calib_size", 1), ("bench_iters", 1), ("seed", 0)):
        _checks.at_least(f"--{name.replace('_', '-')}", getattr(args, name), low)
    for name, unit in (("max_map_drop", " mAP points"), ("max_class_drop", " AP points"), ("gpu_hour_usd", "")):
        _checks.at_least(f"--{name.replace('_', '-')}", getattr(args, name), 0, unit)
    for name, unit in (("max_latency_ms", " ms"), ("min_fps", " FPS"), ("budget_usd", ""), ("budget_hours", " h"),
                       ("task_cpus", " CPUs")):
        _checks.above(f"--{name.replace('_', '-')}", getattr(args, name), 0, unit)
    check_threshold_options(args)
    if args.retry_failed and not args.resume:
        raise EdgekitError("--retry-failed: needs --resume (a new run builds every artifact anyway)")
    if args.executor != "ray" and args.storage:
        raise EdgekitError("--storage: needs --executor ray (the local executor writes to -o)")
    if args.executor != "ray" and (args.ray_address or args.bench_resource):
        raise EdgekitError("--ray-address/--bench-resource: these need --executor ray")
    kinds = {k for b in backend_names() for k in get_backend(b).device_kinds}
    remote, device = _remote_target(args)
    target = _checks.device("--target", device, kinds)
    for b in backends:
        if not get_backend(b).runs_on(target):
            raise EdgekitError(f"--backends: {b} does not run on --target {target} (it runs on "
                               f"{', '.join(get_backend(b).device_kinds)})")
    if args.data is not None:
        _checks.readable_file("--data", args.data)
    for m in models:
        _check_model(model_opt, m)
    check_dependencies(target, backends, precisions)  # exit 3, naming the pip extra
    offered = {b: get_backend(b).offers(target, True) for b in backends}
    for p in precisions or ():
        if not any(p in o for o in offered.values()):
            raise EdgekitError(f"--precisions: {p} is built by none of --backends {','.join(backends)} on {target} ("
                               + "; ".join(f"{b}: {', '.join(o) or 'none'}" for b, o in offered.items()) + ")")
    return {"models": models, "imgsz": imgsz, "strategies": strategies, "backends": backends,
            "precisions": precisions, "target": target, "remote": remote}


def check_threshold_options(args) -> None:
    """--max-recall-drop, --min-class-boxes, --target-precision/--target-recall (as quantize says them) and
    --holdout-frac."""
    from ..errors import EdgekitError
    from ..eval.threshold import check_gate_options

    check_gate_options(args.max_recall_drop, args.min_class_boxes, args.target_precision, args.target_recall)
    if args.holdout_frac is not None and not 0 < args.holdout_frac < 1:
        raise EdgekitError(f"--holdout-frac must be a fraction in (0, 1), got {args.holdout_frac:g}")


def _remote_target(args) -> tuple[str | None, str]:
    """(the ssh:// URL or None, the device the artifacts are built for here)."""
    from ..errors import EdgekitError
    from ..target import parse_target

    if not str(args.target).startswith("ssh://"):
        return None, args.target
    dev = parse_target(args.target)
    if dev.device.lower() != "cpu":
        raise EdgekitError(f"--target {args.target}: over SSH, train-export measures on the device's CPU (.../cpu); "
                           f"artifacts for its accelerator are built on the device itself, not here")
    if args.executor == "ray":
        raise EdgekitError(f"--target {args.target}: eval and bench go over SSH from this host, not from Ray tasks: "
                           f"drop --executor ray (or make the device a Ray node with --bench-resource)")
    return dev.url, "cpu"


MAX_IMGSZ = 4096


def _unique(option: str, items: list) -> None:
    from ..errors import EdgekitError

    dup = next((x for i, x in enumerate(items) if x in items[:i]), None)
    if dup is not None:
        raise EdgekitError(f"{option}: {dup} is given twice")


def _check_model(option: str, model: str) -> None:
    """A model file that exists and can be read, or an Ultralytics architecture name (yolov8n.yaml)."""
    from pathlib import Path

    from ..errors import EdgekitError
    from . import _checks

    p = Path(model)
    if model.startswith("yolo_nas"):
        return  # the pipeline says where YOLO-NAS goes instead
    if p.suffix.lower() not in (".pt", ".yaml", ".yml"):
        raise EdgekitError(f"{option}: {model}: expected Ultralytics weights (.pt) or an architecture yaml")
    if p.exists() or p.suffix.lower() == ".pt" or p.parent != Path("."):
        _checks.readable_file(option, p)
        return
    from .._imports import available

    if available("ultralytics"):  # else the dependency check names the extra first
        from ultralytics.nn.tasks import yaml_model_load

        try:
            yaml_model_load(model)
        except Exception:  # noqa: BLE001 - Ultralytics raises several kinds for an unknown name
            raise EdgekitError(f"{option}: {model}: no such file, nor an Ultralytics architecture name such as "
                               f"yolov8n.yaml") from None


def backend_names() -> list[str]:
    """The backends that load here: the built-in ones and any a plugin registered (entry points included), as bench
    and Engine see them; a plugin that fails to import is left out with one warning."""
    from ..runtime.backends import registered

    return sorted(registered())


def sweep_storage(args):
    """(storage or None, run folder) from --executor and --storage (opens a URI's filesystem; starts nothing)."""
    from pathlib import Path

    if args.executor == "local":
        return None, Path(args.output)
    from ..sweep.storage import Storage

    storage = Storage(args.storage) if args.storage else None
    return storage, storage.root if storage else Path(args.output).absolute()  # Ray workers do not share our cwd


def sweep_executor(args):
    """The executor --executor, --ray-address and --bench-resource ask for (a Ray one starts or joins Ray)."""
    from ..sweep.executor import make_executor

    if args.executor == "local":
        return make_executor("local", args.ray_address, args.bench_resource)
    gpu = str(args.target).startswith("cuda")
    return make_executor("ray", args.ray_address, args.bench_resource, gpu=gpu, task_cpus=args.task_cpus,
                         verbose=bool(getattr(args, "verbose", False)))
