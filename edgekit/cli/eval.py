NAME = "eval"
HELP = "mAP50 and mAP50-95 of an artifact, run through edgekit's runtime"


def add_arguments(p):
    p.add_argument("artifact", help="model.onnx, OpenVINO .xml or folder, .engine, or Ultralytics .pt")
    p.add_argument("--data", required=True, help="Ultralytics data.yaml or COCO .json")
    p.add_argument("--split", default="val", help="dataset split to evaluate (default val)")
    p.add_argument("--device", default="cpu", help="cpu, cuda:0, GPU, NPU (default cpu)")
    p.add_argument("--target", default=None, metavar="ssh://user@host[:port][/device]",
                   help="evaluate on a device over SSH that runs its own runtime-only edgekit (the split's images "
                        "and labels are sent once; the device part replaces --device; known_hosts is checked)")
    p.add_argument("--backend", default=None, help="onnxruntime, openvino, tensorrt (default: from the file type)")
    p.add_argument("--batch", type=int, default=1, help="images per network call (default 1)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--skip-bad", action="store_true", help="report bad samples and go on")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load a .pt without the restricted-unpickler check: only for a file you trust (it can run code)")
    p.add_argument("--json", default=None, help="write the result to this file ('-' for stdout)")
    p.add_argument("--matches", default=None, metavar="FILE.npz",
                   help="also save the per-image matches (for paired comparisons between artifacts)")
    p.add_argument("--allow-failed", action="store_true",
                   help="load an artifact whose sidecar says it failed its accuracy gate (refused by default)")


def run(args):
    from ..outputs import artifact_inputs, check_output_file, data_inputs
    from ._common import emit_json, log, say

    inputs = artifact_inputs(args.artifact) + data_inputs(args.data)
    check_output_file(args.json, inputs)
    check_output_file(args.matches, inputs, "--matches")

    if args.target:
        r = _remote(args)
    else:
        r = _local(args)
    for s in r["skipped"]:
        log(f"skipped: {s}")
    where = f" on {r['target']}" if r.get("target") else ""
    say(f"{r['artifact']}  [{r['backend']} {r['device']}{where}]  {args.split}: {r['images']} images, "
        f"{r['boxes']} boxes")
    say(f"mAP50 {r['map50']:.4f}   mAP50-95 {r['map50_95']:.4f}   ({r['evaluator']}, {r['wall_s']:.1f} s)")
    emit_json(r, args.json)
    return 0


def _remote(args) -> dict:
    """The same evaluation on an ssh:// target, scored by the device's edgekit."""
    from ..target.ssh import cli_args, remote_eval, target_for

    target = target_for(args)
    argv = cli_args(args, ("backend", "batch", "limit", "skip_bad", "trust_checkpoint", "allow_failed"))
    return remote_eval(target.url, args.artifact, args.data, argv, split=args.split, matches=args.matches,
                       skip_bad=args.skip_bad)


def _local(args) -> dict:
    from ..eval import evaluate

    engine = None
    if args.trust_checkpoint or args.allow_failed:  # else evaluate() builds its Engine, checking any .pt
        from ..runtime import Engine

        engine = Engine(args.artifact, device=args.device, backend=args.backend,
                        trust_checkpoint=args.trust_checkpoint, allow_failed=args.allow_failed)
    try:
        r = evaluate(args.artifact, args.data, split=args.split, device=args.device, backend=args.backend,
                     batch=args.batch, limit=args.limit, skip_bad=args.skip_bad, engine=engine,
                     matches_path=args.matches)
    finally:
        if engine is not None:
            engine.close()
    return r
