NAME = "serve"
HELP = "serve an artifact over HTTP with the KServe v2 / Triton protocol (micro-batching, /metrics)"
DESCRIPTION = (HELP + ". Endpoints: /v2/health/live, /v2/health/ready, /v2/models/NAME, /v2/models/NAME/config, "
               "/v2/models/NAME/stats, /v2/repository/index, /v2/models/NAME/infer (input IMAGE: encoded images as "
               "BYTES, shape [1] or [n, 1]; or IMAGE_HWC: uint8 BGR, [H, W, 3] or [n, H, W, 3]; outputs BOXES, SCORES, "
               "LABELS in original-image pixels, with a batch dimension when the input had one), "
               "/v2/models/NAME/drift (ok / warn / drift against the profile the artifact carries), /metrics. "
               "Needs: pip install 'edgekit[serve]'.")


def add_arguments(p):
    p.add_argument("artifact", help="model.onnx, OpenVINO .xml or folder, .engine")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on (default 8000)")
    p.add_argument("--name", default=None, help="model name in the URLs (default: the artifact's file or folder name)")
    p.add_argument("--device", default="cpu", help="cpu, cuda:0, GPU, NPU (default cpu)")
    p.add_argument("--backend", default=None, help="onnxruntime, openvino, tensorrt (default: from the file type)")
    p.add_argument("--max-batch", type=int, default=8, help="most images per network call (default 8)")
    p.add_argument("--max-delay-ms", type=float, default=2.0,
                   help="longest wait for a batch to fill after its first image (default 2 ms)")
    p.add_argument("--max-queue", type=int, default=64,
                   help="requests waiting beyond this are answered 503 with Retry-After (default 64)")
    p.add_argument("--workers", type=int, default=1,
                   help="inference threads, each with its own copy of the engine (default 1)")
    p.add_argument("--threads", type=int, default=None, help="backend threads per engine (default: the backend's)")
    from ..runtime.images import MAX_PIXELS  # the one image limit (numpy and OpenCV only)
    from ..serve.app import MAX_BODY_MB

    p.add_argument("--max-body-mb", type=float, default=MAX_BODY_MB,
                   help=f"larger request bodies are answered 413 without being read on (default {MAX_BODY_MB:g})")
    p.add_argument("--max-image-mp", type=float, default=MAX_PIXELS / 1e6,
                   help="images whose header declares more megapixels are answered 413 before decoding "
                        f"(default {MAX_PIXELS / 1e6:g}: the limit of eval, train and Engine)")
    p.add_argument("--allow-failed", action="store_true",
                   help="serve an artifact whose sidecar says it failed its accuracy gate (refused by default)")
    from ..drift.tracker import DEFAULT_WINDOW

    g = p.add_argument_group("drift tracking (against the profile the artifact carries; GET /v2/models/NAME/drift)")
    g.add_argument("--drift-window", type=int, default=DEFAULT_WINDOW, metavar="N",
                   help=f"frames per rolling window (default {DEFAULT_WINDOW})")
    g.add_argument("--no-drift", action="store_true", help="do not track drift")
    g.add_argument("--drift-save", default=None, metavar="DIR",
                   help="save a sampled, capped set of frames from drifted windows here, for labeling or "
                        "'edgekit quantize --calib-from DIR' (off by default; never inside an input)")
    g.add_argument("--drift-save-rate", type=float, default=0.1, metavar="P",
                   help="fraction of the frames of drifted windows that are saved (default 0.1)")
    g.add_argument("--drift-save-max-mb", type=float, default=200.0, metavar="MB",
                   help="saving stops once the folder's saved frames reach this size (default 200)")


def run(args):
    from ..errors import EdgekitError
    from ..serve.server import serve

    for flag, v, lo in (("--max-batch", args.max_batch, 1), ("--max-queue", args.max_queue, 1),
                        ("--workers", args.workers, 1), ("--port", args.port, 0),
                        ("--max-delay-ms", args.max_delay_ms, 0), ("--max-body-mb", args.max_body_mb, 0.001),
                        ("--max-image-mp", args.max_image_mp, 1e-6)):
        if not v >= lo:  # NaN fails too
            raise EdgekitError(f"{flag} must be >= {lo:g}, got {v}")
    if not args.drift_window >= 2:
        raise EdgekitError(f"--drift-window must be >= 2, got {args.drift_window}")
    if not 0 < args.drift_save_rate <= 1:
        raise EdgekitError(f"--drift-save-rate must be in (0, 1], got {args.drift_save_rate}")
    if not args.drift_save_max_mb > 0:
        raise EdgekitError(f"--drift-save-max-mb must be > 0, got {args.drift_save_max_mb}")
    if args.drift_save and args.no_drift:
        raise EdgekitError("--drift-save needs drift tracking: drop --no-drift")
    opts = {"threads": args.threads} if args.threads else {}
    kw = dict(host=args.host, port=args.port, name=args.name, device=args.device, backend=args.backend,
              workers=args.workers, max_batch=args.max_batch, max_delay_ms=args.max_delay_ms,
              max_queue=args.max_queue, allow_failed=args.allow_failed, max_body_mb=args.max_body_mb,
              max_pixels=int(args.max_image_mp * 1e6), drift_window=None if args.no_drift else args.drift_window,
              **opts)
    if not args.drift_save:
        return serve(args.artifact, **kw)
    from ..drift.frames import FrameSaver
    from ..outputs import artifact_inputs, claim_output
    from ._common import log

    with claim_output(args.drift_save, artifact_inputs(args.artifact), command="serve", what="--drift-save"):
        saver = FrameSaver(args.drift_save, rate=args.drift_save_rate, max_mb=args.drift_save_max_mb, log=log)
        return serve(args.artifact, frames=saver, **kw)
