NAME = "monitor"
HELP = "drift of a folder of frames or a video against the profile the artifact carries (offline serve tracking)"
DESCRIPTION = (HELP + ". Every frame runs through the artifact as served; after each frame the last N frames are "
               "scored against the training data's profile (Fréchet distance of pooled backbone features, PSI of "
               "confidences and class shares, image statistics) and judged ok / warn / drift. Writes a plot over "
               "time (PNG) and, with --json, every verdict and the frames where it changed.")


def add_arguments(p):
    from ..drift.tracker import DEFAULT_WINDOW

    p.add_argument("artifact", help="model.onnx, OpenVINO .xml or folder, ... with a drift profile in its sidecar")
    p.add_argument("frames", help="a folder of frames (read in name order) or a video file")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW, metavar="N",
                   help=f"frames per rolling window (default {DEFAULT_WINDOW}, as serve)")
    p.add_argument("--plot", default="drift.png", help="PNG of the scores over time (default drift.png; '' for none)")
    p.add_argument("--json", default=None, help="write the result to this file ('-' for stdout)")
    p.add_argument("--device", default="cpu", help="cpu, cuda:0, GPU, ... (default cpu)")
    p.add_argument("--backend", default=None, help="runtime backend (default: from the file type)")


def run(args):
    from ..drift.monitor import monitor, plot
    from ..errors import EdgekitError
    from ..outputs import artifact_inputs, check_output_file
    from ..runtime import Engine
    from ._common import emit_json, log

    if args.window < 2:
        raise EdgekitError(f"--window must be >= 2, got {args.window}")
    inputs = [*artifact_inputs(args.artifact), args.frames]
    check_output_file(args.json, inputs)
    check_output_file(args.plot or None, inputs, "--plot")
    if args.plot:
        from .._imports import require

        require("matplotlib", "the monitor plot (or --plot '')")  # missing: said before any frame is read
    with Engine(args.artifact, device=args.device, backend=args.backend) as eng:
        res = monitor(eng, args.frames, args.window, log=log)
    if args.plot:
        log(f"wrote {plot(res, args.plot)}")
    emit_json(res, args.json)
    return 0
